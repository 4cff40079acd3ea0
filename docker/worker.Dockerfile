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
# The install otherwise mirrors CI's (.ci/install): pin torch first, then install the project.

ARG CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
# TORCH_VERSION must equal the pin in .ci/install (tests/test_docker.py checks it).
ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu130
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --upgrade pip \
 && pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}"
COPY pyproject.toml README.md /src/
COPY models /src/models
COPY service /src/service
COPY worker /src/worker
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install /src \
 && python -c "import torch; assert torch.version.cuda, 'not a CUDA build: ' + torch.__version__"

FROM ${CUDA_IMAGE}
LABEL org.opencontainers.image.title="adacs-worker" \
      org.opencontainers.image.licenses="Apache-2.0"
# The venv's interpreter is a link to this python3, the same as in the build stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/*
# Same uid/gid as the API image: both write the shared artifact volume.
RUN groupadd --system --gid 10001 adacs \
 && useradd --system --uid 10001 --gid adacs --home-dir /var/lib/adacs --shell /usr/sbin/nologin adacs \
 && install -d -o adacs -g adacs /var/lib/adacs /var/lib/adacs/artifacts
COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/adacs-entrypoint
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    ADACS_DATA_DIR=/var/lib/adacs \
    ADACS_ARTIFACT_DIR=/var/lib/adacs/artifacts
WORKDIR /app
USER adacs:adacs
# Alive = this node answers a ping through the broker (the entrypoint names it celery@HOSTNAME).
HEALTHCHECK --interval=60s --timeout=30s --start-period=60s --retries=3 \
    CMD celery --app worker.celery_app:app inspect ping --destination "celery@$HOSTNAME" --timeout 10 || exit 1
ENTRYPOINT ["adacs-entrypoint"]
CMD ["worker"]
