"""ComfyUI's report of custom node packs that failed to import, and the run-dir file the handler reads.

The log texts are ComfyUI's own formats (nodes.py `load_custom_node` and
`init_external_custom_nodes`, read for 0.3.64 and for 0.38.1): a traceback logged with
`logging.warning(traceback.format_exc())` (so a blank line follows it), the "Cannot import"
line, and the "Import times for custom nodes:" summary printed before HTTP comes up.
"""

from __future__ import annotations

import json
from pathlib import Path

from worker_common.custom_nodes import (
    FILE_NAME,
    FailedPack,
    parse_import_report,
    read_failures,
    remove_failures,
    write_failures,
)

V0_3_64 = """\
starting ComfyUI from /runpod-volume/ComfyUI with /runpod-volume/ComfyUI/com_venv/bin/python: main.py (pid 41)
Checkpoint files will always be loaded safely.
Total VRAM 81079 MB, total RAM 2051612 MB
pytorch version: 2.7.0+cu128
Set vram state to: NORMAL_VRAM
Device: cuda:0 NVIDIA H100 80GB HBM3 : cudaMallocAsync
Using pytorch attention
Python version: 3.11.9 (main, Apr  6 2024, 17:59:24) [GCC 11.4.0]
ComfyUI version: 0.3.64
ComfyUI frontend version: 1.27.10
[Prompt Server] web root: /runpod-volume/ComfyUI/com_venv/lib/python3.11/site-packages/comfyui_frontend_package/static
Traceback (most recent call last):
  File "/runpod-volume/ComfyUI/nodes.py", line 2131, in load_custom_node
    module_spec.loader.exec_module(module)
  File "<frozen importlib._bootstrap_external>", line 940, in exec_module
  File "<frozen importlib._bootstrap>", line 241, in _call_with_frames_removed
  File "/runpod-volume/ComfyUI/custom_nodes/comfyui_controlnet_aux/__init__.py", line 2, in <module>
    from .utils import here, define_preprocessor_inputs, INPUT
  File "/runpod-volume/ComfyUI/custom_nodes/comfyui_controlnet_aux/utils.py", line 5, in <module>
    import cv2
ModuleNotFoundError: No module named 'cv2'

Cannot import /runpod-volume/ComfyUI/custom_nodes/comfyui_controlnet_aux module for custom nodes: No module named 'cv2'
Skip /runpod-volume/ComfyUI/custom_nodes/half_done module for custom nodes due to the lack of NODE_CLASS_MAPPINGS.

Import times for custom nodes:
   0.0 seconds: /runpod-volume/ComfyUI/custom_nodes/websocket_image_save.py
   0.0 seconds (IMPORT FAILED): /runpod-volume/ComfyUI/custom_nodes/half_done
   0.0 seconds (IMPORT FAILED): /runpod-volume/ComfyUI/custom_nodes/comfyui_controlnet_aux
   0.2 seconds: /runpod-volume/ComfyUI/custom_nodes/ComfyUI-KJNodes

Context impl SQLiteImpl.
Will assume non-transactional DDL.
No target revision found.
Starting server

To see the GUI go to: http://127.0.0.1:8188
"""

# 0.38.1: async load_custom_node, a V3 pack whose comfy_entrypoint raised, a single-file pack,
# colours from a terminal-aware handler and ComfyUI-Manager's timestamps in front of lines.
V0_38_1 = """\
starting ComfyUI from /workspace/ComfyUI with /workspace/ComfyUI/com_venv/bin/python: main.py (pid 97)
ComfyUI version: 0.38.1
[START] Security scan
2026-03-02T10:00:01.000001 - Traceback (most recent call last):
  File "/workspace/ComfyUI/nodes.py", line 2187, in load_custom_node
    module_spec.loader.exec_module(module)
  File "<frozen importlib._bootstrap_external>", line 999, in exec_module
  File "<frozen importlib._bootstrap>", line 488, in _call_with_frames_removed
  File "/workspace/ComfyUI/custom_nodes/ComfyUI-Impact-Pack/__init__.py", line 12, in <module>
    from .modules.impact import config
  File "/workspace/ComfyUI/custom_nodes/ComfyUI-Impact-Pack/modules/impact/config.py", line 3, in <module>
    import piexif
ModuleNotFoundError: No module named 'piexif'

2026-03-02T10:00:01.000002 - \x1b[33mCannot import /workspace/ComfyUI/custom_nodes/ComfyUI-Impact-Pack module \
for custom nodes: No module named 'piexif'\x1b[0m
2026-03-02T10:00:01.100000 - Error while calling comfy_entrypoint in /workspace/ComfyUI/custom_nodes/v3pack: \
boom in on_load
2026-03-02T10:00:01.200000 - Traceback (most recent call last):
  File "/workspace/ComfyUI/custom_nodes/lonely.py", line 1, in <module>
    raise ImportError()
ImportError

2026-03-02T10:00:01.200001 - Cannot import /workspace/ComfyUI/custom_nodes/lonely.py module for custom nodes: \

2026-03-02T10:00:02.000000 - \nImport times for custom nodes:
2026-03-02T10:00:02.000001 -    0.0 seconds: /workspace/ComfyUI/custom_nodes/websocket_image_save.py
2026-03-02T10:00:02.000002 -    0.0 seconds (IMPORT FAILED): /workspace/ComfyUI/custom_nodes/lonely.py
2026-03-02T10:00:02.000003 -    0.0 seconds (IMPORT FAILED): /workspace/ComfyUI/custom_nodes/v3pack
2026-03-02T10:00:02.000004 -    1.3 seconds (IMPORT FAILED): /workspace/ComfyUI/custom_nodes/ComfyUI-Impact-Pack
2026-03-02T10:00:02.000005 - \n
Starting server
"""


