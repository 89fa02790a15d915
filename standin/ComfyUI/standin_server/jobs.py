"""0.38.1's jobs API (comfy_execution/jobs.py and server.py's /api/jobs routes), and 0.47.1's.

A job is a queue item or a history entry in one shape: `{"id", "status", "priority",
"create_time", "outputs_count", ...}`, keys with null values left out. Statuses: pending,
in_progress, completed, failed, cancelled (an `error` history entry whose messages hold
execution_interrupted).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import runtime, version

if TYPE_CHECKING:
    from .server import PromptServer

log = logging.getLogger("standin")

PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED = "pending", "in_progress", "completed", "failed", "cancelled"
ALL_STATUSES = [PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED]
PREVIEWABLE_MEDIA_TYPES = frozenset({"images", "video", "audio", "3d", "text"})
THREE_D_EXTENSIONS = (".obj", ".fbx", ".gltf", ".glb", ".usdz")
TEXT_EXTENSIONS = (".txt", ".md", ".json")


def validate_job_id(value: Any) -> str:
    """A client-chosen job (prompt) id must be a UUID in canonical lowercase hyphenated form."""
    if not isinstance(value, str):
        raise ValueError(f"job id must be a string, got {type(value).__name__}")
    if str(uuid.UUID(value)) != value:
        raise ValueError("job id must be a UUID in canonical lowercase hyphenated form")
    return value


def _prune(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _normalize_item(item: Any) -> Any:
    if isinstance(item, str) and item.lower().endswith(THREE_D_EXTENSIONS):
        return {"filename": item, "type": "output", "subfolder": "", "mediaType": "3d"}
    return item


def normalize_outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    """History outputs for the jobs API: null items dropped, 3D file names made file entries."""
    normalized: dict[str, Any] = {}
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, dict):
            normalized[node_id] = node_outputs
            continue
        normalized[node_id] = {
            media: items
            if media == "animated" or not isinstance(items, list)
            else [_normalize_item(i) for i in items if i is not None]
            for media, items in node_outputs.items()
        }
    return normalized


def _is_previewable(media_type: str, item: dict[str, Any]) -> bool:
    if media_type in PREVIEWABLE_MEDIA_TYPES:
        return True
    fmt = item.get("format", "")
    if fmt and (fmt.startswith("video/") or fmt.startswith("audio/")):
        return True
    return item.get("filename", "").lower().endswith(THREE_D_EXTENSIONS + TEXT_EXTENSIONS)


def _is_text(media_type: str, item: dict[str, Any]) -> bool:
    return media_type == "text" or item.get("filename", "").lower().endswith(TEXT_EXTENSIONS)


def outputs_summary(outputs: dict[str, Any]) -> tuple[int, int, dict[str, Any] | None]:
    """(outputs_count, previewable_outputs_count, preview_output), by jobs.get_outputs_summary's rules."""
    count = previewable = 0
    preview = fallback = text_file = text = None
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, dict):
            continue
        for media_type, items in node_outputs.items():
            if media_type == "animated" or not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, dict):
                    normalized = _normalize_item(item)
                    if not isinstance(normalized, dict):
                        if media_type == "text" and text is None and item is not None:
                            value = str(item)
                            text = {"content": value[:1024], "nodeId": node_id, "mediaType": media_type}
                            if len(value) > 1024:
                                text["truncated"] = True
                        continue
                    item = normalized
                count += 1
                if not _is_previewable(media_type, item):
                    continue
                previewable += 1
                enriched = {**item, "nodeId": node_id}
                enriched.setdefault("mediaType", media_type)
                if _is_text(media_type, item):
                    text_file = text_file or enriched
                elif item.get("type") == "output":
                    preview = preview or enriched
                else:
                    fallback = fallback or enriched
    return count, previewable, preview or fallback or text_file or text


def _metadata(extra_data: dict[str, Any]) -> tuple[Any, Any]:
    workflow = (extra_data.get("extra_pnginfo") or {}).get("workflow") or {}
    return extra_data.get("create_time"), workflow.get("id") if isinstance(workflow, dict) else None


