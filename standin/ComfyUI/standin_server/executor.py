"""Running prompts: ComfyUI's PromptExecutor and prompt_worker, on asyncio.

One prompt at a time, in queue order. Each node's work runs in a thread (asyncio.to_thread),
so the HTTP server keeps answering while a node runs. The frames and history entries follow
execution.py: execution_start, execution_cached, then per node progress_state / executing /
executed, then execution_success (or execution_error / execution_interrupted).

What the release played changes (version.py): 0.38.1 adds `metadata` to file entries, asset
ids when assets are on (and an `assets.seed.*` scan of the output folder before each prompt),
and replays the `executed` frame of cached HAS_INTERMEDIATE_OUTPUT nodes after a successful
run; its history outputs are what the run emitted, where 0.3.64's are every cached ui of the
prompt's nodes.
"""

from __future__ import annotations

import asyncio
import io
import logging
import struct
import sys
import time
import traceback
from typing import Any, Protocol

from . import media, runtime, version
from .assets import AssetStore
from .graph import (
    CacheEntry,
    CachePolicy,
    DependencyCycleError,
    ExecutionList,
    OutputCache,
    compute_cache_keys,
    is_link,
)
from .knobs import Knobs
from .nodes import NODE_CLASS_MAPPINGS
from .nodes.base import Node
from .progress import ProgressRegistry
from .prompt_queue import ExecutionStatus, PromptQueue
from .validation import full_type_name, get_input_info

log = logging.getLogger("standin")

# Internal event name for a binary preview frame whose payload is already encoded.
PREVIEW_IMAGE_BYTES = "__preview_image_bytes__"


class ExecutionServer(Protocol):
    client_id: str | None
    last_node_id: str | None
    last_prompt_id: str | None

    def send_sync(self, event: str, data: Any, sid: str | None = None) -> None: ...

    def has_listeners(self, sid: str | None) -> bool: ...

    def drop_websockets_blocking(self) -> None: ...

    def block_event_loop_blocking(self, seconds: float) -> None: ...


def format_value(x: Any) -> Any:
    if x is None:
        return None
    if isinstance(x, (int, float, bool, str)):
        return x
    return str(x)


def encode_preview(preview: tuple[str, Any, Any]) -> bytes:
    """A binary preview frame's payload after the event number: 4-byte format, then the image."""
    image_type, image, max_size = preview
    if max_size is not None:
        image = image.copy()
        image.thumbnail((max_size, max_size))
    buffer = io.BytesIO()
    buffer.write(struct.pack(">I", 2 if image_type == "PNG" else 1))
    image.save(buffer, format=image_type, quality=95, compress_level=1)
    return buffer.getvalue()


def map_node_over_list(obj: Node, input_data_all: dict[str, Any], func: str) -> list[Any]:
    """Call the node once per index of its longest input list; check the interrupt before each."""
    method = getattr(obj, func)
    if len(input_data_all) == 0:
        runtime.throw_exception_if_processing_interrupted()
        return [method()]
    results = []
    for i in range(max(len(v) for v in input_data_all.values())):
        runtime.throw_exception_if_processing_interrupted()
        results.append(method(**{k: v[i if len(v) > i else -1] for k, v in input_data_all.items()}))
    return results


def get_output_data(obj: Node, input_data_all: dict[str, Any]) -> tuple[list[list[Any]], dict[str, list]]:
    results = []
    uis = []
    for r in map_node_over_list(obj, input_data_all, obj.FUNCTION):
        if isinstance(r, dict):
            if "ui" in r:
                uis.append(r["ui"])
            if "result" in r:
                results.append(r["result"])
        else:
            results.append(r)
    output: list[list[Any]] = []
    if results:
        output_is_list = getattr(obj, "OUTPUT_IS_LIST", [False] * len(results[0]))
        for i, is_list in zip(range(len(results[0])), output_is_list, strict=False):
            if is_list:
                output.append([x for o in results for x in o[i]])
            else:
                output.append([o[i] for o in results])
    ui: dict[str, list] = {}
    if uis:
        ui = {k: [y for x in uis for y in x[k]] for k in uis[0]}
    return output, ui


