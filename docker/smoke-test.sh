#!/usr/bin/env bash
# The deployment, built and run end to end: what an operator gets from `docker compose up`.
#
#   bash docker/smoke-test.sh          (from anywhere; needs Docker with Compose v2, curl, network)
#
# Steps, on a compose project of its own (adacs-smoke: its own containers, network and volumes,
# removed at the end with `down -v`; your `.env` is not read):
#   1. build the API image, the proxy, and the GPU worker's Dockerfile with TORCH_CUDA=cpu (the
#      CUDA build itself needs NVIDIA's image: see the README);
#   2. create the first API key on a fresh volume (`run --rm api keys create`, before any `up`);
#   3. `up` the CPU and TLS profiles with two worker-cpu replicas, wait for every health check;
#      check that settings given in the env file reached the containers;
#   4. register a NIfTI pair with the starter model and check every output; track a phantom cine
#      (4-D masks, EF within 2 points of the truth); send four more pairs and
#      check both replicas ran some; read a job through the HTTPS proxy (its URL says https);
#   5. train a tiny model, `docker kill` its worker container mid-training, check that the job
#      resumed from its checkpoint on the other replica, ran every epoch, and register with it;
#   6. stop the workers, queue registrations (/readyz answers 503 naming the queue), restart
#      the Redis container, start the workers: every queued job succeeds;
#   7. `down -v`.
# Exit status 0 when all passed; the last line is a one-line summary either way. SMOKE_KEEP=1
# keeps the stack up afterwards; SMOKE_API_PORT, SMOKE_TLS_PORT and SMOKE_FLOWER_PORT move its ports.
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT=${SMOKE_PROJECT:-adacs-smoke}
API_PORT=${SMOKE_API_PORT:-18000}
TLS_PORT=${SMOKE_TLS_PORT:-18443}
EPOCHS=24 STEPS=10  # the training: 240 updates of 2 pairs of 32 px, long enough to be killed mid-way
T0=$SECONDS
STEP=start
NOTES=()
WORK=$(mktemp -d)
ENV_FILE=$WORK/smoke.env
KEY=

say() { printf '[smoke %4ds] %s\n' $((SECONDS - T0)) "$*" >&2; }
step() { STEP=$1; say "$1"; }
note() { NOTES+=("$1"); say "ok: $1"; }
die() { echo "$*" >"$WORK/failure"; say "FAIL: $*"; exit 1; }
compose() { docker compose --project-name "$PROJECT" --env-file "$ENV_FILE" --profile cpu --profile tls "$@"; }
sql() { compose exec -T postgres psql -U adacs -d adacs -tAc "$1"; }

client() {
  # docker/smoke_client.py, run by the API container's Python: the host needs no Python of its own.
  if ! compose exec -T -e SMOKE_KEY="$KEY" api python - "$@" <docker/smoke_client.py 2>"$WORK/client.err"; then
    cat "$WORK/client.err" >&2
    tail -n 1 "$WORK/client.err" >"$WORK/failure"
    return 1
  fi
}

finish() {
  local rc=$?
  trap - EXIT
  if [ "$rc" -ne 0 ]; then
    { compose ps -a; compose logs --no-color --tail 30; } >&2 2>&1 || true
  fi
  if [ "${SMOKE_KEEP:-0}" != 1 ]; then
    compose --profile gpu down -v --remove-orphans >/dev/null 2>&1 || say "WARNING: down -v failed"
  fi
  local failure
  failure=$(cat "$WORK/failure" 2>/dev/null || true)
  rm -rf "$WORK"
  if [ "$rc" -eq 0 ]; then
    echo "smoke-test: PASS in $((SECONDS - T0)) s: $(IFS=';'; echo "${NOTES[*]}" | sed 's/;/; /g')."
  else
    echo "smoke-test: FAIL at '$STEP' after $((SECONDS - T0)) s (exit $rc)${failure:+: $failure}"
  fi
  exit "$rc"
}
trap finish EXIT

wait_healthy() {  # wait_healthy SERVICE TIMEOUT_S: every container of SERVICE reports healthy
  local deadline=$((SECONDS + $2)) states
  while :; do
    states=$(compose ps --all --format '{{.Health}}' "$1")
    if [ -n "$states" ] && ! grep -qv '^healthy$' <<<"$states"; then return 0; fi
    [ "$SECONDS" -lt "$deadline" ] || die "$1 not healthy after $2 s: $(tr '\n' ' ' <<<"$states")"
    sleep 2
  done
}

# --- preflight and the stack's settings -------------------------------------------------------
step preflight
command -v curl >/dev/null || die "curl is needed"
docker compose version >/dev/null || die "Docker Compose v2 ('docker compose') is needed"
docker info >/dev/null 2>&1 || die "no Docker engine answers"
# Short reaper timings, so that the killed worker's job is re-queued within half a minute; the
# worker-side values prove that an env file's settings reach the containers.
cat >"$ENV_FILE" <<EOF
IMAGE_TAG=smoke
API_BIND=127.0.0.1
API_PORT=$API_PORT
FLOWER_PORT=${SMOKE_FLOWER_PORT:-15555}
TLS_BIND=127.0.0.1
TLS_PORT=$TLS_PORT
FORWARDED_ALLOW_IPS=*
INSTALL_STARTER_MODEL=1
ADACS_HEARTBEAT_INTERVAL_S=2
ADACS_HEARTBEAT_STALE_S=20
ADACS_REAPER_INTERVAL_S=5
ADACS_QUEUED_RESEND_S=30
ADACS_WORKER_TORCH_THREADS=1
EOF
compose --profile gpu down -v --remove-orphans >/dev/null 2>&1 || true  # a previous run's leftovers