def queue_job(item: tuple[Any, ...], status: str, include_workflow: bool = False) -> dict[str, Any]:
    priority, prompt_id, prompt, extra_data, _ = item[:5]
    create_time, workflow_id = _metadata(extra_data)
    job = _prune(
        {
            "id": prompt_id,
            "status": status,
            "priority": priority,
            "create_time": create_time,
            "outputs_count": 0,
            "previewable_outputs_count": 0,
            "workflow_id": workflow_id,
        }
    )
    if include_workflow:
        job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
    return job


def history_job(prompt_id: str, entry: dict[str, Any], include_outputs: bool = False) -> dict[str, Any]:
    priority, _, prompt, extra_data, _ = entry["prompt"][:5]
    create_time, workflow_id = _metadata(extra_data)
    status_info = entry.get("status") or {}
    outputs = entry.get("outputs", {})
    count, previewable, preview = outputs_summary(outputs)
    error = start = end = success = None
    node_errors: list[dict[str, Any]] = []
    interrupted = False
    for event, data in status_info.get("messages", []):
        if event == "execution_start":
            start = data.get("timestamp")
        elif event in ("execution_success", "execution_error", "execution_interrupted"):
            end = data.get("timestamp")
            error = data if event == "execution_error" else error
            success = data if event == "execution_success" else success
            interrupted = interrupted or event == "execution_interrupted"
        elif event == "execution_node_error":
            node_errors.append(data)
    status = COMPLETED
    if status_info.get("status_str") == "error":
        status = CANCELLED if interrupted else FAILED
    summary = _error_summary(status_info, success, error, node_errors) if version.current().job_error_summary else {}
    job = _prune(
        {
            "id": prompt_id,
            "status": status,
            "priority": priority,
            "create_time": create_time,
            "execution_start_time": start,
            "execution_end_time": end,
            "execution_error": error,
            **summary,
            "outputs_count": count,
            "previewable_outputs_count": previewable,
            "preview_output": preview,
            "workflow_id": workflow_id,
        }
    )
    if include_outputs:
        job["outputs"] = normalize_outputs(outputs)
        job["execution_status"] = status_info
        if version.current().job_error_summary:
            job["execution_errors"] = node_errors
        job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
    return job


def _error_summary(
    status_info: dict[str, Any], success: Any, error: Any, node_errors: list[dict[str, Any]]
) -> dict[str, Any]:
    """0.47.1's completion_status, has_errors and execution_error_count (None where it leaves them out).

    An `execution_summary` in the status (a prompt run with the continue-on-failure policy)
    states them; otherwise they follow from the messages.
    """
    summary = status_info.get("execution_summary") or {}
    completion = summary.get("completion_status")
    if completion is None and success is not None:
        completion = success.get("completion_status", "success")
    if completion is None and status_info.get("status_str") == "success":
        completion = "success"
    has_errors = count = None
    if status_info:
        has_errors = summary.get("has_errors", bool(node_errors) or error is not None)
        count = summary.get("execution_error_count", len(node_errors) or int(error is not None))
    return {"completion_status": completion, "has_errors": has_errors, "execution_error_count": count}


def _sort_key(sort_by: str) -> Any:
    if sort_by == "execution_duration":
        return lambda job: (
            job.get("execution_end_time", 0) - job.get("execution_start_time", 0)
            if job.get("execution_end_time") and job.get("execution_start_time")
            else 0
        )
    return lambda job: job.get("create_time", 0)


def _bad(message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=400)


def _list_query(query: Any) -> tuple[dict[str, Any] | None, web.Response | None]:
    """The query of GET /api/jobs, checked as server.get_jobs checks it."""
    statuses = None
    if query.get("status"):
        statuses = [s.strip().lower() for s in query["status"].split(",") if s.strip()]
        invalid = [s for s in statuses if s not in ALL_STATUSES]
        if invalid:
            valid = ", ".join(ALL_STATUSES)
            return None, _bad(f"Invalid status value(s): {', '.join(invalid)}. Valid values: {valid}")
    sort_by = query.get("sort_by", "created_at").lower()
    if sort_by not in ("created_at", "execution_duration"):
        return None, _bad("sort_by must be 'created_at' or 'execution_duration'")
    sort_order = query.get("sort_order", "desc").lower()
    if sort_order not in ("asc", "desc"):
        return None, _bad("sort_order must be 'asc' or 'desc'")
    limit = None
    if "limit" in query:
        try:
            limit = int(query["limit"])
        except ValueError:
            return None, _bad("limit must be an integer")
        if limit <= 0:
            return None, _bad("limit must be a positive integer")
    offset = 0
    if "offset" in query:
        try:
            offset = max(0, int(query["offset"]))
        except ValueError:
            return None, _bad("offset must be an integer")
    parsed = {"statuses": statuses or ALL_STATUSES, "workflow_id": query.get("workflow_id")}
    return {**parsed, "sort_by": sort_by, "reverse": sort_order == "desc", "limit": limit, "offset": offset}, None


