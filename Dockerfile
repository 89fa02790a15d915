# ComfyUI worker for RunPod serverless. The image carries no ComfyUI: ComfyUI, its models
# and its venv live on the network volume (/runpod-volume/ComfyUI, com_venv beside it).
#
# Python: ComfyUI's venv on the volume is usually made in a RunPod PyTorch Pod, whose
# Python is /usr/bin/python3.11 (deadsnakes on Ubuntu 22.04). A venv's bin/python is a
# link to that interpreter, so this image ships the same one at the same path; the
# worker's own venv (/opt/venv) uses it too.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ARG PYTHON_VERSION=3.11
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    WORKER_VENV=/opt/venv \
    LOG_DIR=/var/log/comfy-worker

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Python for both venvs, libraries ComfyUI and common custom nodes load at run time
# (OpenCV's libGL, glib), ffmpeg for video nodes, tcmalloc (preloaded when present).
# Not pinned to exact versions: Ubuntu's archive drops old patch releases, and the security
# updates are wanted; the base image's tag pins the distribution.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-venv" "python${PYTHON_VERSION}-dev" \
        build-essential git ffmpeg libgl1 libglib2.0-0 libtcmalloc-minimal4 ca-certificates \
    && apt-get purge -y software-properties-common gpg-agent \
    && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/*

COPY requirements.txt /tmp/requirements.txt
RUN "python${PYTHON_VERSION}" -m venv "$WORKER_VENV" \
    && "$WORKER_VENV/bin/pip" install --no-cache-dir -r /tmp/requirements.txt

WORKDIR /opt/comfy-worker
COPY supervisord.conf test_input.json ./
COPY services/ services/
COPY listeners/ listeners/
COPY worker_common/ worker_common/
COPY healthcheck/ healthcheck/
COPY handler/ handler/
COPY launcher/ launcher/

# ComfyUI and its custom nodes run as a system user of their own (launcher/user.py), writing only
# to the worker's folders under WORKER_DATA_DIR, which the entrypoint prepares at each start.
ENV WORKER_DATA_DIR=/var/lib/comfy-worker \
    COMFYUI_USER=comfyui
RUN useradd --system --user-group --no-create-home --home-dir "$WORKER_DATA_DIR/home" --shell /usr/sbin/nologin comfyui

# `supervisorctl status` with no arguments, from any shell in the container.
RUN printf '#!/bin/sh\nexec %s/bin/supervisorctl -c /opt/comfy-worker/supervisord.conf "$@"\n' "$WORKER_VENV" \
        > /usr/local/bin/supervisorctl \
    && chmod 0755 /usr/local/bin/supervisorctl services/* \
    && mkdir -p "$LOG_DIR"

# 8000: the runpod local API, served only when SERVE_API_LOCALLY=true.
# 8081: health, readiness and Prometheus metrics (or $PORT_HEALTH on RunPod).
EXPOSE 8000 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=330s --retries=3 \
    CMD ["/opt/venv/bin/python", "-m", "healthcheck", "probe"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/comfy-worker/services/entrypoint"]
