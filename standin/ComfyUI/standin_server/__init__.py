"""A stand-in for ComfyUI 0.3.64: the same HTTP and WebSocket protocol, tiny CPU-only nodes.

See standin/README.md. The protocol it copies is recorded in docs/comfyui-protocol.md
(shared/comfyui-protocol.md); where behaviour is not recorded there it follows ComfyUI's source.
"""

COMFYUI_VERSION = "0.3.64"
FRONTEND_VERSION = "1.27.10"
TEMPLATES_VERSION = "0.1.94"
PYTORCH_VERSION = "standin"
