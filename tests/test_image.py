"""The container images build from a clean checkout and run `tokendirect --help`: each Dockerfile's install steps,
reproduced without Docker on the files its COPY lines take from the build context (a clean checkout, less what
.dockerignore leaves out)."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = ["Dockerfile", "Dockerfile.gpu"]
TORCH = re.compile(r"\btorch==(\d+\.\d+\.\d+)(\+\w+)?")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continued lines joined and comments left out."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in dockerfile.read_text().splitlines() if not line.startswith("#"))
    )
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore's `patterns` leave `path` (or a folder above it) out of the build context."""
    parts = path.split("/")
    verdict = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        regex = re.compile(
            "".join(
                ".*" if token == "**" else "[^/]*" if token == "*" else "[^/]" if token == "?" else re.escape(token)
                for token in re.split(r"(\*\*|\*|\?)", glob)
            )
        )
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            verdict = not keep
    return verdict


def checkout_files() -> list[str]:
    """The files a clean checkout of this tree holds: tracked, and new ones not yet committed but not ignored."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [f for f in listed.split("\0") if f and (ROOT / f).is_file()]


def build_context() -> list[str]:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return [f for f in checkout_files() if not ignored(f, patterns)]


def copy_step(sources: str, context: list[str], into: Path) -> None:
    """`COPY SRC... DEST` (DEST relative to WORKDIR `into`) from the build context."""
    *srcs, dest = shlex.split(sources)
    for src in srcs:
        src = src.strip("/") if src not in (".", "./") else ""
        chosen = [f for f in context if not src or f == src or f.startswith(src + "/")]
        assert chosen, f"COPY {src}: nothing in the build context"
        folder = chosen != [src]  # a folder's contents go into DEST; a file goes to DEST, or into DEST/
        for f in chosen:
            rel = Path(f).relative_to(src) if src and folder else Path(Path(f).name if src else f)
            target = into / dest / rel if folder or dest.endswith("/") or dest == "." else into / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, target)


def test_the_ignore_rules():
    rules = [".env", ".venv", "data", "**/__pycache__", "*.egg-info"]
    assert ignored(".env", rules) and ignored(".venv/bin/python", rules) and ignored("data/qdrant/x", rules)
    assert ignored("core/__pycache__/a.pyc", rules) and ignored("token_direct.egg-info/PKG-INFO", rules)
    assert not ignored("core/store/base.py", rules) and not ignored("metadata/x", rules)
    assert not ignored("data.py", rules) and not ignored("core/data", rules)


def test_the_build_context_holds_no_secrets_environments_or_data():
    context = build_context()
    assert "pyproject.toml" in context and "cli/__init__.py" in context
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", "data", ".git"} <= set(ignore)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_image_pins_its_base_and_its_torch_build(name):
    steps = instructions(ROOT / name)
    base = next(args for kind, args in steps if kind == "FROM")
    image, _, tag = base.partition(":")
    assert tag and tag != "latest" and re.match(r"\d", tag), f"{base}: pin a release"
    (torch,) = [m for kind, args in steps if kind == "RUN" for m in TORCH.findall(args)]
    makefile = re.search(r"^TORCH\s*\?=\s*torch==(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert torch[0] == makefile[1], "the images and `make install` use one torch release"
    if name == "Dockerfile":
        assert torch[1] == "+cpu" and "download.pytorch.org/whl/cpu" in (ROOT / name).read_text()
    else:
        assert image == "nvidia/cuda" and "-ubuntu" in tag  # a CUDA base image, for the GPU build from PyPI


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_image_installs_from_what_it_copies_and_runs_the_command(name, tmp_path):
    """Every COPY of the Dockerfile, from a clean checkout's build context, into an empty WORKDIR; the dependency list
    its first step reads from pyproject.toml; then its `pip install --no-deps .` (here without build isolation, into
    a target folder, the dependencies taken from this environment) and `tokendirect --help` from that install."""
    tomllib = pytest.importorskip("tomllib", reason="the images run Python 3.11 or newer, which reads TOML")
    context = build_context()
    workdir = tmp_path / "app"
    workdir.mkdir()
    steps = instructions(ROOT / name)
    assert ("ENTRYPOINT", '["tokendirect"]') in steps
    runs = []
    for kind, args in steps:
        if kind == "COPY":
            assert not args.startswith("--from"), "one stage, from the build context"
            copy_step(args, context, workdir)
        elif kind == "RUN" and "pip install" in args and "torch" not in args:
            runs.append(args)
            if "tomllib" in args:  # the dependency step: its Python one-liner, run as the image would
                code = shlex.split(args.split("python3 -c", 1)[1])[0]
                listed = subprocess.run(
                    [sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, check=True
                ).stdout.split()
                assert "transformers>=5.23,<6" in listed and len(listed) > 5
    install = [r for r in runs if "--no-deps ." in r]
    assert len(install) == 1 and "tokendirect --help" in install[0], runs

    target = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--target", str(target), "."],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # every package of the project is in the image, not only those the command imports at once
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {f.split("/")[0] for f in checkout_files() if f.endswith("/__init__.py") and f.count("/") == 1}
    wanted = {p for p in packages if any(fnmatch.fnmatch(p, pattern) for pattern in include)}
    assert wanted and wanted <= {p.name for p in target.iterdir() if (p / "__init__.py").exists()}
    env = {**os.environ, "PYTHONPATH": str(target)}
    script = target / "bin" / "tokendirect"  # the console entry point, as pip wrote it
    ran = subprocess.run(
        [sys.executable, str(script), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0 and "ingest" in ran.stdout and "search" in ran.stdout, ran.stderr[-3000:]
    where = subprocess.run(
        [sys.executable, "-c", "import cli, core.store, ingest.plan; print(cli.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(target)), "the installed copy ran, not this checkout"
