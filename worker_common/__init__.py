"""Code shared by the handler, the sidecar and the supervisor event listeners."""