# --- 1. build ---------------------------------------------------------------------------------
step build
start=$SECONDS
compose build api proxy >"$WORK/build.log" 2>&1 || { tail -n 30 "$WORK/build.log" >&2; die "building api, proxy failed"; }
# The GPU worker's Dockerfile on a CPU base: the image CI can build (CUDA_IMAGE and TORCH_CUDA are
# its build arguments); the build itself asserts that torch matches TORCH_CUDA.
CUDA_IMAGE=${SMOKE_WORKER_BASE:-${PYTHON_IMAGE:-python:3.12-slim}} TORCH_CUDA=cpu \
  compose --profile gpu build worker >"$WORK/build-worker.log" 2>&1 \
  || { tail -n 30 "$WORK/build-worker.log" >&2; die "building the worker image with TORCH_CUDA=cpu failed"; }
docker run --rm --entrypoint python adacs/worker:smoke -c \
  "import torch, worker.tasks.training; assert torch.version.cuda is None" \
  || die "the worker image (TORCH_CUDA=cpu) cannot import its tasks"
note "built api, proxy and worker (TORCH_CUDA=cpu) in $((SECONDS - start)) s"

# --- 2. the first key, before the first `up` ---------------------------------------------------
step first-key
KEY=$(compose run --rm -T api keys create --name smoke --scope admin 2>"$WORK/key.err" | tail -n 1) \
  || { cat "$WORK/key.err" >&2; die "the first-key command failed on a fresh volume"; }
[[ $KEY =~ ^[A-Za-z0-9_.-]{20,}$ ]] || die "keys create printed no key: '$KEY'"
note "first API key created on a fresh volume"

# --- 3. up, healthy ---------------------------------------------------------------------------
step up
start=$SECONDS
compose up -d --scale worker-cpu=2 >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; die "up failed"; }
for service in redis postgres api worker-cpu beat flower proxy; do wait_healthy "$service" 420; done
note "redis, postgres, api, 2 worker-cpu, beat, flower, proxy healthy in $((SECONDS - start)) s"
[ "$(compose exec -T --index 2 worker-cpu printenv ADACS_HEARTBEAT_STALE_S)" = 20 ] \
  || die "ADACS_HEARTBEAT_STALE_S from the env file did not reach worker-cpu"
[ "$(compose exec -T api printenv INSTALL_STARTER_MODEL)" = 1 ] || die "INSTALL_STARTER_MODEL did not reach api"
curl -fsS "http://127.0.0.1:$API_PORT/readyz" >/dev/null || die "/readyz on 127.0.0.1:$API_PORT is not 200"
curl -fsSk "https://127.0.0.1:$TLS_PORT/docs" | grep -q swagger-ui || die "/docs through the proxy failed"

# --- 4. register --------------------------------------------------------------------------------
step register
client data >/dev/null
result=$(client register)
note "registered a NIfTI pair with the starter model ($result), outputs checked"
result=$(client cine)
note "tracked a 6-frame phantom cine from its ED mask: $result"
mapfile -t ids < <(client queue 4)
client wait "${ids[@]}" >/dev/null
list=$(printf "'%s'," "${ids[@]}")
hosts=$(sql "SELECT count(DISTINCT split_part(worker, ':', 1)) FROM jobs WHERE id IN (${list%,})")
[ "$hosts" -ge 2 ] || die "4 registrations all ran on one worker-cpu replica"
note "4 more registrations spread over $hosts worker-cpu replicas"
# Through the proxy, a job and a download by the job's own (relative) URL.
url=$(curl -fsSk -H "X-API-Key: $KEY" "https://127.0.0.1:$TLS_PORT/v1/registrations/${ids[0]}" \
  | grep -o '"displacement":{[^}]*"url":"[^"]*"' | sed 's/.*"url":"//; s/"$//') \
  || die "through the proxy, GET /v1/registrations/${ids[0]} failed"
[ -n "$url" ] || die "through the proxy, registration ${ids[0]} lists no displacement"
curl -fsSk -H "X-API-Key: $KEY" -o "$WORK/displacement.nii.gz" "https://127.0.0.1:$TLS_PORT$url" \
  || die "through the proxy, downloading $url failed"
note "HTTPS proxy (profile tls) serves the API and its downloads"

# --- 5. train, kill its worker, resume ------------------------------------------------------------
step train
train_id=$(client train "$EPOCHS" "$STEPS")
client wait-epoch "$train_id" 3 >/dev/null
host=$(sql "SELECT split_part(worker, ':', 1) FROM jobs WHERE id = '$train_id'")
[ -n "$host" ] || die "training $train_id records no worker"
docker kill "$host" >/dev/null || die "docker kill $host (the training's worker container) failed"
say "killed worker container $host mid-training"
trained=$(client wait-train "$train_id" "$EPOCHS")
model=$(sed -n 's/^model=\([^ ]*\).*/\1/p' <<<"$trained")
result=$(client register "$model")
note "training resumed after docker kill of its worker and succeeded ($trained), then registered with it ($result)"

# --- 6. Redis restarted with jobs queued --------------------------------------------------------
step redis-restart
compose stop worker-cpu >/dev/null 2>&1
mapfile -t ids < <(client queue 3)
code=$(curl -s -o "$WORK/readyz.json" -w '%{http_code}' "http://127.0.0.1:$API_PORT/readyz")
[ "$code" = 503 ] && grep -q "no live worker consumes queue 'inference'" "$WORK/readyz.json" \
  || die "with the workers stopped, /readyz answered $code: $(head -c 300 "$WORK/readyz.json")"
compose restart redis >/dev/null 2>&1
wait_healthy redis 120
compose start worker-cpu >/dev/null 2>&1
client wait "${ids[@]}" >/dev/null
note "with the workers stopped /readyz answered 503 naming 'inference'"
note "3 registrations queued while Redis restarted all succeeded"

step down
