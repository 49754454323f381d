"""What the tests share: documents drawn for them, synthetic token sets, and running the `tokendirect` command."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CLI = [sys.executable, "-c", "from cli import main; main()"]
BACKENDS = ["edge", "memory"]  # the embedded edge shard, and qdrant-client in-process
MISSING_POINT = "00000000-0000-0000-0000-000000000000"
SMALL = (300, 400)  # below the 768 px tile size: one global view, 257 tokens, the cheapest page to encode


# -- documents ---------------------------------------------------------------------------------------------------


def page_image(lines: list[str], size=(850, 1100)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=24)
    for row, line in enumerate(lines):
        draw.text((60, 60 + row * 40), line, fill="black", font=font)
    return image


def write_pdf(path: Path, pages: list[list[str]], size=(850, 1100)) -> Path:
    images = [page_image(lines, size) for lines in pages]
    images[0].save(path, save_all=True, append_images=images[1:], resolution=100)
    return path


def write_tiff(path: Path, pages: list[list[str]], size=(850, 1100)) -> Path:
    images = [page_image(lines, size) for lines in pages]
    images[0].save(path, save_all=True, append_images=images[1:])
    return path


def make_docs(folder: Path) -> Path:
    """A two-page PDF, a PNG and a two-frame TIFF: three documents, five pages."""
    folder.mkdir(parents=True, exist_ok=True)
    write_pdf(folder / "report.pdf", [["Annual report", "Revenue grew"], ["Outlook", "Risks ahead"]])
    page_image(["Invoice 42", "Total due 1,420"]).save(folder / "invoice.png")
    write_tiff(folder / "notes.tiff", [["Field notes", "gauge 7"], ["Heron colony", "48 nests"]])
    return folder


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- stored pages and runs that are killed -----------------------------------------------------------------------


def small_pdf(path: Path, texts: list[str]) -> Path:
    images = [page_image([t], size=SMALL) for t in texts]
    images[0].save(path, save_all=True, append_images=images[1:], resolution=100)
    return path


def small_tiff(path: Path, texts: list[str]) -> Path:
    images = [page_image([t], size=SMALL) for t in texts]
    images[0].save(path, save_all=True, append_images=images[1:])
    return path


def make_folder(folder: Path) -> Path:
    """Three files, six pages: with batch size 2 the batches are [a1 a2] [a3 b1] [c1 c2]."""
    folder.mkdir(parents=True, exist_ok=True)
    small_pdf(folder / "a.pdf", ["alpha one", "alpha two", "alpha three"])
    page_image(["bravo"], size=SMALL).save(folder / "b.png")
    small_tiff(folder / "c.tiff", ["charlie one", "charlie two"])
    return folder


def expected_ids(folder: Path) -> set[str]:
    """The point ids the files in `folder` call for: each page of each file, once."""
    from core.pages import count_pages, file_digest, point_id

    ids = set()
    for f in sorted(folder.iterdir()):
        if f.is_file():
            ids.update(point_id(file_digest(f), k) for k in range(1, count_pages(f) + 1))
    return ids


def stored(data: Path, collection: str = "pages") -> dict[str, dict]:
    """point id -> payload of every page in the embedded store (read after the subprocess has let go)."""
    from core.store import EdgeStore

    store = EdgeStore(data / "qdrant" / collection, collection, wait=5)
    try:
        return {p.point_id: p.payload for batch in store.scroll(256, with_tokens=False) for p in batch}
    finally:
        store.close()


def killed(args, env, cwd, stage: str) -> subprocess.CompletedProcess:
    """`tokendirect ingest ARGS... --json` killed with SIGKILL at `stage` (the TOKENDIRECT_CRASH_AT test hook)."""
    from ingest.hooks import CRASH_ENV

    proc = run_cli(["ingest", *args, "--json"], {**env, CRASH_ENV: stage}, cwd)
    assert proc.returncode == -signal.SIGKILL, (stage, proc.returncode, proc.stderr[-2000:])
    return proc


# -- token sets --------------------------------------------------------------------------------------------------


def bfloat16_tokens(rng: np.random.Generator, rows: int, dim: int, scale: float = 2.0) -> np.ndarray:
    """What the encoder produces: bfloat16 values (float32 with the low 16 bits cleared)."""
    x = rng.normal(scale=scale, size=(rows, dim)).astype(np.float32)
    return (x.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)


# -- settings ------------------------------------------------------------------------------------------------------


def settings_for(model_dir: Path, data_dir: Path, **extra):
    """The embedded engine on `data_dir` with the model at `model_dir`, whatever the environment says."""
    from config import Settings

    values = dict(
        model=str(model_dir),
        data_dir=data_dir,
        device="cpu",
        batch_size=2,
        max_new_tokens=12,
        qdrant_url=None,
        qdrant_api_key=None,
    )
    return Settings(**{**values, **extra})


def on_engine(settings, engine: str):
    """`settings` on one of BACKENDS: the embedded edge shard, or qdrant-client in-process ("memory")."""
    return settings.model_copy(update={"qdrant_url": ":memory:"}) if engine == "memory" else settings


def ingest_here(settings, *paths, **options) -> dict:
    """An ingest through the Python API in this process (the model is loaded once for the whole suite): its report."""
    from ingest import Ingestor

    with Ingestor.from_settings(settings) as ingestor:
        return ingestor.ingest(paths, **options).to_dict()


# -- the command line --------------------------------------------------------------------------------------------


def run_cli(args, env, cwd, command=CLI, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run `tokendirect ARGS...` (or `command ARGS...`) in a subprocess; never a traceback, whatever the exit code."""
    proc = subprocess.run(
        [*command, *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc


def run_here(args, env, cwd) -> subprocess.CompletedProcess:
    """Run `tokendirect ARGS...` in this process, through the same entry point (`cli:main`) with the same argv,
    environment (exactly `env`), working directory, stdout and stderr (each captured, read as `run_cli` reads a
    subprocess's) and exit code; the model loaded for an earlier command or test is used again.

    Not for what needs a process of its own: signals and kills, locks or concurrency between processes, a terminal,
    `python -m`, or settings a library reads once at import (the Hugging Face hub's)."""
    import logging
    import traceback
    import warnings

    from click.testing import CliRunner
    from transformers.utils import logging as hf_logging

    from cli import main

    hf_logging.get_logger()  # transformers' own stderr handler exists now; it writes to this command's stderr below
    hf_handler = hf_logging._default_handler
    root = logging.getLogger()
    saved = dict(env=dict(os.environ), argv=sys.argv, cwd=os.getcwd(), handlers=root.handlers[:])
    with CliRunner().isolation() as (out, err, _), warnings.catch_warnings():
        # Python's own warning filters and printer (pytest records warnings instead): shown on stderr, as there
        warnings.resetwarnings()
        for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning, DeprecationWarning):
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        warnings.showwarning = warnings._showwarning_orig
        os.environ.clear()
        os.environ.update(env)
        sys.argv = ["-c", *map(str, args)]  # as `python -c "from cli import main; main()" ARGS...` sees them
        os.chdir(cwd)
        root.handlers = []  # no handler of the test run's: warnings go to stderr as in a process of its own
        hf_stream, hf_handler.stream = hf_handler.stream, sys.stderr
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
        except BaseException:  # noqa: B036 - what a process would die of: its traceback on stderr, as there
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            hf_handler.stream = hf_stream
            root.handlers = saved["handlers"]
            os.chdir(saved["cwd"])
            sys.argv = saved["argv"]
            os.environ.clear()
            os.environ.update(saved["env"])
        # text mode, as subprocess.run(text=True) reads a pipe: universal newlines
        stdout, stderr = (
            stream.getvalue().decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
            for stream in (out, err)
        )
    proc = subprocess.CompletedProcess(["tokendirect", *map(str, args)], code, stdout, stderr)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc


def cli_env(model_dir: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENDIRECT_")}
    env.update(
        TOKENDIRECT_MODEL=str(model_dir),
        TOKENDIRECT_DATA_DIR=str(data_dir),
        TOKENDIRECT_DEVICE="cpu",
        TOKENDIRECT_MAX_NEW_TOKENS="8",
        HF_HUB_OFFLINE="1",
    )
    env.update(extra)
    return env


def ok_json(proc: subprocess.CompletedProcess):
    """Exit 0 and the whole of stdout is one JSON document."""
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def usage_error(proc: subprocess.CompletedProcess) -> str:
    """Exit 2 with exactly one `error:` line on stderr (other stderr lines are progress bars); returns it."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.lower().startswith("error")]
    assert len(errors) == 1, proc.stderr
    # A quoted name stays whole (no quote stripped off the end of the message).
    assert errors[0].count("'") % 2 == 0, errors[0]
    return errors[0]


# -- small file systems ------------------------------------------------------------------------------------------


def mount(target: Path, *options: str) -> str | None:
    """Mount at `target` (`mount OPTIONS... target`), as root; None when mounted, else why not (for a skip)."""
    target.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "mounting a file system needs root"
    proc = subprocess.run(["mount", *options, str(target)], capture_output=True, text=True, check=False)
    return None if proc.returncode == 0 else f"cannot mount here: {proc.stderr.strip() or proc.returncode}"


def unmount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


def fill_disk(folder: Path, leave: int) -> Path:
    """Fill the file system holding `folder` until about `leave` bytes stay free; returns the filler file."""
    filler = folder / "filler"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    if free > leave:
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.posix_fallocate(fd, os.fstat(fd).st_size, free - leave)
        finally:
            os.close(fd)
    return filler