def test_the_0_3_64_report_names_each_failed_pack_with_its_error() -> None:
    report = parse_import_report(V0_3_64)
    assert report is not None
    assert report.imported == (
        "/runpod-volume/ComfyUI/custom_nodes/websocket_image_save.py",
        "/runpod-volume/ComfyUI/custom_nodes/ComfyUI-KJNodes",
    )
    assert report.failed == (
        FailedPack(
            "half_done",
            "/runpod-volume/ComfyUI/custom_nodes/half_done",
            "the lack of NODE_CLASS_MAPPINGS",
        ),
        FailedPack(
            "comfyui_controlnet_aux",
            "/runpod-volume/ComfyUI/custom_nodes/comfyui_controlnet_aux",
            "ModuleNotFoundError: No module named 'cv2'",
        ),
    )


def test_the_0_38_1_report_with_colours_timestamps_and_v3_packs() -> None:
    report = parse_import_report(V0_38_1)
    assert report is not None
    assert report.imported == ("/workspace/ComfyUI/custom_nodes/websocket_image_save.py",)
    assert [(p.name, p.error) for p in report.failed] == [
        ("lonely", "ImportError"),
        ("v3pack", "boom in on_load"),
        ("ComfyUI-Impact-Pack", "ModuleNotFoundError: No module named 'piexif'"),
    ]


def test_only_the_last_start_counts() -> None:
    """The text of two starts (a restart, or a log read from too far back): the later report wins."""
    later = V0_3_64.replace("(IMPORT FAILED): /runpod-volume/ComfyUI/custom_nodes/half_done", ": /x/half_done")
    later = later.replace(
        "   0.0 seconds (IMPORT FAILED): /runpod-volume/ComfyUI/custom_nodes/comfyui_controlnet_aux\n", ""
    )
    later = later.split("Cannot import")[0] + "\nImport times" + later.split("\nImport times")[1]
    report = parse_import_report(V0_3_64 + later)
    assert report is not None and report.failed == ()
    # ... and a failure of the earlier start gives no error text to a later one that has no reason logged.
    half_done = "/runpod-volume/ComfyUI/custom_nodes/half_done"
    bare = f"Import times for custom nodes:\n   0.0 seconds (IMPORT FAILED): {half_done}\n"
    report = parse_import_report(V0_3_64 + bare)
    assert report is not None and report.failed == (
        FailedPack("half_done", "/runpod-volume/ComfyUI/custom_nodes/half_done", ""),
    )


def test_a_log_without_a_report_gives_none() -> None:
    assert parse_import_report("") is None
    assert parse_import_report(V0_3_64.split("Import times")[0]) is None


def test_the_run_dir_file_round_trips(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert read_failures(run_dir) == []
    failed = parse_import_report(V0_3_64).failed
    path = write_failures(run_dir, failed, comfyui_pid=41)
    assert path == run_dir / FILE_NAME
    body = json.loads(path.read_text())
    assert body["comfyui_pid"] == 41 and body["written_at"] > 0
    assert body["failed"][1] == {
        "name": "comfyui_controlnet_aux",
        "path": "/runpod-volume/ComfyUI/custom_nodes/comfyui_controlnet_aux",
        "error": "ModuleNotFoundError: No module named 'cv2'",
    }
    assert read_failures(run_dir) == list(failed)
    assert [p.name for p in run_dir.iterdir()] == [FILE_NAME]  # no temporary file left behind
    path.write_text("{not json")
    assert read_failures(run_dir) == []
    remove_failures(run_dir)
    remove_failures(run_dir)
    assert not path.exists()
