# ComfyUI worker for RunPod serverless. The image carries no ComfyUI: ComfyUI, its models
# and its venv live on the network volume (/runpod-volume/ComfyUI, com_venv beside it).
#
# Python: ComfyUI's venv on the volume is usually made in a RunPod PyTorch Pod, whose
# Python is /usr/bin/python3.11 (deadsnakes on Ubuntu 22.04). A venv's bin/python is a
# link to that interpreter, so this image ships the same one at the same path; the
# worker's own venv (/opt/venv) uses it too.
#
# Reproducible: the base is pinned by digest, the worker's Python packages come from
# requirements.lock (every package and its hashes; `make lock` regenerates it), and only the
# files listed below enter the build context (.dockerignore lists what may).
# Build stages: `base` (CUDA runtime, Python, ComfyUI's run-time libraries), `builder` (makes
# /opt/venv from the lock), and the final image (base + /opt/venv + the worker's code).

# nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04 (BASE_IMAGE), by the digest of its multi-platform index.
# Refresh deliberately: docker buildx imagetools inspect nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
# Another base may stand in where that one cannot be pulled: Debian 12 (scripts/image, BASE_IMAGE=debian12)
# has the same /usr/bin/python3.11. An ARG before the first FROM reaches only FROM lines, so each stage
# declares again the ones it uses.
ARG BASE_IMAGE=nvidia/cuda@sha256:17e2934e1fa96152b14f78078bfbafd0f00f391df995dc6c641a720fce1202bb
ARG PYTHON_VERSION=3.11

# hadolint ignore=DL3006
FROM ${BASE_IMAGE} AS base
ARG PYTHON_VERSION
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    WORKER_VENV=/opt/venv \
    LOG_DIR=/var/log/comfy-worker

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Python for both venvs, and what ComfyUI's venv needs at run time: OpenCV's libGL and glib,
# ffmpeg for video nodes, tcmalloc (preloaded when present), git (ComfyUI-Manager and custom
# nodes call it at start-up), gcc and Python's headers (Triton compiles its launcher on first
# use: torch.compile, SageAttention), and procps (ps, top) for a shell in a Pod. Python comes
# from the deadsnakes archive on Ubuntu 22.04 (the CUDA base), whose own Python is 3.10, and
# from the distribution on Debian 12. Not pinned to exact versions: the archives drop old
# patch releases, and the security updates are wanted; the base image's digest pins the
# distribution.
# hadolint ignore=DL3008,SC1091
RUN . /etc/os-release \
    && apt-get update \
    && if [[ "$ID" == ubuntu ]]; then \
        apt-get install -y --no-install-recommends software-properties-common gpg-agent \
        && add-apt-repository -y ppa:deadsnakes/ppa \
        && apt-get update \
        && apt-get purge -y software-properties-common gpg-agent; \
    fi \
    && apt-get install -y --no-install-recommends \
        "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-dev" gcc libc6-dev \
        git ffmpeg libgl1 libglib2.0-0 libtcmalloc-minimal4 ca-certificates procps \
    && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/* \
    && test -x "/usr/bin/python${PYTHON_VERSION}"

# The worker's venv, from the lock alone: --require-hashes refuses any file whose hash the
# lock does not list, --no-deps installs nothing the lock does not name, and `pip check`
# proves the lock is complete. Only /opt/venv leaves this stage.
FROM base AS builder
ARG PYTHON_VERSION
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends "python${PYTHON_VERSION}-venv" \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.lock /tmp/requirements.lock
RUN "python${PYTHON_VERSION}" -m venv "$WORKER_VENV" \
    && "$WORKER_VENV/bin/pip" install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements.lock \
    && "$WORKER_VENV/bin/pip" check

FROM base
COPY --from=builder /opt/venv /opt/venv

WORKDIR /opt/comfy-worker
COPY supervisord.conf test_input.json ./
COPY bin/ bin/
COPY services/ services/
COPY listeners/ listeners/
COPY worker_common/ worker_common/
COPY worker_cli/ worker_cli/
COPY healthcheck/ healthcheck/
COPY handler/ handler/
COPY launcher/ launcher/

# ComfyUI and its custom nodes run as a system user of their own (launcher/user.py), writing only
# to the worker's folders under WORKER_DATA_DIR, which the entrypoint prepares at each start.
ENV WORKER_DATA_DIR=/var/lib/comfy-worker \
    COMFYUI_USER=comfyui
RUN useradd --system --user-group --no-create-home --home-dir "$WORKER_DATA_DIR/home" --shell /usr/sbin/nologin comfyui

# The worker's tools on every shell's PATH: `comfy-worker status|probe|test-input|readyz|
# metrics` and `supervisorctl` (no -c needed). The worker's venv stays off PATH, so `python`
# and `pip` in a Pod shell never reach it by accident.
ENV PATH="/opt/comfy-worker/bin:${PATH}"
RUN chmod 0755 bin/* services/* \
    && mkdir -p "$LOG_DIR"

# 8000: the runpod local API, served only when SERVE_API_LOCALLY=true.
# 8081: health, readiness and Prometheus metrics (or $PORT_HEALTH on RunPod).
EXPOSE 8000 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=330s --retries=3 \
    CMD ["comfy-worker", "probe"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/comfy-worker/services/entrypoint"]
