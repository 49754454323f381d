"""What the tests share: documents drawn for them, synthetic token sets, running the `tokendirect` command, and a
qdrant-client that measures what the store hands it against a Qdrant server's limits."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from qdrant_client import QdrantClient
from qdrant_client import grpc as g
from qdrant_client import models as m
from qdrant_client.conversions.conversion import RestToGrpc
from qdrant_client.http.api.points_api import jsonable_encoder

CLI = [sys.executable, "-c", "from cli import main; main()"]
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


# -- token sets --------------------------------------------------------------------------------------------------


def bfloat16_tokens(rng: np.random.Generator, rows: int, dim: int, scale: float = 2.0) -> np.ndarray:
    """What the encoder produces: bfloat16 values (float32 with the low 16 bits cleared)."""
    x = rng.normal(scale=scale, size=(rows, dim)).astype(np.float32)
    return (x.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)


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


# -- a qdrant-client held to a server's limits -------------------------------------------------------------------

MULTIVECTOR_VALUES = 1 << 20  # a server refuses a multivector of this many values or more
REQUEST_BYTES = 32 << 20  # a server's default request size limit (service.max_request_size_mb)


@dataclass
class Request:
    call: str
    rest_bytes: int
    grpc_bytes: int
    multivectors: list[tuple[str, int, int]] = field(default_factory=list)  # (name, rows, dimension)

    def largest(self) -> int:
        """The most values in one multivector of the request."""
        return max((rows * dim for _, rows, dim in self.multivectors), default=0)


class RecordingClient:
    def __init__(self, client: QdrantClient | None = None):
        self.client = client or QdrantClient(location=":memory:")
        self.requests: list[Request] = []

    def __getattr__(self, name):
        return getattr(self.client, name)

    def upsert(self, collection_name, points, **kwargs):
        grpc = g.UpsertPoints(
            collection_name=collection_name, points=[RestToGrpc.convert_point_struct(p) for p in points]
        )
        self._record("upsert", m.PointsList(points=points), grpc, [p.vector for p in points])
        return self.client.upsert(collection_name, points, **kwargs)

    def update_vectors(self, collection_name, points, **kwargs):
        converted = [RestToGrpc.convert_point_vectors(p) for p in points]
        grpc = g.UpdatePointVectors(collection_name=collection_name, points=converted)
        self._record("update_vectors", m.UpdateVectors(points=points), grpc, [p.vector for p in points])
        return self.client.update_vectors(collection_name, points, **kwargs)

    def query_batch_points(self, collection_name, requests, **kwargs):
        converted = [RestToGrpc.convert_query_request(r, collection_name) for r in requests]
        grpc = g.QueryBatchPoints(collection_name=collection_name, query_points=converted)
        vectors = [named for r in requests for named in _queries(r)]
        self._record("query", m.QueryRequestBatch(searches=requests), grpc, vectors)
        return self.client.query_batch_points(collection_name, requests, **kwargs)

    def _record(self, call, rest, grpc, vectors) -> None:
        request = Request(call, len(jsonable_encoder(rest)), grpc.ByteSize())
        for named in vectors:
            for name, v in (named or {}).items():
                if isinstance(v, list) and v and isinstance(v[0], list):
                    request.multivectors.append((name, len(v), len(v[0])))
        self.requests.append(request)

    def over_limits(self, transport: str) -> list[Request]:
        """The requests a server would refuse over `transport` ("rest" or "grpc")."""
        size = "rest_bytes" if transport == "rest" else "grpc_bytes"
        return [r for r in self.requests if r.largest() >= MULTIVECTOR_VALUES or getattr(r, size) > REQUEST_BYTES]


def _queries(request) -> list[dict]:
    """Each query vector of a request and its prefetches, as {using: vector}."""
    found = []
    if isinstance(request.query, list):
        found.append({request.using or "": request.query})
    for p in request.prefetch or []:
        found.extend(_queries(p))
    return found
