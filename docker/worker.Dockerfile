# syntax=docker/dockerfile:1
# The GPU worker image: the Celery worker with a CUDA build of PyTorch.
#
# Built from the repository root:  docker build -f docker/worker.Dockerfile -t adacs/worker .
#
# The base is NVIDIA's official CUDA image. Its `base` flavour is enough: PyTorch's CUDA wheels
# carry their own CUDA runtime, cuBLAS and cuDNN, so the `runtime` flavour would only add a
# second copy of those libraries. What the base image does bring is what the NVIDIA container
# toolkit reads (NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES, NVIDIA_REQUIRE_CUDA: a host
# driver older than the image's CUDA is refused at start with a clear message) and cuda-compat.
# CUDA_IMAGE and TORCH_CUDA go together: an older host driver needs both lowered, e.g.
#   --build-arg CUDA_IMAGE=nvidia/cuda:12.6.3-base-ubuntu24.04 --build-arg TORCH_CUDA=cu126
#
# TORCH_CUDA=cpu builds the same image without CUDA, on any Debian/Ubuntu base, e.g.
#   --build-arg CUDA_IMAGE=python:3.12-slim --build-arg TORCH_CUDA=cpu
# so that a machine with no GPU and no access to NVIDIA's images (CI: docker/smoke-test.sh) still
# builds and runs this Dockerfile; the build's last check then asserts a CPU build of torch instead.
#
# The install otherwise mirrors CI's (.ci/install): pin torch first, then install the project.

ARG CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
# TORCH_VERSION must equal the pin in .ci/install (tests/test_docker.py checks it).
ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu130
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
# The CUDA base has no Python: Ubuntu's. A base that has one with venv (python:*) keeps its own.
RUN if ! python3 -m venv --help >/dev/null 2>&1; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --upgrade pip \
 && pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}"
COPY pyproject.toml README.md /src/
COPY models /src/models
COPY service /src/service
COPY worker /src/worker
# The build must match the argument: CUDA for cuXYZ, none for cpu.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install /src \
 && python -c "import sys, torch; cpu = sys.argv[1] == 'cpu'; \
assert (torch.version.cuda is None) == cpu, f'torch {torch.__version__} does not match TORCH_CUDA={sys.argv[1]}'" \
    "${TORCH_CUDA}"

FROM ${CUDA_IMAGE}
LABEL org.opencontainers.image.title="adacs-worker" \
      org.opencontainers.image.licenses="Apache-2.0"
# The venv's interpreter is a link to this python3, the same as in the build stage.
RUN if ! command -v python3 >/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 \
      && rm -rf /var/lib/apt/lists/*; \
    fi
# Same uid/gid as the API image: both write the shared artifact volume.
RUN groupadd --system --gid 10001 adacs \
 && useradd --system --uid 10001 --gid adacs --home-dir /var/lib/adacs --shell /usr/sbin/nologin adacs \
 && install -d -o adacs -g adacs /var/lib/adacs /var/lib/adacs/artifacts
COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/adacs-entrypoint
COPY --chmod=0755 docker/healthcheck.py /usr/local/bin/adacs-healthcheck
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    ADACS_DATA_DIR=/var/lib/adacs \
    ADACS_ARTIFACT_DIR=/var/lib/adacs/artifacts
WORKDIR /app
USER adacs:adacs
# Healthy = this node (the entrypoint names it celery@HOSTNAME) answers through the broker and
# consumes every queue of WORKER_QUEUES (docker/healthcheck.py).
HEALTHCHECK --interval=30s --timeout=20s --start-period=60s --retries=3 \
    CMD ["adacs-healthcheck", "worker"]
ENTRYPOINT ["adacs-entrypoint"]
CMD ["worker"]
