"""The worker's health, readiness and metrics sidecar.

`python -m healthcheck serve` runs under supervisord next to ComfyUI and the handler. One
background thread probes ComfyUI and supervisord and publishes an immutable snapshot; the
HTTP server (/livez, /readyz, /ping, /metrics) only reads that snapshot, so a slow or hung
ComfyUI shows up as stale figures, never as a slow health check. See docs/sidecar.md.
"""
