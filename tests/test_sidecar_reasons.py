"""Turning log tails and supervisor facts into a readiness reason."""

from __future__ import annotations

from healthcheck.reasons import MAX_LINE_CHARS, last_error_line, last_exit, last_meaningful_line, process_reason

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


def test_process_reason_counts_exits_in_words() -> None:
    assert (
        process_reason("comfyui", "BACKOFF", 1, "", 3, "ModuleNotFoundError: No module named 'torchsde'")
        == "comfyui exited with code 1 three times, restarting: ModuleNotFoundError: No module named 'torchsde'"
    )
    assert process_reason("comfyui", "EXITED", 137, "", 1, None) == "comfyui exited with code 137"
    assert process_reason("comfyui", "FATAL", 78, "", 2, "no torch in the venv") == (
        "comfyui exited with code 78 twice and supervisord gave up (FATAL): no torch in the venv"
    )
    assert process_reason("comfyui", "FATAL", 0, "can't find command '/x/python'", 3, None) == (
        "comfyui could not be started (FATAL): can't find command '/x/python'"
    )
    assert process_reason("comfyui", "STOPPED", 0, "", 0, "Stopped server") == "comfyui is STOPPED: Stopped server"
    assert "12 times" in process_reason("comfyui", "BACKOFF", 1, "", 12, None)


def test_an_exit_before_startsecs_is_an_exit_not_a_spawn_error() -> None:
    too_quick = "Exited too quickly (process log may have details)"
    # supervisord reports exitstatus 0 then: without its log the code is unknown.
    assert process_reason("comfyui", "BACKOFF", 0, too_quick, 1, "RuntimeError: boom") == (
        "comfyui exited during start-up, restarting: RuntimeError: boom"
    )
    assert process_reason("comfyui", "FATAL", 0, too_quick, 3, "RuntimeError: boom", "exited with code 1") == (
        "comfyui exited with code 1 three times and supervisord gave up (FATAL): RuntimeError: boom"
    )
    assert process_reason("comfyui", "EXITED", -1, "", 1, None) == "comfyui was killed by a signal"


SUPERVISORD_LOG = """\
2025-11-27 18:00:00,001 INFO spawned: 'comfyui' with pid 41
2025-11-27 18:00:00,002 INFO spawned: 'handler' with pid 42
2025-11-27 18:00:03,100 WARN exited: comfyui (exit status 1; not expected)
2025-11-27 18:00:04,100 INFO spawned: 'comfyui' with pid 43
2025-11-27 18:00:05,000 WARN exited: handler (exit status 3; expected)
2025-11-27 18:00:06,200 WARN exited: comfyui (terminated by SIGKILL; not expected)
"""


def test_last_exit_reads_supervisords_log() -> None:
    assert last_exit(SUPERVISORD_LOG, "comfyui") == "was killed by SIGKILL"
    assert last_exit(SUPERVISORD_LOG, "handler") == "exited with code 3"
    assert last_exit(SUPERVISORD_LOG.split("2025-11-27 18:00:04")[0], "comfyui") == "exited with code 1"
    assert last_exit(SUPERVISORD_LOG, "sidecar") is None
    assert last_exit("", "comfyui") is None