class PromptExecutor:
    def __init__(
        self, server: ExecutionServer, knobs: Knobs, cache: CachePolicy | None = None, assets: AssetStore | None = None
    ) -> None:
        self.server = server
        self.knobs = knobs
        self.cache = cache or CachePolicy()
        self.assets = assets or AssetStore(None)
        self.reset()

    def reset(self) -> None:
        """A fresh cache (at start and on POST /free), logged as ComfyUI's CacheSet logs it."""
        line = self.cache.startup_line()
        if line:
            log.info(line)
        self.outputs = OutputCache(self.cache)
        self.objects: dict[tuple[str, str], Node] = {}
        self.status_messages: list[tuple[str, dict[str, Any]]] = []
        self.success = True
        self.history_result: dict[str, Any] = {"outputs": {}, "meta": {}}

    def add_message(self, event: str, data: dict[str, Any], broadcast: bool) -> None:
        data = {**data, "timestamp": int(time.time() * 1000)}
        self.status_messages.append((event, data))
        if self.server.client_id is not None or broadcast:
            self.server.send_sync(event, data, self.server.client_id)

    def handle_execution_error(
        self,
        prompt_id: str,
        prompt: dict[str, Any],
        current_outputs: list[str],
        executed: set[str],
        error: dict[str, Any],
        ex: BaseException,
    ) -> None:
        node_id = error["node_id"]
        mes: dict[str, Any] = {
            "prompt_id": prompt_id,
            "node_id": node_id,
            "node_type": prompt[node_id]["class_type"],
            "executed": list(executed),
        }
        if isinstance(ex, runtime.InterruptProcessingException):
            self.add_message("execution_interrupted", mes, broadcast=True)
            return
        mes.update(
            exception_message=error["exception_message"],
            exception_type=error["exception_type"],
            traceback=error["traceback"],
            current_inputs=error["current_inputs"],
            current_outputs=list(current_outputs),
        )
        self.add_message("execution_error", mes, broadcast=False)

    def get_input_data(
        self,
        inputs: dict[str, Any],
        class_def: type[Node],
        unique_id: str,
        local: dict[str, CacheEntry],
        prompt: dict[str, Any],
        extra_data: dict[str, Any],
    ) -> dict[str, Any]:
        valid_inputs = class_def.INPUT_TYPES()
        input_data_all: dict[str, Any] = {}
        for name, value in inputs.items():
            _, category, _ = get_input_info(valid_inputs, name)
            if is_link(value):
                entry = local.get(value[0]) or self.outputs.get(value[0])
                if entry is None or value[1] >= len(entry.outputs):
                    input_data_all[name] = (None,)
                    continue
                input_data_all[name] = entry.outputs[value[1]]
            elif category is not None:
                input_data_all[name] = [value]
        for name, kind in valid_inputs.get("hidden", {}).items():
            if kind == "PROMPT":
                input_data_all[name] = [prompt]
            elif kind == "EXTRA_PNGINFO":
                input_data_all[name] = [extra_data.get("extra_pnginfo")]
            elif kind == "UNIQUE_ID":
                input_data_all[name] = [unique_id]
        return input_data_all

    def _run_in_thread(self, obj: Node, input_data_all: dict[str, Any], ctx: runtime.NodeContext) -> Any:
        runtime.current_node.set(ctx)
        if self.knobs.exec_delay_s > 0:
            time.sleep(self.knobs.exec_delay_s)
        return get_output_data(obj, input_data_all)

    def _node_context(self, prompt_id: str, node_id: str, registry: ProgressRegistry) -> runtime.NodeContext:
        server = self.server
        client_id = server.client_id

        def progress(value: float, total: float, preview: Any) -> None:
            runtime.throw_exception_if_processing_interrupted()
            registry.update(node_id, value, total)
            server.send_sync(
                "progress", {"value": value, "max": total, "prompt_id": prompt_id, "node": node_id}, client_id
            )
            if preview is not None:
                server.send_sync(PREVIEW_IMAGE_BYTES, encode_preview(preview), client_id)

        return runtime.NodeContext(
            prompt_id, node_id, progress, server.drop_websockets_blocking, server.block_event_loop_blocking
        )

    def emit_cached_output(
        self, prompt_id: str, node_id: str, cached: CacheEntry, ui_outputs: dict[str, dict[str, Any]]
    ) -> None:
        """A cached node's result, replayed: in ui_outputs (with fresh asset ids) and as `executed`."""
        if node_id in ui_outputs:
            return
        ui = None
        if cached.ui is not None:
            ui = {**cached.ui, "output": self.assets.register_outputs(cached.ui["output"], prompt_id)}
            ui_outputs[node_id] = ui
        if self.server.client_id is not None:
            output = ui.get("output") if ui else None
            self.server.send_sync(
                "executed",
                {"node": node_id, "display_node": node_id, "output": output, "prompt_id": prompt_id},
                self.server.client_id,
            )

    async def execute_node(
        self,
        prompt: dict[str, Any],
        prompt_id: str,
        node_id: str,
        extra_data: dict[str, Any],
        executed: set[str],
        local: dict[str, CacheEntry],
        ui_outputs: dict[str, dict[str, Any]],
        registry: ProgressRegistry,
    ) -> tuple[bool, dict[str, Any] | None, BaseException | None]:
        server = self.server
        inputs = prompt[node_id]["inputs"]
        class_type = prompt[node_id]["class_type"]
        class_def = NODE_CLASS_MAPPINGS[class_type]

        cached = self.outputs.get(node_id)
        if cached is not None:
            self.emit_cached_output(prompt_id, node_id, cached, ui_outputs)
            registry.finish(node_id)
            local[node_id] = cached
            return True, None, None

        registry.start(node_id)
        input_data_all = None
        try:
            input_data_all = self.get_input_data(inputs, class_def, node_id, local, prompt, extra_data)
            if server.client_id is not None:
                server.last_node_id = node_id
                server.send_sync(
                    "executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}, server.client_id
                )
            obj = self.objects.get((node_id, class_type))
            if obj is None:
                obj = class_def()
                self.objects[(node_id, class_type)] = obj
            ctx = self._node_context(prompt_id, node_id, registry)
            output_data, output_ui = await asyncio.to_thread(self._run_in_thread, obj, input_data_all, ctx)
            ui_entry = None
            if output_ui:
                if version.current().media_metadata:
                    output_ui = await asyncio.to_thread(media.enrich, output_ui)
                meta = {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id}
                ui_entry = {"meta": meta, "output": output_ui}
                emitted = output_ui
                if self.assets.enabled:
                    emitted = await asyncio.to_thread(self.assets.register_outputs, output_ui, prompt_id)
                ui_outputs[node_id] = {"meta": meta, "output": emitted}
                if server.client_id is not None:
                    server.send_sync(
                        "executed",
                        {"node": node_id, "display_node": node_id, "output": emitted, "prompt_id": prompt_id},
                        server.client_id,
                    )
            entry = CacheEntry(ui=ui_entry, outputs=output_data)
            local[node_id] = entry
            self.outputs.set(node_id, entry)
        except runtime.InterruptProcessingException as iex:
            log.info("Processing interrupted")
            return False, {"node_id": node_id}, iex
        except Exception as ex:
            typ, _, tb = sys.exc_info()
            assert typ is not None
            current_inputs = {}
            if input_data_all is not None:
                current_inputs = {name: [format_value(x) for x in values] for name, values in input_data_all.items()}
            log.error(f"!!! Exception during processing !!! {ex}")
            log.error(traceback.format_exc())
            error = {
                "node_id": node_id,
                "exception_message": f"{ex}\n",
                "exception_type": full_type_name(typ),
                "traceback": traceback.format_tb(tb),
                "current_inputs": current_inputs,
            }
            return False, error, ex

        registry.finish(node_id)
        executed.add(node_id)
        return True, None, None

    async def execute(
        self, prompt: dict[str, Any], prompt_id: str, extra_data: dict[str, Any], execute_outputs: list[str]
    ) -> None:
        runtime.interrupt_processing(False)
        server = self.server
        server.client_id = extra_data.get("client_id")
        if self.assets.enabled:
            # To every socket, before the run's own frames (ComfyUI scans output in the background).
            await asyncio.to_thread(self.assets.scan, ("output",), lambda e, d: server.send_sync(e, d, None))
        self.status_messages = []
        self.success = True
        self.history_result = {"outputs": {}, "meta": {}}
        self.add_message("execution_start", {"prompt_id": prompt_id}, broadcast=False)

        client_id = server.client_id
        registry = ProgressRegistry(
            prompt_id,
            lambda event, data: server.send_sync(event, data, client_id),
            lambda: server.has_listeners(client_id),
        )
        keys = await asyncio.to_thread(compute_cache_keys, prompt)
        self.outputs.set_prompt(keys)
        for key in [k for k in self.objects if k[0] not in prompt or prompt[k[0]]["class_type"] != k[1]]:
            del self.objects[key]

        cached_nodes = [node_id for node_id in prompt if self.outputs.get(node_id) is not None]
        self.add_message("execution_cached", {"nodes": cached_nodes, "prompt_id": prompt_id}, broadcast=False)

        executed: set[str] = set()
        local: dict[str, CacheEntry] = {}
        ui_outputs: dict[str, dict[str, Any]] = {}
        current_outputs = list(prompt)
        execution_list = ExecutionList(prompt, lambda node_id: self.outputs.get(node_id) is not None)
        for node_id in execute_outputs:
            execution_list.add_node(node_id)

        while not execution_list.is_empty():
            try:
                node_id = execution_list.next_node()
            except DependencyCycleError as ex:
                self.success = False
                error = {
                    "node_id": next(iter(execution_list.pending)),
                    "exception_message": str(ex),
                    "exception_type": "graph.DependencyCycleError",
                    "traceback": [],
                    "current_inputs": [],
                }
                self.handle_execution_error(prompt_id, prompt, current_outputs, executed, error, ex)
                break
            self.outputs.release_ram()
            ok, error, ex = await self.execute_node(
                prompt, prompt_id, node_id, extra_data, executed, local, ui_outputs, registry
            )
            if not ok:
                assert error is not None and ex is not None
                self.success = False
                self.handle_execution_error(prompt_id, prompt, current_outputs, executed, error, ex)
                break
            execution_list.complete(node_id)
        else:
            if version.current().intermediate_output_replay:
                self._replay_intermediate_outputs(prompt, prompt_id, executed, ui_outputs)
            self.add_message("execution_success", {"prompt_id": prompt_id}, broadcast=False)

        if not version.current().intermediate_output_replay:
            # 0.3.64 builds history outputs from its ui cache: every cached ui of the prompt's nodes.
            for node_id in prompt:
                cached = self.outputs.get(node_id)
                if node_id not in ui_outputs and cached is not None and cached.ui is not None:
                    ui_outputs[node_id] = cached.ui
        if self.cache.drops_after_prompt:
            self.outputs.clear()
        self.outputs.release_ram()
        self.history_result = {
            "outputs": {node_id: info["output"] for node_id, info in ui_outputs.items()},
            "meta": {node_id: info["meta"] for node_id, info in ui_outputs.items()},
        }
        server.last_node_id = None

    def _replay_intermediate_outputs(
        self, prompt: dict[str, Any], prompt_id: str, executed: set[str], ui_outputs: dict[str, dict[str, Any]]
    ) -> None:
        """0.38.1: cached HAS_INTERMEDIATE_OUTPUT nodes that did not run send their `executed` frame."""
        for node_id in prompt:
            if node_id in executed or not NODE_CLASS_MAPPINGS[prompt[node_id]["class_type"]].HAS_INTERMEDIATE_OUTPUT:
                continue
            cached = self.outputs.get(node_id)
            if cached is not None:
                self.emit_cached_output(prompt_id, node_id, cached, ui_outputs)


