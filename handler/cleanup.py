"""Step 7: remove what a job left: its input files, its outputs, its ComfyUI history entry.

The worker owns everything in its folders (worker_common.layout), and each job owns its names
in them (namespace.py): `<input>/<key>-*`, `<output>/<key>/`, plus the files its prompt wrote
elsewhere (previews in temp/). So a job's clean-up removes exactly its own files, whether it
succeeded or failed, and can never touch another job's. Whenever no job is in flight, what is
left in the worker's folders (a killed handler's files, a stuck prompt's late writes) is swept
too. CLEANUP_INPUTS, CLEANUP_OUTPUTS and CLEANUP_HISTORY turn each part off; outputs kept on
the volume on purpose (OUTPUTS_ON_VOLUME) are never removed.

Clean-ups run one after another in a background thread, after the job's result is returned.
With JOB_PIPELINE_DEPTH=1 the next job waits for the previous one's clean-up before it starts,
so jobs never overlap at all; with more, their names keep them apart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from worker_common.comfy_client import ComfyClient, ComfyError, ComfyUnavailable
from worker_common.comfy_protocol import HistoryEntry, QueuedPrompt, QueueState, history_prompts
from worker_common.layout import empty_folder

from .config import Config
from .namespace import RERUN_INPUT, JobSpace

log = logging.getLogger(__name__)

EARLIER_PROMPTS_WAIT_S = 120.0  # an earlier handler's interrupted prompts get this long to end
EARLIER_PROMPTS_POLL_S = 0.2


@dataclass(frozen=True)
class Leftovers:
    """What a job leaves for its clean-up."""

    space: JobSpace
    prompt_id: str | None  # None when nothing was ever sent to ComfyUI


class Cleaner:
    """Runs clean-ups one after another, off the jobs' path, and sweeps when no job is in flight."""

    def __init__(self, config: Config, comfy: ComfyClient) -> None:
        self.config = config
        self.comfy = comfy
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cleanup")
        self._last: Future | None = None
        self._in_flight = 0
        self._lock = threading.Lock()  # held by a sweep; a job starting waits for it

    @contextlib.contextmanager
    def job(self) -> Iterator[None]:
        """Mark a job in flight for its whole run (the sweep waits until none is)."""
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def submit(self, leftovers: Leftovers) -> None:
        self._last = self._executor.submit(self._clean_up_logged, leftovers)

    def clean_up_earlier(self, prompts: dict[str, str | None]) -> None:
        """Clean up an earlier handler's prompts (prompt id -> job key) once ComfyUI has ended them.

        In a thread of its own: new jobs never wait for it (a prompt that ignores the interrupt
        may take long to end), and their names keep them apart from it.
        """
        threading.Thread(target=self._clean_up_earlier, args=(prompts,), name="cleanup-earlier", daemon=True).start()

    def wait(self, timeout_s: float | None = None) -> None:
        """Until every clean-up submitted so far has finished (or `timeout_s`)."""
        last = self._last
        if last is not None:
            wait([last], timeout=timeout_s)

    def sweep(self) -> None:
        """Empty the worker's folders if no job is in flight (at start, and after clean-ups)."""
        with self._lock:
            if self._in_flight:
                return
            layout, config = self.config.layout, self.config
            if config.cleanup_inputs:
                empty_folder(layout.input)
            if config.cleanup_outputs:
                empty_folder(layout.temp)
            if config.cleanup_outputs and not layout.outputs_on_volume:
                empty_folder(layout.output)

    def _clean_up_logged(self, leftovers: Leftovers) -> None:
        try:
            self.clean_up(leftovers)
            self.sweep()
        except Exception:  # a clean-up bug must not stop the next clean-ups
            log.exception("job clean-up failed (%s)", leftovers.space.key)

    def _clean_up_earlier(self, prompts: dict[str, str | None]) -> None:
        try:
            _wait_ended(self.comfy, set(prompts))
            for prompt_id, key in prompts.items():
                if key is not None:
                    self.clean_up(Leftovers(JobSpace(key, self.config.layout), prompt_id))
                elif self.config.cleanup_history:
                    self.comfy.delete_history([prompt_id])
            self.sweep()
        except Exception:  # a clean-up bug must not stop the next clean-ups
            log.exception("clean-up of an earlier handler's prompts failed")

    def clean_up(self, leftovers: Leftovers) -> None:
        config, space = self.config, leftovers.space
        if config.cleanup_inputs:
            remove_inputs(space)
        if config.cleanup_outputs and not config.layout.outputs_on_volume:
            _remove_tree(space.output_dir)
            for path in self._files_written_elsewhere(leftovers.prompt_id):
                _remove(path)
        if config.cleanup_history and leftovers.prompt_id:
            try:
                self.comfy.delete_history([leftovers.prompt_id])
            except ComfyUnavailable:
                pass  # ComfyUI is down: its history, kept in memory, is gone anyway
            except ComfyError as error:
                log.warning("could not delete the ComfyUI history entry of prompt %s: %s", leftovers.prompt_id, error)

    def _files_written_elsewhere(self, prompt_id: str | None) -> list[Path]:
        """The prompt's output files outside the job's folder (previews in temp/), from its history."""
        if not prompt_id:
            return []
        try:
            entry = self.comfy.history(prompt_id)
        except ComfyError:
            return []  # ComfyUI is down or busy: the next sweep gets them
        return self.config.layout.output_paths(HistoryEntry.from_entry(entry).outputs) if entry else []


