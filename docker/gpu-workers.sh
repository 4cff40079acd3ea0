#!/usr/bin/env bash
# One Celery worker per GPU: print a compose file that adds worker-gpu1 ... worker-gpu(N-1) beside
# docker-compose.yml's `worker` (GPU 0). Each is the same service pinned to its own GPU
# (device_ids), which it sees as device 0, with one process (concurrency 1, prefetch 1: a worker
# reserves one job at a time). Usage, on an 8-GPU host, from the repository root:
#
#   docker/gpu-workers.sh 8 > compose.gpus.yml
#   docker compose -f docker-compose.yml -f compose.gpus.yml --profile gpu up -d
#
# `nvidia-smi -L` lists the GPUs; give their indices (or UUIDs) to use a subset:
#   docker/gpu-workers.sh 0 2 5      (three workers: GPUs 0, 2 and 5)
set -euo pipefail

usage() { echo "usage: $0 N | GPU_ID..." >&2; exit 2; }
[ "$#" -ge 1 ] || usage
if [ "$#" -eq 1 ] && [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ]; then
  ids=$(seq 0 $(($1 - 1)))  # a count: GPUs 0 .. N-1
else
  ids="$*"
fi

first=1
echo "# Written by docker/gpu-workers.sh $*: one worker per GPU (docker-compose.yml's worker is the first)."
echo "services:"
for id in $ids; do
  [[ $id =~ ^[A-Za-z0-9-]+$ ]] || { echo "not a GPU index or UUID: $id" >&2; exit 2; }
  if [ "$first" = 1 ]; then
    service=worker  # the base file's own service, re-pinned when the first GPU is not 0
    first=0
  else
    service=worker-gpu$id
  fi
  cat <<YAML
  $service:
YAML
  if [ "$service" != worker ]; then
    cat <<YAML
    extends:
      file: docker-compose.yml
      service: worker
YAML
  fi
  cat <<YAML
    deploy:
      resources:
        reservations:
          devices: !override
            - driver: nvidia
              device_ids: ["$id"]
              capabilities: [gpu]
YAML
done
