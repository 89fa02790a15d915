"""ComfyUI's launcher: the comfyui program (`python -m launcher`) and the entrypoint's start-up step (`prepare`).

- install: the launch checks of the ComfyUI install on the volume, and its version
- cli_args_reader, installed_flags: the flags the installed release declares (its comfy/cli_args.py, read
  without running it); flags: the fallback tables; arguments: ComfyUI's command line, checked
- memory, comfy_site/: the container's memory limit, and ComfyUI's RAM measures clamped to it
- user: the unprivileged user ComfyUI runs as (COMFYUI_USER)
- prepare: once per container start, the worker's folders and the volume report
- launch: on every start of ComfyUI, check, choose its flags, drop to its user, exec it
"""
