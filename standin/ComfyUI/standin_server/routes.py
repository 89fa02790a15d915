"""HTTP routes, answering as ComfyUI's server.py does (codes, bodies, empty bodies).

Every route is also served under /api, as ComfyUI does. Handlers let malformed input raise
where ComfyUI's do, so aiohttp answers those with its plain-text 500. What the release
played changes is read from version.current(); the fault knobs (STANDIN_PROMPT_DELAY_S,
STANDIN_PROMPT_GARBAGE, STANDIN_HISTORY_500[_ONCE]) act here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sys
import time
import uuid
from io import BytesIO
from typing import TYPE_CHECKING, Any

from aiohttp import web
from PIL import Image

from . import PYTORCH_VERSION, credentials, jobs, paths, runtime, version
from .nodes import NODE_CLASS_MAPPINGS, node_info
from .system import deploy_environment, memory, redact_argv
from .validation import validate_prompt

if TYPE_CHECKING:
    from .server import PromptServer

log = logging.getLogger("standin")

SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
FORCE_DOWNLOAD_TYPES = {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}
# STANDIN_PROMPT_GARBAGE's reply: 200, labelled JSON, but not JSON.
GARBAGE_BODY = b'<html><body>502 Bad Gateway</body></html> {"prompt_id": '
INVALID_PROMPT_ID = {
    "type": "invalid_prompt_id",
    "message": "prompt_id must be a valid UUID",
    "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; omit it to let the server "
    "generate one",
    "extra_info": {},
}

INDEX_HTML = """<!doctype html>
<html><head><title>ComfyUI stand-in</title></head>
<body><h1>ComfyUI stand-in</h1><p>A protocol stand-in for ComfyUI {version}; there is no GUI.</p></body></html>
"""


def add_routes(server: PromptServer) -> None:
    r = web.RouteTableDef()

    @r.get("/ws")
    async def websocket(request: web.Request) -> web.StreamResponse:
        return await server.websocket_handler(request)

    @r.get("/")
    async def index(request: web.Request) -> web.Response:
        return web.Response(text=INDEX_HTML.format(version=version.current().version), content_type="text/html")

    @r.get("/embeddings")
    async def embeddings(request: web.Request) -> web.Response:
        return web.json_response([])

    @r.get("/extensions")
    async def extensions(request: web.Request) -> web.Response:
        return web.json_response([])

    @r.get("/features")
    async def features(request: web.Request) -> web.Response:
        return web.json_response(server.features_for(credentials.transport_enabled(request)))

    @r.get("/models")
    async def model_types(request: web.Request) -> web.Response:
        return web.json_response(sorted(paths.folders().models))

    @r.get("/models/{folder}")
    async def models(request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder not in paths.folders().models:
            return web.Response(status=404)
        return web.json_response(paths.get_filename_list(folder))

    @r.get("/system_stats")
    async def system_stats(request: web.Request) -> web.Response:
        return web.json_response(_system_stats())

    def _system_stats() -> dict[str, Any]:
        release = version.current()
        ram_total, ram_free = memory()
        system: dict[str, Any] = {
            "os": sys.platform if release.os_is_platform else os.name,
            "ram_total": ram_total,
            "ram_free": ram_free,
            "comfyui_version": release.version,
            "required_frontend_version": release.frontend_version,
            "installed_templates_version": release.templates_version,
            "required_templates_version": release.templates_version,
        }
        if release.extended_system_stats:
            system["comfy_package_versions"] = [
                {"name": name, "installed": required, "required": required}
                for name, required in version.COMFY_PACKAGES_0_38
            ]
        system.update(
            python_version=sys.version,
            pytorch_version=PYTORCH_VERSION,
            embedded_python=os.path.split(os.path.split(sys.executable)[0])[1] == "python_embeded",
        )
        if release.extended_system_stats:
            system["deploy_environment"] = deploy_environment(paths.folders().install)
        system["argv"] = redact_argv(sys.argv) if release.redacted_argv else sys.argv
        return {
            "system": system,
            "devices": [
                {
                    "name": "cpu",
                    "type": "cpu",
                    "index": None,
                    "vram_total": ram_total,
                    "vram_free": ram_free,
                    "torch_vram_total": ram_total,
                    "torch_vram_free": ram_free,
                }
            ],
        }

    @r.get("/object_info")
    async def object_info(request: web.Request) -> web.Response:
        server.start_asset_scan(("models", "input", "output"))
        out = {}
        for name in NODE_CLASS_MAPPINGS:
            try:
                out[name] = node_info(name)
            except Exception:
                log.exception(f"[ERROR] An error occurred while retrieving information for the '{name}' node.")
        return web.json_response(out)

    @r.get("/object_info/{node_class}")
    async def object_info_node(request: web.Request) -> web.Response:
        node_class = request.match_info.get("node_class", None)
        out = {}
        if node_class is not None and node_class in NODE_CLASS_MAPPINGS:
            out[node_class] = node_info(node_class)
        return web.json_response(out)

    @r.get("/prompt")
    async def get_prompt(request: web.Request) -> web.Response:
        return web.json_response(server.get_queue_info())

    @r.post("/prompt")
    async def post_prompt(request: web.Request) -> web.Response:
        """ComfyUI's post_prompt, then the STANDIN_PROMPT_DELAY_S / _GARBAGE faults on its answer."""
        reply = await queue_prompt(request)
        if server.knobs.prompt_delay_s > 0:
            await asyncio.sleep(server.knobs.prompt_delay_s)
        if server.knobs.prompt_garbage and reply.status == 200:
            return web.Response(body=GARBAGE_BODY, content_type="application/json")
        return reply

    async def queue_prompt(request: web.Request) -> web.Response:
        log.info("got prompt")
        release = version.current()
        if release.credential_transport and (refused := credentials.refuse_transport(request)) is not None:
            return refused
        json_data = await request.json()
        if release.credential_transport:
            refused = credentials.refuse_prompt_client(request, json_data, server.sockets_metadata)
            if refused is not None:
                return refused
        if "number" in json_data:
            number = float(json_data["number"])
        else:
            number = server.number
            if "front" in json_data and json_data["front"]:  # noqa: RUF019 - ComfyUI's test, for any JSON
                number = -number
            server.number += 1

        if "prompt" not in json_data:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)

        prompt = json_data["prompt"]
        if not release.canonical_prompt_ids:
            prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        elif json_data.get("prompt_id") is None:
            prompt_id = str(uuid.uuid4())
        else:
            try:
                prompt_id = jobs.validate_job_id(json_data["prompt_id"])
            except ValueError:
                return web.json_response({"error": INVALID_PROMPT_ID, "node_errors": {}}, status=400)
        valid = validate_prompt(prompt, json_data.get("partial_execution_targets"))
        extra_data: Any = {}
        if "extra_data" in json_data:
            extra_data = json_data["extra_data"]
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        usage_source = request.headers.get("Comfy-Usage-Source")
        if release.stamps_create_time and "comfy_usage_source" not in extra_data and usage_source:
            extra_data["comfy_usage_source"] = usage_source
        if not valid[0]:
            log.warning(f"invalid prompt: {valid[1]}")
            return web.json_response({"error": valid[1], "node_errors": valid[3]}, status=400)
        sensitive = {key: extra_data.pop(key) for key in SENSITIVE_EXTRA_DATA_KEYS if key in extra_data}
        if release.stamps_create_time:
            extra_data["create_time"] = int(time.time() * 1000)
        if release.unique_prompt_ids and server.prompt_queue.knows(prompt_id):
            return web.json_response({"error": "prompt_id already exists"}, status=409)
        server.prompt_queue.put((number, prompt_id, prompt, extra_data, valid[2], sensitive))
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": valid[3]})

    @r.get("/queue")
    async def get_queue(request: web.Request) -> web.Response:
        running, pending = server.prompt_queue.get_current_queue()
        return web.json_response({"queue_running": [x[:5] for x in running], "queue_pending": [x[:5] for x in pending]})

    @r.post("/queue")
    async def post_queue(request: web.Request) -> web.Response:
        json_data = await request.json()
        if json_data.get("clear"):
            server.prompt_queue.wipe_queue()
        if "delete" in json_data:
            for id_to_delete in json_data["delete"]:
                server.prompt_queue.delete_queue_item(lambda item, target=id_to_delete: item[1] == target)
        return web.Response(status=200)

    @r.get("/history")
    async def get_history(request: web.Request) -> web.Response:
        max_items = request.rel_url.query.get("max_items", None)
        offset = request.rel_url.query.get("offset", None)
        history = server.prompt_queue.get_history(
            max_items=int(max_items) if max_items is not None else None,
            offset=int(offset) if offset is not None else -1,
        )
        return web.json_response(history)

    @r.get("/history/{prompt_id}")
    async def get_history_prompt_id(request: web.Request) -> web.Response:
        if server.knobs.history_500:
            raise RuntimeError("STANDIN_HISTORY_500: every GET /history/{prompt_id} fails on purpose")
        if server.history_500_pending:
            server.history_500_pending = False
            raise RuntimeError("STANDIN_HISTORY_500_ONCE: this GET /history/{prompt_id} fails on purpose")
        prompt_id = request.match_info.get("prompt_id", None)
        return web.json_response(server.prompt_queue.get_history(prompt_id=prompt_id))

    @r.post("/history")
    async def post_history(request: web.Request) -> web.Response:
        json_data = await request.json()
        if json_data.get("clear"):
            server.prompt_queue.wipe_history()
        if "delete" in json_data:
            for id_to_delete in json_data["delete"]:
                server.prompt_queue.delete_history_item(id_to_delete)
        return web.Response(status=200)

    @r.post("/interrupt")
    async def post_interrupt(request: web.Request) -> web.Response:
        try:
            json_data = await request.json()
        except json.JSONDecodeError:
            json_data = {}
        prompt_id = json_data.get("prompt_id")
        if prompt_id:
            if prompt_id in server.prompt_queue.running_prompt_ids():
                log.info(f"Interrupting prompt {prompt_id}")
                runtime.interrupt_processing()
            else:
                log.info(f"Prompt {prompt_id} is not currently running, skipping interrupt")
        else:
            log.info("Global interrupt (no prompt_id specified)")
            runtime.interrupt_processing()
        return web.Response(status=200)

    @r.post("/free")
    async def post_free(request: web.Request) -> web.Response:
        json_data = await request.json()
        unload_models = json_data.get("unload_models", False)
        free_memory = json_data.get("free_memory", False)
        if unload_models:
            server.prompt_queue.set_flag("unload_models", unload_models)
        if free_memory:
            server.prompt_queue.set_flag("free_memory", free_memory)
        return web.Response(status=200)

    @r.get("/view")
    async def view(request: web.Request) -> web.StreamResponse:
        return view_file(request, server)

    @r.post("/upload/image")
    async def upload_image(request: web.Request) -> web.Response:
        post = await request.post()
        return image_upload(post, server)

    if version.current().jobs_routes:
        jobs.add_routes(r, server)
    if version.current().credential_transport:
        credentials.add_routes(r, server)

    # ComfyUI serves every route twice: as is and under /api.
    api = web.RouteTableDef()
    for route in r:
        if isinstance(route, web.RouteDef):
            api.route(route.method, "/api" + route.path)(route.handler, **route.kwargs)
    server.app.add_routes(api)
    server.app.add_routes(r)


