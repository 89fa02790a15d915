"""Exit causes from supervisord's log, the reason sentence, and one process's own lines of a shared log."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from healthcheck.lives import Ending, last_ended, life_of, parse_lives
from healthcheck.program_logs import WINDOW_BYTES, comfyui_life, read_end, stamped_since
from healthcheck.reasons import MAX_LINE_CHARS, down_reason, last_error_line, last_meaningful_line

COMFY_CRASH = """\
Checkpoint files will always be loaded safely.
Total VRAM 81079 MB, total RAM 2051612 MB
pytorch version: 2.7.0+cu128
Traceback (most recent call last):
  File "/runpod-volume/ComfyUI/main.py", line 147, in <module>
    import execution
  File "/runpod-volume/ComfyUI/execution.py", line 15, in <module>
    import comfy.sd
  File "/runpod-volume/ComfyUI/comfy/k_diffusion/sampling.py", line 6, in <module>
    import torchsde
    ^^^^^^^^^^^^^^^
ModuleNotFoundError: No module named 'torchsde'

"""


def test_the_exception_line_of_a_traceback() -> None:
    assert last_meaningful_line(COMFY_CRASH) == "ModuleNotFoundError: No module named 'torchsde'"


def test_chained_tracebacks_give_the_last_exception() -> None:
    tail = (
        "Traceback (most recent call last):\n"
        '  File "a.py", line 1, in <module>\n'
        "KeyError: 'x'\n"
        "\n"
        "During handling of the above exception, another exception occurred:\n"
        "\n"
        "Traceback (most recent call last):\n"
        '  File "b.py", line 2, in <module>\n'
        "RuntimeError: CUDA error: out of memory\n"
    )
    assert last_meaningful_line(tail) == "RuntimeError: CUDA error: out of memory"


def test_a_multiline_exception_message_keeps_its_first_line() -> None:
    tail = (
        "Traceback (most recent call last):\n"
        '  File "a.py", line 1, in <module>\n'
        "RuntimeError: Error(s) in loading state_dict:\n"
        "\tsize mismatch for weight\n"
    )
    assert last_meaningful_line(tail) == "RuntimeError: Error(s) in loading state_dict:"


def test_without_a_traceback_the_last_non_blank_line() -> None:
    tail = "Import times for custom nodes:\n   0.0 seconds: /x/websocket_image_save.py\n\nStarting server\n\n\n"
    assert last_meaningful_line(tail) == "Starting server"


def test_a_truncated_tail_drops_its_partial_first_line() -> None:
    assert last_meaningful_line("rror: half a line", overflow=True) is None
    assert last_meaningful_line("rror: half a line\nKilled", overflow=True) == "Killed"


def test_ansi_colours_and_carriage_returns_are_cleaned() -> None:
    tail = "\x1b[31mERROR\x1b[0m cannot load model\r\n100%|#####| 10/10\r"
    assert last_meaningful_line(tail) == "100%|#####| 10/10"
    assert last_error_line(tail) == "ERROR cannot load model"


def test_empty_logs_give_nothing() -> None:
    assert last_meaningful_line("") is None
    assert last_meaningful_line("\n\n   \n") is None
    assert last_error_line("all good\nStarting server\n") is None


def test_very_long_lines_are_shortened() -> None:
    line = last_meaningful_line("ValueError: " + "x" * 5000)
    assert line is not None and len(line) == MAX_LINE_CHARS and line.endswith("…")


def test_last_error_line_finds_an_error_before_later_chatter() -> None:
    tail = COMFY_CRASH + "some later line\nanother one\n"
    assert last_error_line(tail) == "ModuleNotFoundError: No module named 'torchsde'"
    assert last_error_line("x\nexception: disk full\nok\n") == "exception: disk full"


def test_down_reasons_name_the_exit_and_count_it_in_words() -> None:
    exit_1 = Ending(code=1, signal=None)
    assert down_reason("comfyui", "BACKOFF", "Bad exit code 1", 3, exit_1, 1) == (
        "comfyui exited with code 1 three times, restarting"
    )
    assert down_reason("comfyui", "EXITED", "", 1, None, 137) == "comfyui exited with code 137"
    assert down_reason("comfyui", "FATAL", "", 2, Ending(78, None), 78, "launch check: no torch in the venv") == (
        "comfyui exited with code 78 (launch check: no torch in the venv) twice and supervisord gave up (FATAL)"
    )
    assert down_reason("comfyui", "STOPPED", "", 0, None) == "comfyui is STOPPED"
    assert down_reason("comfyui", "BACKOFF", "Bad exit code 1", 1, exit_1, 1, pid=41) == (
        "comfyui (pid 41) exited with code 1, restarting"
    )
    assert down_reason("comfyui", "BACKOFF", "Bad exit code 1", 2, exit_1, 1, pid=43).startswith("comfyui exited")
    assert "12 times" in down_reason("comfyui", "BACKOFF", "", 12, exit_1)


def test_a_signal_is_named_and_sigkill_gets_the_oom_hint() -> None:
    killed = Ending(code=None, signal="SIGKILL")
    assert down_reason("comfyui", "EXITED", "Bad exit code -1", 1, killed, -1) == (
        "comfyui was killed (SIGKILL: often the kernel's out-of-memory killer)"
    )
    assert Ending(None, "SIGSEGV", core_dumped=True).describe().startswith("crashed (SIGSEGV: a segmentation fault")
    assert Ending(None, "SIGSEGV", core_dumped=True).describe().endswith(", core dumped")
    assert Ending(None, "SIGTERM").describe() == "was killed by SIGTERM"
    # Without supervisord's log there is only its exitstatus: -1 is "a signal", never a spawn failure.
    assert down_reason("comfyui", "EXITED", "Bad exit code -1", 1, None, -1) == "comfyui was killed by a signal"


def test_could_not_be_started_only_for_a_real_spawn_failure() -> None:
    assert down_reason("comfyui", "FATAL", "can't find command '/x/python'", 3, None) == (
        "comfyui could not be started (FATAL): can't find command '/x/python'"
    )
    too_quick = "Exited too quickly (process log may have details)"
    # supervisord reports no exit code for an exit before startsecs: its log has it.
    assert down_reason("comfyui", "BACKOFF", too_quick, 1, None) == "comfyui exited during start-up, restarting"
    assert down_reason("comfyui", "FATAL", too_quick, 3, Ending(1, None)) == (
        "comfyui exited with code 1 three times during start-up and supervisord gave up (FATAL)"
    )
    for spawnerr in (too_quick, "Bad exit code 1", "Bad exit code -1"):
        assert "could not be started" not in down_reason("comfyui", "BACKOFF", spawnerr, 1, Ending(1, None))


SUPERVISORD_LOG = """\
2025-11-27 17:00:00,000 INFO supervisord started with pid 6
2025-11-27 17:00:00,100 INFO spawned: 'comfyui' with pid 41
2025-11-27 17:10:00,000 WARN exited: comfyui (terminated by SIGSEGV (core dumped); not expected)
2025-11-27 18:00:00,000 CRIT Supervisor is running as root.
2025-11-27 18:00:00,001 INFO supervisord started with pid 7
2025-11-27 18:00:00,101 INFO spawned: 'comfyui' with pid 41
2025-11-27 18:00:00,102 INFO spawned: 'handler' with pid 42
2025-11-27 18:00:03,100 WARN exited: comfyui (exit status 1; not expected)
2025-11-27 18:00:04,100 INFO spawned: 'comfyui' with pid 43
2025-11-27 18:00:05,000 WARN exited: handler (exit status 3; expected)
2025-11-27 18:00:06,200 WARN exited: comfyui (terminated by SIGKILL; not expected)
2025-11-27 18:00:06,300 INFO spawned: 'comfyui' with pid 44
2025-11-27 18:00:09,000 INFO waiting for comfyui to stop
2025-11-27 18:00:09,500 INFO stopped: comfyui (terminated by SIGINT)
"""


def test_lives_come_from_supervisords_log_since_it_last_started() -> None:
    lives = parse_lives(SUPERVISORD_LOG)
    comfyui = lives["comfyui"]
    assert [life.pid for life in comfyui] == [41, 43, 44]  # the earlier run's pid 41 and its SIGSEGV are gone
    assert comfyui[0].ending == Ending(1, None, at=comfyui[0].ending.at)
    assert comfyui[1].ending is not None and comfyui[1].ending.signal == "SIGKILL"
    assert comfyui[1].ending.at - comfyui[1].spawned_at == pytest.approx(2.1)
    assert comfyui[2].ending is not None and comfyui[2].ending.stopped
    assert lives["handler"][0].ending == Ending(3, None, at=lives["handler"][0].ending.at)
    assert life_of(lives, "comfyui", 43) is comfyui[1]
    assert life_of(lives, "comfyui", 99) is None
    # The last end that was not asked for; an orderly stop is not one.
    assert last_ended(lives, "comfyui") is comfyui[1]
    assert last_ended(lives, "comfyui", since=comfyui[1].ending.at + 1) is None
    assert parse_lives("") == {}


def test_an_end_whose_spawn_was_not_read_is_ignored() -> None:
    tail = SUPERVISORD_LOG.split("2025-11-27 18:00:04,100")[1]
    lives = parse_lives(tail)
    assert [(life.pid, life.ending.stopped if life.ending else None) for life in lives["comfyui"]] == [(44, True)]


def launch(pid: int) -> str:
    return f"starting ComfyUI from /runpod-volume/ComfyUI with /venv/bin/python: main.py --port 8188  (pid {pid})\n"


def test_a_comfyui_life_is_read_from_its_own_launch_line(tmp_path: Path) -> None:
    log = tmp_path / "comfyui.log"
    log.write_text(
        "an earlier run\n"
        + launch(41)
        + "!!! Exception during processing !!! CUDA out of memory (pretend)\n"
        + launch(97)
        + "Starting server\n"
    )
    life = comfyui_life(log, 97, running=True)
    assert life is not None and life.whole
    assert life.text.startswith(launch(97)) and "out of memory" not in life.text
    # Another pid's launch line is the newest: pid 41's life is over, 98 has not printed its line yet.
    assert comfyui_life(log, 41, running=False) is None
    assert comfyui_life(log, 98, running=False) is None


def test_a_life_longer_than_the_window_is_the_whole_window_only_while_running(tmp_path: Path) -> None:
    log = tmp_path / "comfyui.log"
    filler = "Prompt executed in 0.01 seconds\n" * (WINDOW_BYTES // 20)
    log.write_text("old life's error: RuntimeError\n" + launch(41) + filler + "the end\n")
    life = comfyui_life(log, 41, running=True)
    assert life is not None and not life.whole
    assert life.text.startswith("Prompt executed") and life.text.endswith("the end\n")
    assert comfyui_life(log, 41, running=False) is None
    # A log that never had a launch line (ComfyUI started some other way): nothing is attributed.
    log.write_text("RuntimeError: from who knows which process\n")
    assert comfyui_life(log, 41, running=True) is None
    assert comfyui_life(tmp_path / "missing.log", 41, running=True) is None


def test_read_end_starts_on_a_line_and_survives_split_characters(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_bytes(b"first line\n" + "ünïcödé █ progress\n".encode() * 3)
    text, start = read_end(log, 30)
    assert text == "ünïcödé █ progress\n" and start == log.stat().st_size - len(text.encode())
    assert read_end(log, 10_000) == (log.read_text(), 0)


def test_a_time_stamped_log_is_cut_at_the_lifes_spawn() -> None:
    text = (
        "2025-11-27 18:00:01,000 ERROR handler: job a failed: RuntimeError: CUDA out of memory (pretend)\n"
        "Traceback (most recent call last):\n"
        "  File x\n"
        "2025-11-27 18:00:05,000 INFO handler: waiting for ComfyUI\n"
        "2025-11-27 18:00:06,000 ERROR handler: job b failed\n"
        "  a continuation line\n"
    )
    spawned = time.mktime(time.strptime("2025-11-27 18:00:04", "%Y-%m-%d %H:%M:%S"))
    kept = stamped_since(text, spawned)
    assert "out of memory" not in kept and "Traceback" not in kept
    assert kept.splitlines() == text.splitlines()[3:]
