"""The scale model behind `tokendirect bench scale`: from measured bytes per page to the disk, RAM and nodes a corpus
needs, and the rates an ingest must keep to store it in a day.

Inputs are measurements, never constants written here: the disk and RAM-resident bytes of a page at a given shape
(tokens x dimension) come from `tokendirect bench search --json` output, or from a synthetic collection this module
builds with the same code (search/bench.py). Both divide a collection's files by its pages, so a collection's fixed
costs (the write-ahead log, segments being filled) weigh on a small one: measure at a thousand pages or more.

The arithmetic, per corpus size and page shape:
- disk = pages x disk bytes x replication factor; RAM = pages x RAM-resident bytes x replication factor (the fast
  path's quantized pooled vectors: what each search touches; the token sets stay on disk and pass through the page
  cache);
- nodes = the most of disk / (node disk x fill) and RAM / (node RAM x fill), and at least the replication factor
  (one copy of a shard per node); `fill` leaves room for the optimizer, which rebuilds segments beside the old ones;
- in a day: pages / 86,400 s to encode, and as many bytes a second to write, spread over the nodes.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from config import Settings
from core.errors import UsageError

DAY_S = 86_400
GB = 1e9


@dataclass(frozen=True)
class PageBytes:
    """Measured bytes of one page of `tokens` x `dim` in a collection."""

    tokens: int
    dim: int
    disk: float
    ram: float
    source: str  # where the figures come from

    @property
    def shape(self) -> str:
        return f"{self.tokens} x {self.dim}"


@dataclass(frozen=True)
class Node:
    ram_gb: float = 64.0
    disk_gb: float = 2000.0
    fill: float = 0.7  # the share of a node's RAM and disk the collection may take


@dataclass
class Row:
    pages: int
    shape: str
    disk_gb: float  # all replicas together
    ram_gb: float
    nodes_for_disk: int
    nodes_for_ram: int
    nodes: int
    bound_by: str  # "disk" or "RAM": what needs the most nodes
    encode_pages_per_s: float  # to store the corpus in `hours`
    write_mb_per_s: float  # all replicas together
    write_mb_per_s_per_node: float
    encode_workers: int | None  # at the given per-worker encode rate


@dataclass
class ScaleModel:
    node: Node
    replication_factor: int
    hours: float
    encode_rate: float | None  # pages/s one ingest worker (one GPU) sustains, as measured with `bench ingest`
    shapes: list[PageBytes]
    one_node_pages: dict[str, int]  # shape -> the most pages one node holds (one copy)
    rows: list[Row] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def scale(
    shapes: list[PageBytes],
    corpus: list[int],
    node: Node = Node(),
    replication_factor: int = 2,
    hours: float = 24.0,
    encode_rate: float | None = None,
) -> ScaleModel:
    """The disk, RAM and nodes each corpus size needs at each measured page shape, and the ingest rates of a corpus
    stored in `hours`."""
    if replication_factor < 1 or not 0 < node.fill <= 1 or hours <= 0:
        raise UsageError("the replication factor is at least 1, --fill lies in (0, 1], --hours is positive")
    disk_cap, ram_cap = node.disk_gb * GB * node.fill, node.ram_gb * GB * node.fill
    model = ScaleModel(
        node,
        replication_factor,
        hours,
        encode_rate,
        shapes,
        {s.shape: int(min(disk_cap / s.disk, ram_cap / s.ram)) for s in shapes},
    )
    for pages in corpus:
        for s in shapes:
            disk, ram = pages * s.disk * replication_factor, pages * s.ram * replication_factor
            for_disk, for_ram = math.ceil(disk / disk_cap), math.ceil(ram / ram_cap)
            nodes = max(for_disk, for_ram, replication_factor)
            rate = pages / (hours * 3600)
            write = rate * s.disk * replication_factor / 1e6
            model.rows.append(
                Row(
                    pages=pages,
                    shape=s.shape,
                    disk_gb=round(disk / GB, 1),
                    ram_gb=round(ram / GB, 1),
                    nodes_for_disk=for_disk,
                    nodes_for_ram=for_ram,
                    nodes=nodes,
                    bound_by="disk" if for_disk >= for_ram else "RAM",
                    encode_pages_per_s=round(rate, 2),
                    write_mb_per_s=round(write, 1),
                    write_mb_per_s_per_node=round(write / nodes, 1),
                    encode_workers=math.ceil(rate / encode_rate) if encode_rate else None,
                )
            )
    return model


# -- measurements ------------------------------------------------------------------------------------------------


def from_bench_json(path: Path) -> PageBytes:
    """Bytes per page from the JSON `tokendirect bench search --json` printed (its largest run)."""
    try:
        run = json.loads(Path(path).read_text())
        tokens, pages = run["tokens_per_page"], run["pages"]
        dim = round(run["token_bytes_per_page"] / (2 * tokens))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--from {path}: not the JSON output of `tokendirect bench search --json` ({exc})") from None
    if run.get("disk_bytes_per_page") is None:
        raise UsageError(f"--from {path}: no disk figure (measured on a server?): measure on the embedded store")
    source = f"{path}: {pages:,} pages, {run['source']}"
    return PageBytes(round(tokens), dim, run["disk_bytes_per_page"], run["ram_bytes_per_page"], source)


def measure(
    settings: Settings, tokens: int, dim: int, pages: int, progress: Callable[[str], None] = lambda message: None
) -> PageBytes:
    """Build a synthetic collection of `pages` pages of `tokens` x `dim` on the embedded store, with the configured
    layout, and measure its files (the code of `tokendirect bench search`)."""
    from search.bench import SyntheticSpec, synthetic_bench

    with tempfile.TemporaryDirectory(prefix="tokendirect-scale-") as tmp:
        (result,) = synthetic_bench(
            [pages], settings, 1, SyntheticSpec(tokens=tokens, dim=dim), Path(tmp), scan=False, progress=progress
        )
    source = f"measured: {pages:,} synthetic pages, fixed costs included"
    return PageBytes(tokens, dim, result.disk_bytes_per_page, result.ram_bytes_per_page, source)


# -- the table ---------------------------------------------------------------------------------------------------


def format_model(model: ScaleModel) -> str:
    n = model.node
    lines = [
        "per page (measured): "
        + "; ".join(
            f"{s.shape}: disk {s.disk / 1e6:.2f} MB, RAM {s.ram / 1e3:.1f} kB [{s.source}]" for s in model.shapes
        ),
        f"node: {n.ram_gb:g} GB RAM, {n.disk_gb:g} GB disk, filled to {n.fill:.0%}; replication factor "
        f"{model.replication_factor}; ingest within {model.hours:g} h"
        + (f"; one worker encodes {model.encode_rate:g} pages/s" if model.encode_rate else ""),
        "one node holds (one copy): "
        + "; ".join(f"{shape}: {pages:,} pages" for shape, pages in model.one_node_pages.items()),
        "",
        f"{'pages':>13} {'shape':>11} {'disk GB':>11} {'RAM GB':>9} {'nodes':>6} {'(disk':>6} {'RAM)':>5} "
        f"{'bound':>6} {'encode p/s':>11} {'write MB/s':>11} {'per node':>9}"
        + (f" {'workers':>8}" if model.encode_rate else ""),
    ]
    for r in model.rows:
        lines.append(
            f"{r.pages:>13,} {r.shape:>11} {r.disk_gb:>11,.0f} {r.ram_gb:>9,.1f} {r.nodes:>6} {r.nodes_for_disk:>6} "
            f"{r.nodes_for_ram:>5} {r.bound_by:>6} {r.encode_pages_per_s:>11,.1f} {r.write_mb_per_s:>11,.1f} "
            f"{r.write_mb_per_s_per_node:>9,.1f}" + (f" {r.encode_workers:>8}" if model.encode_rate else "")
        )
    return "\n".join(lines)
