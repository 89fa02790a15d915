"""The ComfyUI releases the stand-in plays, which the handler's tests run against (docs/comfyui-versions.md)."""

RELEASES = ("0.3.64", "0.38.1", "0.47.1")
NEWEST = RELEASES[-1]
