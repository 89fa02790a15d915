"""The image, read from the Dockerfile and .dockerignore: what holds on every base, the CUDA one included.

tests/test_container.py builds and runs it on a stand-in base.

hadolint lints it; Docker's own .dockerignore rules (docker-py's `exclude_paths`, what the
Docker CLI applies) compute the build context; the rest checks the facts users rely on: a
base pinned by digest, Python packages from the lock with hashes, the worker's tools on PATH.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
BASE_TAG = "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04"
WORKER_HOME = "/opt/comfy-worker"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args_of(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


def parse_stages(text: str) -> list[Stage]:
    """The Dockerfile's stages, each with its instructions (continuations joined, comments dropped).

    What comes before the first FROM (the global ARGs) is the first item, a stage named "global".
    """
    joined = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", text)
    stages: list[Stage] = [Stage("global", "")]
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else f"stage{len(stages)}"
            stages.append(Stage(name, words[0]))
        else:
            stages[-1].instructions.append((instruction, " ".join(args.split())))
    return stages


def global_args(stages: list[Stage]) -> dict[str, str]:
    """The ARGs before the first FROM, with their defaults."""
    return dict(args.partition("=")[::2] for args in stages[0].args_of("ARG"))


@pytest.fixture(scope="module")
def all_stages() -> list[Stage]:
    return parse_stages(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def stages(all_stages: list[Stage]) -> list[Stage]:
    return all_stages[1:]


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_hadolint_passes() -> None:
    result = subprocess.run([str(REPO / ".venv" / "bin" / "hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_pinned_by_digest_with_its_tag_named(all_stages: list[Stage], stages: list[Stage]) -> None:
    names = {stage.name for stage in stages}
    defaults = global_args(all_stages)
    external = [stage.base for stage in stages if stage.base not in names]
    assert external == ["${BASE_IMAGE}"], "the base is the BASE_IMAGE build argument, for stand-in bases"
    for base in [defaults["BASE_IMAGE"]]:
        assert re.fullmatch(r"[\w./-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}", base), f"{base} is not pinned by digest"
    assert f"# {BASE_TAG}" in DOCKERFILE.read_text(), "the comment above FROM should name the tag the digest pins"


def test_every_stage_declares_the_arguments_it_uses(all_stages: list[Stage], stages: list[Stage]) -> None:
    """An ARG before FROM reaches only FROM lines: a stage that uses one must declare it again (or it is empty)."""
    arguments = set(global_args(all_stages))
    assert "PYTHON_VERSION" in arguments
    for stage in stages:
        declared = {args.partition("=")[0] for args in stage.args_of("ARG")}
        for name, args in stage.instructions:
            used = set(re.findall(r"\$\{?(\w+)", args)) & arguments
            assert used <= declared, f"stage {stage.name}: {name} {args} uses {sorted(used - declared)} undeclared"


def test_python_comes_from_where_each_base_has_it(stages: list[Stage]) -> None:
    [install] = [args for args in stages[0].args_of("RUN") if "python${PYTHON_VERSION}" in args]
    assert ". /etc/os-release" in install and "ppa:deadsnakes/ppa" in install
    assert 'if [[ "$ID" == ubuntu ]]' in install, "deadsnakes only on Ubuntu; Debian 12 has python3.11 itself"
    assert 'test -x "/usr/bin/python${PYTHON_VERSION}"' in install, "the path every volume venv links to"


def test_python_packages_come_from_the_lock_with_hashes(stages: list[Stage]) -> None:
    runs = [args.replace('"', "") for stage in stages for args in stage.args_of("RUN")]
    installs = [args for args in runs if "pip install" in args]
    assert installs, "the image installs no Python packages"
    for args in installs:
        words = shlex.split(args)
        assert "--require-hashes" in words and "--no-deps" in words, args
        assert words[words.index("-r") + 1].endswith("requirements.lock"), args
        assert "pip check" in args, "the lock's completeness is checked where it is installed"
    copied = " ".join(args for stage in stages for args in stage.args_of("COPY"))
    assert "requirements.lock" in copied
    assert "requirements.txt" not in copied, "the image must install the lock, not the loose requirements"


def test_runtime_image_gets_the_venv_not_the_build_tools(stages: list[Stage], final: Stage) -> None:
    builder_names = {stage.name for stage in stages[:-1]}
    venv_copies = [args for args in final.args_of("COPY") if args.startswith("--from=")]
    assert any(args.split()[0].removeprefix("--from=") in builder_names and "/opt/venv" in args for args in venv_copies)
    final_runs = " ".join(final.args_of("RUN"))
    assert "pip install" not in final_runs and "apt-get install" not in final_runs
    by_name = {stage.name: stage for stage in stages}
    chain, name = [], final.base
    while name in by_name:
        chain.append(by_name[name])
        name = by_name[name].base
    runs = [args for stage in chain for args in stage.args_of("RUN")]
    for build_only in ("build-essential", "-venv"):
        assert not any(build_only in args for args in runs), f"{build_only} reaches the final image"
    for helper in ("software-properties-common", "gpg-agent"):
        purged = re.compile(rf"purge -y [^&]*\b{helper}\b")
        assert all(purged.search(args) or helper not in args for args in runs), f"{helper} is not purged"


def test_the_worker_tools_are_on_path_and_the_healthcheck_uses_them(final: Stage) -> None:
    [workdir] = final.args_of("WORKDIR")
    assert workdir == WORKER_HOME
    assert "bin/ bin/" in final.args_of("COPY")
    path = next(args for args in final.args_of("ENV") if args.startswith("PATH="))
    entries = path.removeprefix("PATH=").strip('"').split(":")
    assert f"{WORKER_HOME}/bin" in entries and entries[-1] == "${PATH}", path
    assert not any(entry.startswith("/opt/venv") for entry in entries), "python and pip must not be the worker's"
    for tool in ("comfy-worker", "supervisorctl"):
        assert os.access(REPO / "bin" / tool, os.X_OK), tool
    [healthcheck] = final.args_of("HEALTHCHECK")
    assert healthcheck.endswith('CMD ["comfy-worker", "probe"]'), healthcheck


def test_every_worker_package_is_copied(final: Stage) -> None:
    copied = {args.split()[0].rstrip("/") for args in final.args_of("COPY") if not args.startswith("--")}
    packages = {
        path.parent.name for path in REPO.glob("*/__init__.py") if path.parent.name not in ("tests", "bench", "standin")
    }
    assert packages <= copied, f"packages the image lacks: {sorted(packages - copied)}"
    [entrypoint] = final.args_of("ENTRYPOINT")
    assert (REPO / entrypoint.strip('[]"').removeprefix(WORKER_HOME + "/")).is_file()


def _checkout_with_heavy_parts(root: Path) -> Path:
    """The tracked files plus what a used checkout also holds: venv, git, run dir, caches, outputs."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        if name and (REPO / name).is_file():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((REPO / name).read_bytes())
    for heavy in (".venv/bin/python", ".git/HEAD", ".run/logs/handler.log", "handler/__pycache__/job.cpython-311.pyc"):
        (root / heavy).parent.mkdir(parents=True, exist_ok=True)
        (root / heavy).write_text("x")
    return root


def test_build_context_holds_what_the_image_copies_and_nothing_heavy(tmp_path: Path, final: Stage) -> None:
    root = _checkout_with_heavy_parts(tmp_path / "checkout")
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    context = set(exclude_paths(str(root), [p for p in patterns if p and not p.startswith("#")]))
    sources = [word for args in final.args_of("COPY") if not args.startswith("--") for word in args.split()[:-1]]
    sources += ["requirements.lock"]
    for source in sources:
        files = [p for p in (root / source).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        wanted = [str(p.relative_to(root)) for p in files] or [source]
        assert set(wanted) <= context, f"{source} is copied but not in the build context"
    top_level = {name.split("/")[0] for name in context}
    for heavy in (".venv", ".git", ".run", "tests", "bench", "standin", "deploy", "examples", "docs"):
        assert heavy not in top_level, f"{heavy} would be sent to the builder"
    assert not [name for name in context if "__pycache__" in name]
