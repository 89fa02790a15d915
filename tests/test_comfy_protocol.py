"""worker_common.comfy_protocol reads each release's answers into the same typed values.

Every answer is the stand-in's, playing each supported release (tests/releases.py): frames over
a real WebSocket, /queue with a prompt running and one waiting, /history and /object_info,
/system_stats; and a refused connection is told apart from other failures by its type.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from handler.ws import ComfySocket
from tests.processes import free_port
from tests.releases import RELEASES
from tests.test_standin import Standin, empty_invert_save, sleep_prompt
from worker_common.comfy_client import ComfyClient, ComfyError, ComfyRefused, ComfyUnavailable
from worker_common.comfy_protocol import (
    ACTIVITY,
    ACTIVITY_TYPE,
    EXECUTED,
    Features,
    Frame,
    HistoryEntry,
    NodeInfo,
    QueueState,
    SystemStats,
    decode_message,
    history_prompts,
)


@pytest.fixture(scope="module", params=RELEASES)
def release(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Standin]]:
    args = () if request.param == "0.3.64" else ("--disable-assets",)  # 0.3.64 has no assets
    standin = Standin(tmp_path_factory.mktemp("protocol"), version=request.param, args=args)
    try:
        standin.wait_ready()
        yield request.param, standin
    finally:
        standin.kill()


def _client(standin: Standin) -> ComfyClient:
    return ComfyClient("127.0.0.1", standin.port)


def test_system_stats_and_features(release: tuple[str, Standin]) -> None:
    version, standin = release
    body = _client(standin).system_stats()
    stats = SystemStats.from_body(body)
    assert stats.version == version
    assert stats.devices and all(device.label for device in stats.devices)
    assert Features.from_system_stats(body).version == version
    assert SystemStats.from_body(None) == SystemStats(None)


def test_frames_of_a_prompt_end_with_its_end(release: tuple[str, Standin]) -> None:
    _version, standin = release
    comfy = _client(standin)
    sock = ComfySocket(comfy, f"protocol-{uuid.uuid4().hex}")
    sock.open()
    prompt_id = str(uuid.uuid4())
    comfy.queue_prompt(empty_invert_save(f"frames-{uuid.uuid4().hex[:6]}"), sock.client_id, prompt_id)
    frames: list[Frame] = []
    deadline = time.monotonic() + 30
    while not (frames and frames[-1].ends_prompt and frames[-1].prompt_id == prompt_id):
        assert time.monotonic() < deadline, [frame.type for frame in frames]
        message = sock.receive(1.0)
        if message is not None and Frame.from_message(message).type != ACTIVITY_TYPE:
            frames.append(Frame.from_message(message))
    sock.close()
    executed = [frame for frame in frames if frame.type == EXECUTED and frame.prompt_id == prompt_id]
    assert [str(frame.node) for frame in executed][-1] == "2"
    assert all(frame.failure is None for frame in frames)


def test_queue_history_and_object_info(release: tuple[str, Standin]) -> None:
    _version, standin = release
    comfy = _client(standin)
    running, waiting = str(uuid.uuid4()), str(uuid.uuid4())
    comfy.queue_prompt(sleep_prompt(1.0, 2), "protocol", running)
    comfy.queue_prompt(sleep_prompt(0.1, 1), "protocol", waiting)
    deadline = time.monotonic() + 10
    queue = QueueState.from_body(comfy.queue())
    while queue is not None and not queue.is_running(running) and time.monotonic() < deadline:
        time.sleep(0.05)
        queue = QueueState.from_body(comfy.queue())
    assert queue is not None and queue.busy
    assert queue.is_running(running) and queue.is_pending(waiting)
    assert (queue.running_count, queue.pending_count) == (1, 1)
    assert {prompt.prompt_id for prompt in queue.prompts} == {running, waiting}
    while QueueState.from_body(comfy.queue()).busy:  # type: ignore[union-attr]
        assert time.monotonic() < deadline + 20
        time.sleep(0.1)
    entry = HistoryEntry.from_entry(comfy.history(waiting))
    assert entry.status == "success" and not entry.failed and "3" in entry.outputs
    prompts = {prompt.prompt_id: prompt for prompt in history_prompts(comfy.get_json("/history"))}
    assert prompts[running].prompt["2"]["class_type"] == "StandinSleep"
    assert QueueState.from_body("nonsense") is None

    save = NodeInfo.from_entry(comfy.object_info("SaveImage")["SaveImage"])
    load = NodeInfo.from_entry(comfy.object_info("LoadImage")["LoadImage"])
    assert save is not None and save.output_node and "filename_prefix" in save.inputs
    assert load is not None and not load.output_node and load.inputs["image"].names_an_input_file
    assert NodeInfo.from_entry(None) is None


def test_a_refused_connection_is_its_own_type() -> None:
    comfy = ComfyClient("127.0.0.1", free_port(), timeout_s=2)
    with pytest.raises(ComfyRefused) as refused:
        comfy.queue()
    assert isinstance(refused.value, ComfyUnavailable) and refused.value.reason == "connection refused"
    with pytest.raises(ComfyRefused):
        ComfySocket(comfy, "refused").open()
    with pytest.raises(ComfyRefused):
        comfy.view("x.png")


def _parse(text: bytes) -> Frame:
    return Frame.from_message(decode_message(text))


def test_frame_parsing_skips_what_it_need_not_read() -> None:
    assert _parse(b'{"type": "progress_state", "data": {"nodes": {}}}').type == ACTIVITY_TYPE
    assert _parse(b"not json").type == ACTIVITY_TYPE
    assert _parse(b"[1, 2]").type == ACTIVITY_TYPE
    assert Frame.from_message(None) is ACTIVITY
    frame = _parse(b'{"type": "executing", "data": {"node": null, "prompt_id": "p"}}')
    assert frame.ends_prompt and frame.prompt_id == "p"
    failure = _parse(b'{"type": "execution_interrupted", "data": {"node_id": "3", "node_type": "K"}}').failure
    assert failure is not None and failure.interrupted and failure.where == "node 3 (K)"
    assert not isinstance(ComfyError("x"), ComfyUnavailable)
