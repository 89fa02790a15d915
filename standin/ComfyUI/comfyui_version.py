# The stand-in's comfyui_version.py, where ComfyUI ships `__version__ = "x.y.z"`: launchers read
# it with `from comfyui_version import __version__`. It is the version the stand-in plays:
# STANDIN_COMFYUI_VERSION, 0.3.64 when unset (standin_server/version.py).
from standin_server.version import requested

__version__ = requested()
