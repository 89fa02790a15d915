"""ComfyUI's launcher: the comfyui program (`python -m launcher`) and the entrypoint's start-up step (`prepare`).

- install: the launch checks of the ComfyUI install on the volume, and its version
- flags, arguments: the flags each ComfyUI release knows; ComfyUI's command line, checked
- user: the unprivileged user ComfyUI runs as (COMFYUI_USER)
- prepare: once per container start, the worker's folders and the volume report
- launch: on every start of ComfyUI, check, choose its flags, drop to its user, exec it
"""