def _with_disposition(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'filename="{filename}"'}


def view_file(request: web.Request, server: PromptServer) -> web.StreamResponse:
    query = request.rel_url.query
    if "filename" not in query:
        return web.Response(status=404)
    if query["filename"].startswith("blake3:") and version.current().asset_system:
        # 0.38.1 resolves an asset hash through the asset database (404 with assets off).
        file = server.assets.path_of_hash(query["filename"])
        if file is None or not os.path.isfile(file):
            return web.Response(status=404)
        return _file_response(file, os.path.basename(file))
    filename, output_dir = paths.annotated_filepath(query["filename"])
    if not filename:
        return web.Response(status=400)
    if filename[0] == "/" or ".." in filename:
        return web.Response(status=400)
    if output_dir is None:
        output_dir = paths.get_directory_by_type(query.get("type", "output"))
    if output_dir is None:
        return web.Response(status=400)
    if "subfolder" in query:
        full_output_dir = os.path.join(output_dir, query["subfolder"])
        if os.path.commonpath((os.path.abspath(full_output_dir), output_dir)) != output_dir:
            return web.Response(status=403)
        output_dir = full_output_dir

    filename = os.path.basename(filename)
    file = os.path.join(output_dir, filename)
    if not os.path.isfile(file):
        return web.Response(status=404)

    if "preview" in query:
        with Image.open(file) as img:
            preview_info = query["preview"].split(";")
            image_format = preview_info[0]
            if image_format not in ["webp", "jpeg"] or "a" in query.get("channel", ""):
                image_format = "webp"
            quality = int(preview_info[-1]) if preview_info[-1].isdigit() else 90
            buffer = BytesIO()
            out = img.convert("RGB") if image_format == "jpeg" or query.get("channel", "") == "rgb" else img
            out.save(buffer, format=image_format, quality=quality)
            return web.Response(
                body=buffer.getvalue(), content_type=f"image/{image_format}", headers=_with_disposition(filename)
            )

    channel = query.get("channel", "rgba")
    if channel == "rgb":
        with Image.open(file) as img:
            if img.mode == "RGBA":
                r, g, b, _ = img.split()
                new_img = Image.merge("RGB", (r, g, b))
            else:
                new_img = img.convert("RGB")
            buffer = BytesIO()
            new_img.save(buffer, format="PNG")
            return web.Response(body=buffer.getvalue(), content_type="image/png", headers=_with_disposition(filename))
    if channel == "a":
        with Image.open(file) as img:
            alpha = img.split()[-1] if img.mode == "RGBA" else Image.new("L", img.size, 255)
            alpha_img = Image.new("RGBA", img.size)
            alpha_img.putalpha(alpha)
            buffer = BytesIO()
            alpha_img.save(buffer, format="PNG")
            return web.Response(body=buffer.getvalue(), content_type="image/png", headers=_with_disposition(filename))

    return _file_response(file, filename)


