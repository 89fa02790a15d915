"""The long-lived parts every job uses, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

import requests

from worker_common.comfy_client import ComfyClient, ComfyError, ComfyUnavailable
from worker_common.contract import COMFY_HOST

from .cleanup import Cleaner
from .config import Config
from .errors import JobError, Reason
from .folders import Folders, discover
from .gate import Gate
from .s3 import S3Uploader
from .ws import SocketPool

# /history may answer 500 while ComfyUI is busy writing it: retry GETs that fail so.
GET_RETRIES = 2


@dataclass
class Runtime:
    config: Config
    comfy: ComfyClient
    gate: Gate
    sockets: SocketPool
    folders: Folders
    downloads: requests.Session
    s3: S3Uploader | None
    cleaner: Cleaner

    @classmethod
    def build(cls, config: Config) -> Runtime:
        comfy = ComfyClient(COMFY_HOST, config.comfy_port, get_retries=GET_RETRIES)
        return cls(
            config=config,
            comfy=comfy,
            gate=Gate(config.sidecar_port),
            sockets=SocketPool(comfy),
            folders=discover(config.comfyui_dir, None),
            downloads=requests.Session(),
            s3=S3Uploader(config.s3) if config.s3 else None,
            cleaner=Cleaner(),
        )

    def discover_folders(self) -> None:
        """Take ComfyUI's folders from the command line it reports (call once it is ready)."""
        try:
            argv = self.comfy.system_stats().get("system", {}).get("argv")
        except ComfyError:
            return
        self.folders = discover(self.config.comfyui_dir, argv if isinstance(argv, list) else None)

    def comfy_failure(self, error: ComfyError, doing: str) -> JobError:
        """The JobError for ComfyUI failing while `doing`, with the sidecar's view of why."""
        if not isinstance(error, ComfyUnavailable):  # it answered, with an error status or nonsense
            return JobError(Reason.INTERNAL, f"ComfyUI failed while {doing}: {error}")
        status = self.gate.status()
        why = f"; the sidecar says: {status.describe()}" if not status.ready else ""
        return JobError(Reason.COMFYUI_UNAVAILABLE, f"ComfyUI did not answer while {doing}{why}")
