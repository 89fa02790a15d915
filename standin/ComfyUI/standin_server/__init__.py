"""A stand-in for ComfyUI 0.3.64, 0.38.1 and 0.47.1: the same HTTP and WebSocket protocol, tiny CPU-only nodes.

See standin/README.md. The protocol it copies is recorded in docs/comfyui-protocol.md
(shared/comfyui-protocol.md) and docs/comfyui-0.47.md; where behaviour is not recorded there
it follows ComfyUI's source.
Which release it plays, and what that changes, lives in version.py.
"""

PYTORCH_VERSION = "standin"
