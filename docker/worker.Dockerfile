# syntax=docker/dockerfile:1
# The inference worker (`beamsteer worker`): pulls jobs from Redis, runs the deep
# nets on the GPU. Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t beamsteer-worker .
# Needs the NVIDIA Container Toolkit on the host. The only setting it needs is
# BEAMSTEER_REDIS_URL; the weights are baked in.
#
# The base image brings CUDA, cuDNN and a CUDA build of torch 2.13.0. Choose the tag whose
# CUDA the host's driver supports; the build below fails if its torch is not 2.13.0, so a
# mismatched tag can never pull a second torch from PyPI.
ARG TORCH_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime

# ---------------------------------------------------------------- build: a venv over the base
FROM ${TORCH_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -c "import torch; assert torch.__version__.split('+')[0] == '2.13.0', torch.__version__" \
 && python -m venv --system-site-packages /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY models ./models
COPY clients ./clients
# torch==2.13.0 is met by the base image's CUDA build (seen through --system-site-packages);
# the trained weights (models/**/*.pt) travel as package data.
ARG EXTRAS=server
RUN pip install "/src[${EXTRAS}]" \
 && python -c "import torch, sys; sys.exit(torch.version.cuda is None)"

# ---------------------------------------------------------------- runtime
FROM ${TORCH_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/beamsteer \
        --shell /usr/sbin/nologin beamsteer
COPY --from=build /opt/venv /opt/venv
USER beamsteer
WORKDIR /home/beamsteer
# Healthy while Redis, where its jobs come from, answers. A dead worker process ends the
# container, which the restart policy handles. (The worker also writes a heartbeat key;
# checking it here would need the worker id, which the container does not know in advance.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, redis; redis.Redis.from_url(os.environ['BEAMSTEER_REDIS_URL'], socket_timeout=4).ping()"]
ENTRYPOINT ["beamsteer", "worker"]
CMD ["--device", "auto"]
