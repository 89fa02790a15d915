"""`comfy-worker`: the worker's tools for a person, in a Pod shell or a checkout (bin/comfy-worker)."""