def _remove_sensitive(item: tuple[Any, ...]) -> tuple[Any, ...]:
    return item[:5]


async def prompt_worker(queue: PromptQueue, executor: PromptExecutor, server: ExecutionServer) -> None:
    """main.py's prompt_worker: take the next item, run it, record it in the history."""
    while True:
        queue_item = await queue.get()
        if queue_item is not None:
            item, item_id = queue_item
            started = time.perf_counter()
            prompt_id = item[1]
            server.last_prompt_id = prompt_id
            extra_data = {**item[3], **item[5]}
            try:
                await executor.execute(item[2], prompt_id, extra_data, item[4])
            except Exception:
                # A bug in the stand-in, not in a node: record the prompt as failed, keep serving.
                log.error("stand-in executor failed:\n" + traceback.format_exc())
                executor.success = False
                server.last_node_id = None
            queue.task_done(
                item_id,
                executor.history_result,
                status=ExecutionStatus(
                    status_str="success" if executor.success else "error",
                    completed=executor.success,
                    messages=executor.status_messages,
                ),
                process_item=_remove_sensitive,
            )
            if server.client_id is not None:
                server.send_sync("executing", {"node": None, "prompt_id": prompt_id}, server.client_id)
            elapsed = time.perf_counter() - started
            if elapsed > 600:
                log.info(f"Prompt executed in {time.strftime('%H:%M:%S', time.gmtime(elapsed))}")
            else:
                log.info(f"Prompt executed in {elapsed:.2f} seconds")

        flags = queue.get_flags()
        if flags.get("free_memory", False):
            executor.reset()