def add_routes(r: web.RouteTableDef, server: PromptServer) -> None:
    queue = server.prompt_queue

    def all_jobs(statuses: list[str]) -> list[dict[str, Any]]:
        running, pending = queue.get_current_queue()
        jobs = [queue_job(i, IN_PROGRESS) for i in running] if IN_PROGRESS in statuses else []
        jobs += [queue_job(i, PENDING) for i in pending] if PENDING in statuses else []
        for prompt_id, entry in queue.get_history().items():
            job = history_job(prompt_id, entry)
            if job["status"] in statuses:
                jobs.append(job)
        return jobs

    @r.get("/api/jobs")
    async def get_jobs(request: web.Request) -> web.Response:
        query, error = _list_query(request.rel_url.query)
        if error is not None:
            return error
        assert query is not None
        jobs = all_jobs(query["statuses"])
        if query["workflow_id"]:
            jobs = [j for j in jobs if j.get("workflow_id") == query["workflow_id"]]
        jobs = sorted(jobs, key=_sort_key(query["sort_by"]), reverse=query["reverse"])
        total, offset, limit = len(jobs), query["offset"], query["limit"]
        page = jobs[offset:] if limit is None else jobs[offset : offset + limit]
        pagination = {"offset": offset, "limit": limit, "total": total, "has_more": offset + len(page) < total}
        return web.json_response({"jobs": page, "pagination": pagination})

    @r.get("/api/jobs/{job_id}")
    async def get_job(request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        history = queue.get_history(prompt_id=job_id)
        if job_id in history:
            return web.json_response(history_job(job_id, history[job_id], include_outputs=True))
        running, pending = queue.get_current_queue()
        for items, status in ((running, IN_PROGRESS), (pending, PENDING)):
            for item in items:
                if item[1] == job_id:
                    return web.json_response(queue_job(item, status, include_workflow=True))
        return web.json_response({"error": "Job not found"}, status=404)

    def cancel(job_id: str) -> bool:
        """Running: interrupted (only if still running); pending: dequeued; else nothing."""
        _running, pending = queue.get_current_queue()
        if any(item[1] == job_id for item in pending):
            log.info(f"Cancelling pending prompt {job_id}")
            if queue.delete_queue_item(lambda item: item[1] == job_id):
                return True
        if job_id in queue.running_prompt_ids():
            log.info(f"Cancelling running prompt {job_id}")
            runtime.interrupt_processing()
            return True
        return False

    @r.post("/api/jobs/{job_id}/cancel")
    async def cancel_job(request: web.Request) -> web.Response:
        return web.json_response({"cancelled": cancel(request.match_info["job_id"])})

    @r.post("/api/jobs/cancel")
    async def cancel_jobs(request: web.Request) -> web.Response:
        try:
            json_data = await request.json()
        except json.JSONDecodeError:
            return _bad("Request body must be valid JSON")
        job_ids = json_data.get("job_ids") if isinstance(json_data, dict) else None
        if not isinstance(job_ids, list):
            return _bad("job_ids must be a list")
        invalid = []
        for job_id in job_ids:
            try:
                validate_job_id(job_id)
            except (ValueError, AttributeError):
                invalid.append(job_id if isinstance(job_id, str) else repr(job_id))
        if invalid:
            return _bad("job_ids contains invalid id(s)", invalid_ids=invalid)
        results = [cancel(job_id) for job_id in job_ids]
        return web.json_response({"cancelled": any(results)})
