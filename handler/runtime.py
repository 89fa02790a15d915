"""The long-lived parts every job uses, built once at start-up."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import xmlrpc.client
from dataclasses import dataclass, field

from worker_common import custom_nodes, model_cache
from worker_common.comfy_client import ComfyClient, ComfyError, ComfyUnavailable
from worker_common.comfy_protocol import Features
from worker_common.contract import COMFY_HOST, PROGRAM_COMFYUI, stack_identity
from worker_common.recent_models import RecentModels
from worker_common.supervisor_rpc import supervisor_proxy

from .catalog import Catalogs
from .cleanup import Cleaner
from .config import Config
from .errors import JobError, Reason
from .gate import Gate
from .model_hashes import ModelHashes
from .s3 import S3Uploader
from .workflows import WorkflowStore
from .ws import SocketPool

log = logging.getLogger(__name__)

# /history may answer 500 while ComfyUI is busy writing it: retry GETs that fail so.
GET_RETRIES = 2
# Above comfyui's stopwaitsecs in supervisord.conf: stopProcess waits that long before SIGKILL.
SUPERVISOR_RESTART_TIMEOUT_S = 60.0
FEATURES_TIMEOUT_S = 2.0  # /system_stats answers in milliseconds, even while a node runs


@dataclass
class Runtime:
    config: Config
    comfy: ComfyClient
    gate: Gate
    sockets: SocketPool
    catalog: Catalogs  # of the running ComfyUI process: Catalogs.for_process
    s3: S3Uploader | None
    cleaner: Cleaner
    workflows: WorkflowStore
    model_hashes: ModelHashes
    recent_models: RecentModels | None = None  # the models jobs loaded, for fresh workers' prefetch
    _features: dict[int | None, Features] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(cls, config: Config) -> Runtime:
        comfy = ComfyClient(COMFY_HOST, config.comfy_port, get_retries=GET_RETRIES)
        return cls(
            config=config,
            comfy=comfy,
            gate=Gate(config.sidecar_port, stack_identity(config.run_dir)),
            sockets=SocketPool(comfy),
            catalog=Catalogs(comfy),
            s3=S3Uploader(config.s3) if config.s3 else None,
            cleaner=Cleaner(config, comfy),
            workflows=WorkflowStore(config.layout.workflows),
            model_hashes=ModelHashes(functools.partial(model_cache.copy_of, config.layout.model_cache)),
            recent_models=RecentModels(config.layout.comfyui_dir, config.layout.worker_id),
        )

    def features(self, pid: int | None) -> Features:
        """What the ComfyUI process `pid` offers (its version), asked once per process."""
        with self._lock:
            known = self._features.get(pid)
        if known is not None:
            return known
        try:
            features = Features.from_system_stats(self.comfy.system_stats(FEATURES_TIMEOUT_S))
        except ComfyError:
            return Features("unknown")  # not remembered: asked again next time
        with self._lock:
            self._features = {pid: features}  # only the running process matters
        return features

    def pack_failures(self) -> list[custom_nodes.FailedPack]:
        """Custom node packs that failed to import in the running ComfyUI (read by the sidecar)."""
        return custom_nodes.read_failures(self.config.run_dir)

    def comfy_failure(self, error: ComfyError, doing: str) -> JobError:
        """The JobError for ComfyUI failing while `doing`, with the sidecar's view of why."""
        if not isinstance(error, ComfyUnavailable):  # it answered, with an error status or nonsense
            return JobError(Reason.INTERNAL, f"ComfyUI failed while {doing}: {error}")
        status = self.gate.status()
        why = f"; the sidecar says: {status.describe()}" if not status.ready else ""
        return JobError(Reason.COMFYUI_UNAVAILABLE, f"ComfyUI did not answer while {doing}{why}")

    def restart_comfyui(self, why: str) -> str:
        """Have supervisord restart ComfyUI, as `supervisorctl restart comfyui` does, in the background.

        supervisord stops it with SIGINT, then SIGKILL after stopwaitsecs; the job that asked
        does not wait for that, the next job waits for ComfyUI to be ready again.
        """
        log.warning("restarting ComfyUI through supervisord: %s", why)
        threading.Thread(target=_restart_comfyui, name="restart-comfyui", daemon=True).start()
        return "ComfyUI is being restarted through supervisord"


def _restart_comfyui() -> None:
    proxy = supervisor_proxy(timeout_s=SUPERVISOR_RESTART_TIMEOUT_S)
    try:
        with contextlib.suppress(xmlrpc.client.Fault):  # NOT_RUNNING: it died meanwhile
            proxy.supervisor.stopProcess(PROGRAM_COMFYUI, True)
        proxy.supervisor.startProcess(PROGRAM_COMFYUI, False)
    except (OSError, xmlrpc.client.Error) as error:
        log.error("could not restart ComfyUI through supervisord: %s", error)