def remove_inputs(space: JobSpace) -> None:
    """Every entry of the input folder named for the job (files, links to the volume, folders)."""
    try:
        entries = [entry for entry in os.scandir(space.layout.input) if space.owns_input(entry.name)]
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _remove_tree(Path(entry.path))
        else:
            _remove(Path(entry.path))


def _remove_tree(path: Path) -> None:
    """Remove a folder and what is in it; links inside are removed, never followed."""
    if path.is_symlink():
        _remove(path)
        return
    shutil.rmtree(path, onerror=lambda _function, failed, info: _log_failure(failed, info[1]))


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        _log_failure(str(path), error)


def _log_failure(path: str, error: BaseException) -> None:
    if not isinstance(error, FileNotFoundError):
        log.warning("could not remove %s: %s", path, error)


def clear_leftovers(comfy: ComfyClient, cleaner: Cleaner) -> None:
    """At the handler's start: nothing of an earlier handler's jobs may remain, in ComfyUI or on disk.

    A handler that was killed leaves its prompts running or queued in ComfyUI (this worker's
    ComfyUI serves this handler alone), their history entries, and its files in the worker's
    folders. The files go now; the prompts are dropped, and once ComfyUI has ended them their
    history entries and what they wrote meanwhile go too (in the background).
    """
    prompts: dict[str, str | None] = {}
    try:
        queue = QueueState.from_body(comfy.queue()) or QueueState()
        for prompt in [*queue.prompts, *history_prompts(comfy.get_json("/history"))]:
            prompts[prompt.prompt_id] = _job_key(prompt)
        if queue.busy:
            log.warning("ComfyUI still runs prompts of an earlier handler: dropping them")
            comfy.clear_queue()
            comfy.interrupt()
    except ComfyError as error:
        log.warning("could not check ComfyUI's queue for an earlier handler's prompts: %s", error)
    cleaner.sweep()
    if prompts:
        cleaner.clean_up_earlier(prompts)


def _job_key(prompt: QueuedPrompt) -> str | None:
    """The job key a prompt carries (namespace.RERUN_INPUT), or None (not one of this worker's jobs)."""
    nodes = prompt.prompt.values()
    keys = [node.get("inputs", {}).get(RERUN_INPUT) for node in nodes if isinstance(node, dict)]
    return next((key for key in keys if isinstance(key, str)), None)


def _wait_ended(comfy: ComfyClient, prompt_ids: set[str]) -> None:
    """Until none of `prompt_ids` is queued or running in ComfyUI (at most EARLIER_PROMPTS_WAIT_S)."""
    deadline = time.monotonic() + EARLIER_PROMPTS_WAIT_S
    while time.monotonic() < deadline:
        try:
            queue = QueueState.from_body(comfy.queue()) or QueueState()
        except ComfyError:
            return  # ComfyUI is down: its prompts ended with it
        if not any(prompt.prompt_id in prompt_ids for prompt in queue.prompts):
            return
        time.sleep(EARLIER_PROMPTS_POLL_S)
