"""The steps workflows-as-an-API adds to a job (docs/handler.md, "Workflows as an API"), as job.py calls them.

- `set_params`: the job's `params` set in its workflow (params.py), and the model files the
  prompt will load found (results.py), for job.py to start hashing them while the prompt runs
  (model_hashes.py);
- `api_results`: the result with its image sizes, seeds and model files added.
"""

from __future__ import annotations

from typing import Any

from . import params, results
from .catalog import Catalog
from .collect import Collected
from .runtime import Runtime
from .validate import JobInput


def set_params(
    rt: Runtime, catalog: Catalog, raw: dict[str, Any], job_input: JobInput, timeout_s: float
) -> tuple[dict[str, Any], list[results.LoadedModel]]:
    """The job's workflow with `input.params` set (raises JobError naming each bad one), and the models it loads."""
    images = {image.name for image in job_input.images}
    workflow = params.apply(
        job_input.workflow,
        raw.get("params"),
        catalog,
        timeout_s,
        lambda name: name in images or rt.config.layout.shared_input_file(name) is not None,
    )
    return workflow, results.model_files(workflow, catalog, rt.config.layout, timeout_s)


def api_results(
    rt: Runtime,
    catalog: Catalog,
    result: dict[str, Any],
    collected: Collected,
    workflow: dict[str, Any],
    loaded: list[results.LoadedModel],
    timeout_s: float,
) -> dict[str, Any]:
    """The result with image sizes (read while the files are still on disk), seeds and the loaded models' hashes.

    The models are also put first in this worker's record of recent models (for fresh workers' read-ahead)."""
    if rt.recent_models is not None:
        rt.recent_models.loaded(model.name for model in loaded)
    return {
        **results.with_image_sizes(result, collected),
        "seeds": results.seeds(workflow, catalog, timeout_s),
        "models": results.models(loaded, rt.model_hashes),
    }
