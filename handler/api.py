"""The steps workflows-as-an-API adds to a job (docs/handler.md, "Workflows as an API"), as job.py calls them.

- `set_params`: the job's `params` set in its workflow (params.py), and the model files the
  prompt will load found, their hashing started while the prompt runs (results.py, model_hashes.py);
- `add_results`: the image sizes, seeds and model files added to the result.
"""

from __future__ import annotations

from typing import Any

from . import params, results
from .collect import Collected
from .runtime import Runtime
from .validate import JobInput


def set_params(rt: Runtime, raw: dict[str, Any], job_input: JobInput, timeout_s: float) -> list[results.LoadedModel]:
    """Set `input.params` in the job's workflow (raises JobError naming each bad one); the models it loads."""
    images = {image.name for image in job_input.images}
    job_input.workflow = params.apply(
        job_input.workflow,
        raw.get("params"),
        rt.catalog,
        timeout_s,
        lambda name: name in images or rt.config.layout.shared_input_file(name) is not None,
    )
    loaded = results.model_files(job_input.workflow, rt.catalog, rt.config.layout, timeout_s)
    rt.model_hashes.warm([model.path for model in loaded])
    return loaded


def add_results(
    rt: Runtime,
    result: dict[str, Any],
    collected: Collected,
    job_input: JobInput,
    loaded: list[results.LoadedModel],
    timeout_s: float,
) -> None:
    """Image sizes (while the files are still on disk), seeds and the loaded models' hashes."""
    results.add_image_sizes(result, collected)
    result["seeds"] = results.seeds(job_input.workflow, rt.catalog, timeout_s)
    result["models"] = results.models(loaded, rt.model_hashes)
    if rt.recent_models is not None:
        rt.recent_models.loaded(model.name for model in loaded)
