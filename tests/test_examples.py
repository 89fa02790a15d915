"""Static checks for examples/: API-format workflows and full RunPod request bodies.

Submitting the model-free workflows (``model_free_workflows()``) to the stand-in ComfyUI is a
separate acceptance test; this file only checks that the files are well formed.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
REQUESTS = EXAMPLES / "requests"
MODELS_MD = EXAMPLES / "MODELS.md"

OUTPUT_NODE_CLASSES = {"SaveImage", "PreviewImage", "SaveAnimatedWEBP", "PreviewAny", "SaveAudio", "SaveVideo"}
# Top-level keys of the UI ("Save", not "Export (API)") workflow format.
UI_FORMAT_KEYS = {"nodes", "links", "last_node_id", "last_link_id", "groups", "version"}
# Inputs of loader nodes that name a model file under models/.
MODEL_FILE_INPUTS = {
    "ckpt_name",
    "unet_name",
    "clip_name",
    "clip_name1",
    "clip_name2",
    "clip_name3",
    "vae_name",
    "lora_name",
}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


@dataclass(frozen=True)
class Spec:
    """Inputs (name -> type) and output types of a ComfyUI node class."""

    required: dict[str, str]
    outputs: tuple[str, ...]
    optional: dict[str, str] = field(default_factory=dict)


# The node classes the examples use, as current ComfyUI defines them. Widget inputs have a widget
# type (INT, FLOAT, STRING, BOOLEAN, COMBO) and may also be linked; socket inputs must be links.
NODE_SPECS: dict[str, Spec] = {
    "CheckpointLoaderSimple": Spec({"ckpt_name": "COMBO"}, ("MODEL", "CLIP", "VAE")),
    "UNETLoader": Spec({"unet_name": "COMBO", "weight_dtype": "COMBO"}, ("MODEL",)),
    "DualCLIPLoader": Spec(
        {"clip_name1": "COMBO", "clip_name2": "COMBO", "type": "COMBO"}, ("CLIP",), optional={"device": "COMBO"}
    ),
    "TripleCLIPLoader": Spec({"clip_name1": "COMBO", "clip_name2": "COMBO", "clip_name3": "COMBO"}, ("CLIP",)),
    "VAELoader": Spec({"vae_name": "COMBO"}, ("VAE",)),
    "CLIPTextEncode": Spec({"text": "STRING", "clip": "CLIP"}, ("CONDITIONING",)),
    "FluxGuidance": Spec({"conditioning": "CONDITIONING", "guidance": "FLOAT"}, ("CONDITIONING",)),
    "ModelSamplingSD3": Spec({"model": "MODEL", "shift": "FLOAT"}, ("MODEL",)),
    "EmptyLatentImage": Spec({"width": "INT", "height": "INT", "batch_size": "INT"}, ("LATENT",)),
    "EmptySD3LatentImage": Spec({"width": "INT", "height": "INT", "batch_size": "INT"}, ("LATENT",)),
    "KSampler": Spec(
        {
            "model": "MODEL",
            "seed": "INT",
            "steps": "INT",
            "cfg": "FLOAT",
            "sampler_name": "COMBO",
            "scheduler": "COMBO",
            "positive": "CONDITIONING",
            "negative": "CONDITIONING",
            "latent_image": "LATENT",
            "denoise": "FLOAT",
        },
        ("LATENT",),
    ),
    "VAEDecode": Spec({"samples": "LATENT", "vae": "VAE"}, ("IMAGE",)),
    "SaveImage": Spec({"images": "IMAGE", "filename_prefix": "STRING"}, ()),
    "PreviewImage": Spec({"images": "IMAGE"}, ()),
    # model-free nodes (also implemented by the stand-in ComfyUI)
    "EmptyImage": Spec({"width": "INT", "height": "INT", "batch_size": "INT", "color": "INT"}, ("IMAGE",)),
    "LoadImage": Spec({"image": "COMBO"}, ("IMAGE", "MASK")),
    "ImageInvert": Spec({"image": "IMAGE"}, ("IMAGE",)),
    "ImageBlur": Spec({"image": "IMAGE", "blur_radius": "INT", "sigma": "FLOAT"}, ("IMAGE",)),
    "SaveAnimatedWEBP": Spec(
        {
            "images": "IMAGE",
            "filename_prefix": "STRING",
            "fps": "FLOAT",
            "lossless": "BOOLEAN",
            "quality": "INT",
            "method": "COMBO",
        },
        (),
    ),
    "PrimitiveString": Spec({"value": "STRING"}, ("STRING",)),
    "StringConcatenate": Spec({"string_a": "STRING", "string_b": "STRING", "delimiter": "STRING"}, ("STRING",)),
    "PreviewAny": Spec({"source": "*"}, ()),
    "EmptyAudio": Spec({"duration": "FLOAT", "sample_rate": "INT", "channels": "INT"}, ("AUDIO",)),
    "SaveAudio": Spec({"audio": "AUDIO", "filename_prefix": "STRING"}, ()),
}
STANDIN_NODE_CLASSES = {
    "EmptyImage",
    "LoadImage",
    "ImageInvert",
    "ImageBlur",
    "SaveImage",
    "PreviewImage",
    "SaveAnimatedWEBP",
    "PrimitiveString",
    "StringConcatenate",
    "PreviewAny",
    "EmptyAudio",
    "SaveAudio",
}

# Top-level keys RunPod accepts in a /run or /runsync body.
RUNPOD_BODY_KEYS = {"input", "webhook", "policy", "s3Config"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r"^data:image/png;base64,", re.IGNORECASE)


# --------------------------------------------------------------------------- helpers


def workflow_files() -> list[Path]:
    """Every API-format workflow directly under examples/."""
    return sorted(EXAMPLES.glob("*.json"))


def model_free_workflows() -> list[Path]:
    """The workflows that need no model files (stand-in ComfyUI, or a real ComfyUI without models)."""
    return sorted(EXAMPLES.glob("standin-*.json"))


def model_workflows() -> list[Path]:
    free = set(model_free_workflows())
    return [p for p in workflow_files() if p not in free]


def request_files() -> list[Path]:
    return sorted(REQUESTS.glob("*.json"))


def load_json(path: Path):
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def is_link(value) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def widget_value_ok(kind: str, value) -> bool:
    if kind == "INT":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "FLOAT":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "BOOLEAN":
        return isinstance(value, bool)
    return isinstance(value, str)  # STRING, COMBO


def workflow_errors(wf) -> list[str]:
    """Problems with an API-format workflow; empty when it is valid."""
    if not isinstance(wf, dict) or not wf:
        return ["workflow must be a non-empty object of node id -> node"]
    ui_keys = UI_FORMAT_KEYS & set(wf)
    if ui_keys:
        return [f"UI-format keys {sorted(ui_keys)}: export with 'Export (API)', not 'Save'"]
    errors: list[str] = []
    for node_id, node in wf.items():
        where = f"node {node_id!r}"
        if not isinstance(node, dict):
            errors.append(f"{where}: not an object")
            continue
        class_type, inputs = node.get("class_type"), node.get("inputs")
        if not isinstance(class_type, str) or not class_type:
            errors.append(f"{where}: class_type must be a non-empty string")
            continue
        where = f"node {node_id!r} ({class_type})"
        if not isinstance(inputs, dict):
            errors.append(f"{where}: inputs must be an object")
            continue
        meta = node.get("_meta")
        if meta is not None and not (isinstance(meta, dict) and isinstance(meta.get("title"), str)):
            errors.append(f"{where}: _meta must be an object with a string title")
        for name, value in inputs.items():
            if is_link(value):
                src_id, index = value
                if src_id not in wf:
                    errors.append(f"{where}: input {name!r} links to missing node {src_id!r}")
                elif index < 0:
                    errors.append(f"{where}: input {name!r} has negative output index {index}")
                elif src_id == node_id:
                    errors.append(f"{where}: input {name!r} links to its own node")
        spec = NODE_SPECS.get(class_type)
        if spec is not None:
            errors += spec_errors(wf, where, spec, inputs)
    errors += cycle_errors(wf)
    if not any(isinstance(n, dict) and n.get("class_type") in OUTPUT_NODE_CLASSES for n in wf.values()):
        errors.append(f"no output node (one of {sorted(OUTPUT_NODE_CLASSES)})")
    return errors


def spec_errors(wf, where: str, spec: Spec, inputs: dict) -> list[str]:
    errors = []
    known = {**spec.required, **spec.optional}
    missing = set(spec.required) - set(inputs)
    unknown = set(inputs) - set(known)
    if missing:
        errors.append(f"{where}: missing inputs {sorted(missing)}")
    if unknown:
        errors.append(f"{where}: unknown inputs {sorted(unknown)}")
    for name, value in inputs.items():
        kind = known.get(name)
        if kind is None:
            continue
        if is_link(value):
            src = wf.get(value[0])
            src_spec = NODE_SPECS.get(src.get("class_type")) if isinstance(src, dict) else None
            if src_spec is None:
                continue
            if value[1] >= len(src_spec.outputs):
                errors.append(
                    f"{where}: input {name!r} uses output {value[1]} of {src['class_type']}, "
                    f"which has {len(src_spec.outputs)} outputs"
                )
                continue
            out_type = src_spec.outputs[value[1]]
            if kind not in ("*", "COMBO") and out_type != kind:
                errors.append(f"{where}: input {name!r} wants {kind}, gets {out_type} from {src['class_type']}")
        elif kind not in WIDGET_TYPES:
            errors.append(f"{where}: input {name!r} ({kind}) must be a link [node_id, output_index]")
        elif not widget_value_ok(kind, value):
            errors.append(f"{where}: input {name!r} should be {kind}, got {value!r}")
    return errors


def cycle_errors(wf: dict) -> list[str]:
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node_id: str) -> bool:
        if state.get(node_id) == 2:
            return False
        if state.get(node_id) == 1:
            return True
        state[node_id] = 1
        node = wf.get(node_id)
        inputs = node.get("inputs") if isinstance(node, dict) else None
        for value in (inputs or {}).values():
            if is_link(value) and value[0] in wf and visit(value[0]):
                return True
        state[node_id] = 2
        return False

    return [f"cycle through node {n!r}" for n in wf if visit(n)][:1]


def nodes_of(wf: dict, class_type: str) -> list[dict]:
    return [n for n in wf.values() if isinstance(n, dict) and n.get("class_type") == class_type]


def decode_png(data: str) -> bytes:
    raw = base64.b64decode(DATA_URI.sub("", data), validate=True)
    assert raw.startswith(PNG_SIGNATURE), "not PNG data"
    with Image.open(io.BytesIO(raw)) as img:
        img.verify()
    with Image.open(io.BytesIO(raw)) as img:
        assert img.format == "PNG"
        img.load()
    return raw


def ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(EXAMPLES)) for p in paths]


# --------------------------------------------------------------------------- the checker itself


def test_checker_catches_broken_workflows():
    good = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    assert workflow_errors(good) == []
    assert workflow_errors({"nodes": [], "links": []})
    dangling = json.loads(json.dumps(good))
    dangling["2"]["inputs"]["images"] = ["9", 0]
    assert any("missing node" in e for e in workflow_errors(dangling))
    no_output = {"1": good["1"]}
    assert any("no output node" in e for e in workflow_errors(no_output))
    wrong_type = json.loads(json.dumps(good))
    wrong_type["1"]["inputs"]["width"] = "8"
    assert any("should be INT" in e for e in workflow_errors(wrong_type))
    typo = json.loads(json.dumps(good))
    typo["2"]["inputs"]["filename"] = typo["2"]["inputs"].pop("filename_prefix")
    assert len(workflow_errors(typo)) == 2  # missing filename_prefix, unknown filename
    bad_index = json.loads(json.dumps(good))
    bad_index["2"]["inputs"]["images"] = ["1", 1]
    assert any("has 1 outputs" in e for e in workflow_errors(bad_index))
    cyclic = {
        "1": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    assert any("cycle" in e for e in workflow_errors(cyclic))


# --------------------------------------------------------------------------- workflows


def test_expected_files_exist():
    names = {p.name for p in workflow_files()}
    assert {"flux1-schnell.json", "flux1-dev.json", "sdxl.json", "sd3.json"} <= names
    assert {p.name for p in model_free_workflows()} >= {
        "standin-empty-image.json",
        "standin-invert-input.json",
        "standin-text.json",
        "standin-batch.json",
    }
    assert {p.name for p in request_files()} >= {"empty-image.json", "invert-upload.json"}
    assert MODELS_MD.is_file()
    assert (EXAMPLES / "README.md").is_file()


@pytest.mark.parametrize("path", workflow_files(), ids=ids(workflow_files()))
def test_workflow_is_valid_api_format(path: Path):
    wf = load_json(path)
    assert workflow_errors(wf) == []
    for node_id, node in wf.items():
        assert isinstance(node.get("_meta", {}).get("title"), str), f"node {node_id}: no _meta.title"


@pytest.mark.parametrize("path", model_free_workflows(), ids=ids(model_free_workflows()))
def test_model_free_workflow_uses_only_standin_nodes(path: Path):
    wf = load_json(path)
    classes = {n["class_type"] for n in wf.values()}
    assert classes <= STANDIN_NODE_CLASSES, f"not implemented by the stand-in: {classes - STANDIN_NODE_CLASSES}"
    assert not [k for n in wf.values() for k in n["inputs"] if k in MODEL_FILE_INPUTS]


@pytest.mark.parametrize("path", model_workflows(), ids=ids(model_workflows()))
def test_model_files_are_listed_in_models_md(path: Path):
    wf = load_json(path)
    models_md = MODELS_MD.read_text(encoding="utf-8")
    files = {v for n in wf.values() for k, v in n["inputs"].items() if k in MODEL_FILE_INPUTS}
    assert files, "a model workflow should load at least one model file"
    assert path.name in models_md, f"{path.name} has no section in {MODELS_MD.name}"
    missing = sorted(f for f in files if f"`{f}`" not in models_md)
    assert not missing, f"model files not listed in {MODELS_MD.name}: {missing}"


# --------------------------------------------------------------------------- request bodies


@pytest.mark.parametrize("path", request_files(), ids=ids(request_files()))
def test_request_body(path: Path):
    body = load_json(path)
    assert isinstance(body, dict) and "input" in body, 'a RunPod request body is {"input": {...}}'
    assert set(body) <= RUNPOD_BODY_KEYS, f"unexpected top-level keys: {sorted(set(body) - RUNPOD_BODY_KEYS)}"
    job = body["input"]
    assert isinstance(job, dict)
    wf = job.get("workflow")
    assert workflow_errors(wf) == []

    images = job.get("images", [])
    assert isinstance(images, list)
    names = []
    for i, item in enumerate(images):
        assert isinstance(item, dict) and set(item) == {"name", "image"}, f"images[{i}]: want name and image"
        name, data = item["name"], item["image"]
        assert isinstance(name, str) and name and "/" not in name and "\\" not in name, f"images[{i}]: bad name"
        assert isinstance(data, str)
        try:
            decode_png(data)
        except (binascii.Error, ValueError, OSError, AssertionError) as exc:
            pytest.fail(f"images[{i}] ({name}): invalid base64 PNG: {exc}")
        names.append(name)
    assert len(names) == len(set(names)), "duplicate image names"

    loaded = {n["inputs"]["image"] for n in nodes_of(wf, "LoadImage")}
    unused = sorted(set(names) - loaded)
    assert not unused, f"uploaded images no LoadImage reads: {unused}"
    # Examples are self-contained: every LoadImage reads an image that the request uploads.
    not_uploaded = sorted(loaded - set(names))
    assert not not_uploaded, f"LoadImage reads images the request does not upload: {not_uploaded}"


def test_invert_upload_request_uses_input_1():
    job = load_json(REQUESTS / "invert-upload.json")["input"]
    assert [i["name"] for i in job["images"]] == ["input-1.png"]
    assert [n["inputs"]["image"] for n in nodes_of(job["workflow"], "LoadImage")] == ["input-1.png"]
    raw = decode_png(job["images"][0]["image"])
    with Image.open(io.BytesIO(raw)) as img:
        assert img.size[0] <= 64 and img.size[1] <= 64, "keep the example image tiny"
