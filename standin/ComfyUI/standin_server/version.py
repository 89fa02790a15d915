"""Which ComfyUI release the stand-in plays, and what that changes: the one place for it.

STANDIN_COMFYUI_VERSION picks the release (0.3.64 when unset): 0.3.64, 0.38.1 or 0.47.1. Every behaviour that differs
between releases is a field of `Release`, read through `current()`; the rest of the code
asks the switch, never the version number.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace

VERSION_KNOB = "STANDIN_COMFYUI_VERSION"
DEFAULT_VERSION = "0.3.64"


@dataclass(frozen=True)
class Release:
    version: str
    frontend_version: str
    templates_version: str
    # argparse flag set (cli.py): "0.3" for 0.3.64's, "0.38" for 0.38.1's.
    flag_set: str
    # /system_stats: "posix" (os.name) or sys.platform; comfy_package_versions, deploy_environment.
    os_is_platform: bool
    extended_system_stats: bool
    # /features and the WebSocket feature_flags reply gain the newer keys (assets, node_replacements...).
    extended_features: bool
    # GET /view sends X-Content-Type-Options: nosniff with every file.
    view_nosniff: bool
    # POST /prompt: a client-chosen prompt_id must be a canonical lowercase UUID.
    canonical_prompt_ids: bool
    # Unknown class / missing class_type: "missing_node_type" (else "invalid_prompt").
    missing_node_type: bool
    # extra_data gains create_time (ms) and comfy_usage_source.
    stamps_create_time: bool
    # /object_info entries carry is_input_list, has_intermediate_output, search_aliases.
    object_info_v038_keys: bool
    # Routes /api/jobs, /api/jobs/{id}, /api/jobs/{id}/cancel, /api/jobs/cancel.
    jobs_routes: bool
    # The asset database (on unless --disable-assets), its lock, assets.seed.* frames, ids.
    asset_system: bool
    # File entries in outputs gain "metadata" (kind, width, height).
    media_metadata: bool
    # Audio files are "{prefix}_{counter:05}.{ext}" (no trailing underscore).
    audio_names_without_underscore: bool
    # The save counter also reads "{prefix}_NNNNN.ext" (the extension is cut before the digits).
    counter_reads_plain_names: bool
    # Cached HAS_INTERMEDIATE_OUTPUT nodes replay their `executed` frame after a successful run.
    intermediate_output_replay: bool
    # folder_paths resolves symlinks (realpath) before its containment checks, and refuses
    # annotated names (LoadImage) that leave their folder; 0.3.64 joins and reads.
    realpath_containment: bool
    # The default cache is RAM-pressure (results may be dropped), not classic.
    ram_pressure_cache_default: bool
    # A port already in use: one "Port N is already in use" line and exit 1 (else a traceback).
    port_in_use_message: bool
    # SaveImage and PreviewImage output their images (IMAGE, named "images"), a pass-through (0.26.0).
    save_nodes_pass_images: bool
    # Credentials for API nodes (server.py 5e14d797): a loopback peer's first `status` frame carries a
    # `credential_key`; replacing a live socket of the same clientId needs a `credential_auth` first
    # message; POST /credentials; X-Comfy-Client-Id/X-Comfy-Credential-Key checks on POST /prompt;
    # /features gains `comfy_api_credentials` for loopback requesters.
    credential_transport: bool = False
    # POST /prompt refuses a prompt_id already queued, running or in history: 409 (PromptQueue.put).
    unique_prompt_ids: bool = False
    # /system_stats `argv` has the values of path flags replaced by "*" (cli_args.redact_sensitive_argv).
    redacted_argv: bool = False
    # /api/jobs objects gain completion_status, has_errors, execution_error_count (and execution_errors).
    job_error_summary: bool = False


RELEASES: dict[str, Release] = {
    "0.3.64": Release(
        version="0.3.64",
        frontend_version="1.27.10",
        templates_version="0.1.94",
        flag_set="0.3",
        os_is_platform=False,
        extended_system_stats=False,
        extended_features=False,
        view_nosniff=False,
        canonical_prompt_ids=False,
        missing_node_type=False,
        stamps_create_time=False,
        object_info_v038_keys=False,
        jobs_routes=False,
        asset_system=False,
        media_metadata=False,
        audio_names_without_underscore=False,
        counter_reads_plain_names=False,
        intermediate_output_replay=False,
        realpath_containment=False,
        ram_pressure_cache_default=False,
        port_in_use_message=False,
        save_nodes_pass_images=False,
    ),
    "0.38.1": Release(
        version="0.38.1",
        frontend_version="1.53.6",
        templates_version="0.11.73",
        flag_set="0.38",
        os_is_platform=True,
        extended_system_stats=True,
        extended_features=True,
        view_nosniff=True,
        canonical_prompt_ids=True,
        missing_node_type=True,
        stamps_create_time=True,
        object_info_v038_keys=True,
        jobs_routes=True,
        asset_system=True,
        media_metadata=True,
        audio_names_without_underscore=True,
        counter_reads_plain_names=True,
        intermediate_output_replay=True,
        realpath_containment=True,
        ram_pressure_cache_default=True,
        port_in_use_message=True,
        save_nodes_pass_images=True,
    ),
}
# 0.47.1: 0.38.1 plus what the newest stored sources add (docs/comfyui-0.47.md).
RELEASES["0.47.1"] = replace(
    RELEASES["0.38.1"],
    version="0.47.1",
    credential_transport=True,
    unique_prompt_ids=True,
    redacted_argv=True,
    job_error_summary=True,
)

# ComfyUI's own comfy* packages in /system_stats comfy_package_versions (0.38.1's requirements.txt).
COMFY_PACKAGES_0_38 = (
    ("comfyui-frontend-package", "1.53.6"),
    ("comfyui-workflow-templates", "0.11.73"),
    ("comfyui-embedded-docs", "0.5.12"),
    ("comfy-kitchen", "0.2.36"),
    ("comfy-aimdo", "0.5.5"),
)


def requested(env: Mapping[str, str] | None = None) -> str:
    """The version STANDIN_COMFYUI_VERSION asks for (what comfyui_version.py reports)."""
    env = os.environ if env is None else env
    return env.get(VERSION_KNOB, "").strip() or DEFAULT_VERSION


_current: Release | None = None


def select(name: str) -> Release:
    """Make `name` the release played; an unknown one prints an error and exits 2."""
    global _current
    release = RELEASES.get(name)
    if release is None:
        known = ", ".join(RELEASES)
        sys.stderr.write(f"[ComfyUI stand-in] {VERSION_KNOB}={name!r} is not a version it plays (known: {known})\n")
        sys.exit(2)
    _current = release
    return release


def current() -> Release:
    """The release played (0.3.64 until select() is called, e.g. when a test imports a module)."""
    return _current if _current is not None else RELEASES[DEFAULT_VERSION]
