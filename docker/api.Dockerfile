# syntax=docker/dockerfile:1
# The steering service: FastAPI + the GP engines on CPU torch. Build from the repository root:
#   docker build -f docker/api.Dockerfile -t beamsteer-api .
# Configuration only through BEAMSTEER_* environment variables (server/settings.py).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- build: a self-contained venv
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, pinned, from the CPU index: PyPI's default torch is a multi-GB CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY models ./models
COPY clients ./clients
# A regular (not editable) install: the trained weights (models/**/*.pt) and the migrations
# travel as package data. torch==2.13.0 is already met by 2.13.0+cpu; the check proves it.
ARG EXTRAS=server
RUN pip install "/src[${EXTRAS}]" \
 && python -c "import torch; assert torch.__version__ == '2.13.0+cpu', torch.__version__"

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BEAMSTEER_DATA_DIR=/var/lib/beamsteer \
    BEAMSTEER_HOST=0.0.0.0 \
    BEAMSTEER_PORT=8000
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/beamsteer \
        --shell /usr/sbin/nologin beamsteer \
 && install -d -o beamsteer -g beamsteer /var/lib/beamsteer
COPY --from=build /opt/venv /opt/venv
USER beamsteer
WORKDIR /home/beamsteer
# The embedded SQLite database, when BEAMSTEER_DATABASE_URL is not set.
VOLUME ["/var/lib/beamsteer"]
EXPOSE 8000
# /health answers 503 when the store does not; urlopen raises on it (exit 1).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('BEAMSTEER_PORT', '8000'), timeout=4)"]
# BEAMSTEER_HOST=0.0.0.0 above: inside a container the service must listen on all of the
# container's interfaces to be reachable through a published port at all. So it refuses to
# start until the database holds an API key (`beamsteer keys create`, README "Security"),
# unless BEAMSTEER_INSECURE=true says that where the port is published decides who may in.
ENTRYPOINT ["beamsteer", "serve"]