def _file_response(file: str, filename: str) -> web.FileResponse:
    content_type = paths.guess_type(filename) or "application/octet-stream"
    if content_type in FORCE_DOWNLOAD_TYPES:
        content_type = "application/octet-stream"
    headers = {**_with_disposition(filename), "Content-Type": content_type}
    if version.current().view_nosniff:
        headers["X-Content-Type-Options"] = "nosniff"
    return web.FileResponse(file, headers=headers)


def _same_bytes(filepath: str, upload: Any) -> bool:
    """ComfyUI's compare_image_hash: does the file on disk hold exactly the uploaded bytes?"""
    if not os.path.exists(filepath):
        return False
    on_disk, uploaded = hashlib.sha256(), hashlib.sha256()
    with open(filepath, "rb") as stream:
        on_disk.update(stream.read())
    uploaded.update(upload.file.read())
    upload.file.seek(0)
    return on_disk.hexdigest() == uploaded.hexdigest()


def image_upload(post: Any, server: PromptServer) -> web.Response:
    image = post.get("image")
    overwrite = post.get("overwrite")
    upload_type = post.get("type")
    if upload_type is None:
        upload_type = "input"
    upload_dir = {"input": paths.folders().input, "temp": paths.folders().temp, "output": paths.folders().output}[
        upload_type
    ]  # an unknown type raises, which aiohttp answers with a 500, as ComfyUI does
    if not (image and getattr(image, "file", None)):
        return web.Response(status=400)
    filename = image.filename
    if not filename:
        return web.Response(status=400)

    subfolder = post.get("subfolder", "")
    full_output_folder = os.path.join(upload_dir, os.path.normpath(subfolder))
    filepath = os.path.abspath(os.path.join(full_output_folder, filename))
    if os.path.commonpath((upload_dir, filepath)) != upload_dir:
        return web.Response(status=400)
    os.makedirs(full_output_folder, exist_ok=True)

    duplicate = False
    if overwrite not in ("true", "1"):
        stem, ext = os.path.splitext(filename)
        i = 1
        while os.path.exists(filepath):
            if _same_bytes(filepath, image):
                duplicate = True
                break
            filename = f"{stem} ({i}){ext}"
            filepath = os.path.join(full_output_folder, filename)
            i += 1
    if not duplicate:
        with open(filepath, "wb") as stream:
            stream.write(image.file.read())
    reply: dict[str, Any] = {"name": filename, "subfolder": subfolder, "type": upload_type}
    asset = server.assets.register_upload(filepath, upload_type, subfolder)
    if asset is not None:
        reply["asset"] = asset
    return web.json_response(reply)
