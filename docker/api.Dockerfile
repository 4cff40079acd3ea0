# syntax=docker/dockerfile:1
# The API image: FastAPI under uvicorn, CPU only. It also serves the CPU worker (compose profile
# `cpu`), which runs the same code with the `worker` command.
#
# Built from the repository root:  docker build -f docker/api.Dockerfile -t adacs/api .
#
# The install mirrors CI's (.ci/install): pin torch to the CPU build first, then install the
# project, so that the `torch` dependency is already met and no multi-GB CUDA build is pulled.
# One difference: CI installs torch==2.13.0 from a local CPU wheel, which a container build cannot
# see, so here the same version comes from PyTorch's CPU index (--index-url .../whl/cpu).

ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
# Must equal the pin in .ci/install (tests/test_docker.py checks it).
ARG TORCH_VERSION=2.13.0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The pip cache lives in a BuildKit cache mount: rebuilds reuse downloads, layers do not keep them.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --upgrade pip \
 && pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu
# Only what the wheel needs (README.md is the package's long description).
COPY pyproject.toml README.md /src/
COPY models /src/models
COPY service /src/service
COPY worker /src/worker
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install /src \
 && python -c "import torch; assert torch.version.cuda is None, torch.__version__"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="adacs-api" \
      org.opencontainers.image.licenses="Apache-2.0"
# One fixed uid/gid in both images, so both own what they write to the shared artifact volume.
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
# An empty, read-only working directory: uvicorn and celery put the cwd on sys.path.
WORKDIR /app
USER adacs:adacs
EXPOSE 8000
# Liveness only: /healthz answers without touching the database or the broker (compose's
# healthcheck asks /readyz, which does, and also wants a live worker on each queue).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["adacs-healthcheck", "api", "--live"]
ENTRYPOINT ["adacs-entrypoint"]
CMD ["api"]
