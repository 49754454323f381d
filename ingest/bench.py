"""Measurements of the ingest pipeline and of sharing the embedded shard.

    tokendirect bench ingest [--pages N] [--json]      # pages per second, and where the wall time goes
    python -m ingest.bench shard-open [--points 1000 10000] [--tokens 257] [--dim 1280]
    python -m ingest.bench search-wait [--pages N]     # how long a search waits for the shard during an ingest
    python -m ingest.bench peak-rss --pages 30 300     # peak memory of an ingest by document length

Each one works in a temporary directory with its own embedded store: the configured collection is never touched.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from config import Settings
from core.tensors import bfloat16_values, unit_length

NON_MODEL_TARGET = 0.15  # at most this share of an ingest's wall time may go to anything but the encoder
# CPU time a page may take outside the model, so that one core keeps a GPU encoding 20 pages a second fed
STORE_CPU_TARGET_MS = 50


def synthetic_pdf(path: Path, pages: int, size: tuple[int, int] = (850, 1100)) -> Path:
    """A PDF of `pages` text pages (letter-sized at 100 dpi by default), written a few pages at a time."""
    font = ImageFont.load_default(size=22)

    def page(k: int) -> Image.Image:
        image = Image.new("RGB", size, "white")
        draw = ImageDraw.Draw(image)
        for row in range(min(20, (size[1] - 120) // 40)):
            draw.text(
                (60, 60 + row * 40), f"Page {k}, line {row + 1}: quarterly figures and notes", fill="black", font=font
            )
        return image

    first = page(1)
    first.save(path, save_all=True, append_images=(page(k) for k in range(2, pages + 1)), resolution=100)
    return path


def bench_ingest(settings: Settings | None = None, pages: int = 16) -> dict:
    """Ingest a synthetic `pages`-page PDF with the configured model into a temporary embedded store."""
    from core.model import OcrModel
    from core.store import open_store
    from ingest import Ingestor

    base = settings or Settings()
    with tempfile.TemporaryDirectory(prefix="tokendirect-bench-") as tmp:
        s = base.model_copy(update={"data_dir": Path(tmp) / "data", "qdrant_url": None})
        pdf = synthetic_pdf(Path(tmp) / "bench.pdf", pages)
        model = OcrModel.from_settings(s)
        model.load()
        model.encode_pages([Image.new("RGB", (850, 1100), "white")])  # warm-up: first calls pay one-off costs
        with Ingestor(model, open_store(s), s) as ingestor:
            report = ingestor.ingest([pdf], progress=False)
        with open_store(s) as source:
            store_path = replay_store_path(source, s.model_copy(update={"collection": "replay"}), model)
    t = report.timings
    wall = t["wall_s"]
    shares = {k: round(t.get(f"{k}_s", 0.0) / wall, 4) for k in ("rasterize", "encode", "store", "hash")}
    non_model = round(1 - t["encode_s"] / wall, 4)
    return {
        "model": model.name,
        "device": str(model.device),
        "batch_size": s.batch_size,
        "pages": report.pages_added,
        "failures": [f.reason for f in report.failures],
        "pages_per_s": round(report.pages_added / wall, 3),
        "timings": t,
        "shares": shares,  # busy time of each stage over wall time; they overlap, so they may sum above 1
        "non_model_share": non_model,
        "target_non_model_share": NON_MODEL_TARGET,
        "target_met": non_model <= NON_MODEL_TARGET,
        "store_path": store_path,
        "target_store_cpu_ms_per_page": STORE_CPU_TARGET_MS,
    }


def replay_store_path(source, target_settings: Settings, model) -> dict:
    """CPU time per page of everything between the encoder and the disk - the token conversion, the payload, the
    derived vectors and the storage form, the engine's write - measured by storing the run's pages again, one
    batch at a time, into a fresh collection of the same store, with nothing else running. CPU time counts every
    thread of the process (numpy's and the engine's). Each batch is also prepared once more without being written
    (`PageStore.prepare`): the storage form and derived vectors apart from the engine's part (handing the values to
    it, its write and flush), which is the rest."""
    import torch

    from core.clock import utc_now
    from core.store import PagePoint, open_store
    from core.tensors import to_numpy

    pages = [p for batch in source.scroll(batch_size=8, with_tokens=True) for p in batch]
    encoded = [torch.from_numpy(p.tokens).to(torch.bfloat16) for p in pages]  # as the encoder hands them over
    with open_store(target_settings) as target:
        target.bind(model.identity)
        cpu = wall = prepare = 0.0
        size = target_settings.batch_size
        prepared = []  # each batch as the engine takes it, to write its token chunks alone afterwards
        for start in range(0, len(pages), size):
            t_cpu, t_wall = time.process_time(), time.perf_counter()
            batch = [
                PagePoint(p.point_id, {**p.payload, "ingested_at": utc_now()}, to_numpy(tokens))
                for p, tokens in zip(pages[start : start + size], encoded[start : start + size], strict=True)
            ]
            target.upsert(batch)
            cpu += time.process_time() - t_cpu
            wall += time.perf_counter() - t_wall
            t_cpu = time.process_time()
            prepared.append(target.prepare(batch))
            prepare += time.process_time() - t_cpu
        n = max(1, len(pages))
        rows = sorted({int(p.tokens.shape[0]) for p in pages})
        floor = tokens_alone_cpu(target, prepared)
    return {
        "pages": len(pages),
        "tokens_per_page": rows,
        "dim": model.dim,
        "cpu_ms_per_page": round(1000 * cpu / n, 1),
        "wall_ms_per_page": round(1000 * wall / n, 1),
        "prepare_cpu_ms_per_page": round(1000 * prepare / n, 1),  # storage form and derived vectors
        "engine_cpu_ms_per_page": round(1000 * max(0.0, cpu - prepare) / n, 1),  # values handed over, write, flush
        # the engine's part for the token chunks alone, the copy every page must be stored with: on this engine no
        # choice of derived vectors brings the store path below it
        "tokens_alone_engine_cpu_ms_per_page": round(1000 * floor / n, 1),
    }


def tokens_alone_cpu(target, batches) -> float:
    """CPU seconds the embedded engine takes to store the token chunks of `batches` (each as `target.prepare` gives
    a batch of pages) and nothing else, handed over, written and flushed as the store writes them, in a scratch
    shard beside `target`'s."""
    from core.store import EdgeStore
    from core.store.schema import schema, token_chunks

    record = target.record()
    names = set(token_chunks(int(record["chunks"])))
    specs = [v for v in schema(target.dim, target.layout, int(record["chunks"])) if v.name in names]
    path = target.path.with_name(target.path.name + "-tokens-alone")
    scratch = EdgeStore(path, "tokens-alone", target.layout)
    scratch._create(specs)
    spent = 0.0
    try:
        for batch in batches:
            rows = [(pid, {k: v for k, v in vecs.items() if k in names}, {}) for pid, vecs, _ in batch]
            t_cpu = time.process_time()
            scratch._upsert(rows)
            spent += time.process_time() - t_cpu
    finally:
        scratch.drop()
        path.with_name(path.name + ".lock").unlink(missing_ok=True)  # the scratch shard's lock file
    return spent


def bench_shard_open(points: list[int], tokens: int = 257, dim: int = 1280, repeats: int = 3) -> list[dict]:
    """Open time of an embedded shard holding `points` pages of `tokens` x `dim` tokens (random values)."""
    import qdrant_edge as q

    from core.model import ModelIdentity
    from core.store import EdgeStore, PagePoint
    from core.store.schema import TOKENS, Nearest, Stage

    rng = np.random.default_rng(0)
    out = []
    with tempfile.TemporaryDirectory(prefix="tokendirect-shard-") as tmp:
        path = Path(tmp) / "pages"
        store = EdgeStore(path, "pages")
        store.bind(ModelIdentity("bench", "synthetic", dim))
        have = 0
        for target in sorted(points):
            t_write = time.perf_counter()
            while have < target:
                n = min(32, target - have)
                batch = [
                    PagePoint(
                        str(uuid.uuid4()),
                        {"doc_id": f"doc{(have + i) // 10}", "page": (have + i) % 10 + 1},
                        bfloat16_values(rng.standard_normal((tokens, dim), dtype=np.float32)),
                    )
                    for i in range(n)
                ]
                store.upsert(batch)
                have += n
            write_s = time.perf_counter() - t_write
            store.close()
            opens = []
            for _ in range(repeats):
                t = time.perf_counter()
                shard = q.EdgeShard.load(str(path))
                opens.append(time.perf_counter() - t)
                shard.close()
            t = time.perf_counter()
            query = unit_length(rng.standard_normal((tokens, dim), dtype=np.float32)).tolist()
            hits = store.query([Stage(Nearest(TOKENS, query), 5)])[0]  # opens the shard, then one exact MaxSim query
            first_query_s = time.perf_counter() - t
            store.close()
            disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            out.append(
                {
                    "points": have,
                    "tokens": tokens,
                    "dim": dim,
                    "open_s": round(statistics.median(opens), 4),
                    "open_s_all": [round(x, 4) for x in opens],
                    "open_and_first_query_s": round(first_query_s, 3),
                    "hits": len(hits),
                    "disk_gb": round(disk / 1e9, 2),
                    "write_s": round(write_s, 1),
                }
            )
            print(json.dumps(out[-1]), file=sys.stderr)
    return out


def bench_search_wait(settings: Settings | None = None, pages: int = 16, interval: float = 0.2) -> dict:
    """Run an ingest in another process and, meanwhile, open the shard from this one as a search would: how long
    each open waits for the ingest's write windows, and how long the shard is then held for a count."""
    from core.store import EdgeStore

    base = settings or Settings()
    with tempfile.TemporaryDirectory(prefix="tokendirect-wait-") as tmp:
        data = Path(tmp) / "data"
        pdf = synthetic_pdf(Path(tmp) / "bench.pdf", pages)
        env = {**os.environ, "TOKENDIRECT_DATA_DIR": str(data), "TOKENDIRECT_MODEL": base.model}
        env.pop("TOKENDIRECT_QDRANT_URL", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "ingest", str(pdf), "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        shard = base.model_copy(update={"data_dir": data}).shard_path()
        while proc.poll() is None and not (shard / "edge_config.json").exists():
            time.sleep(0.05)
        waits, holds = [], []
        while proc.poll() is None:
            store = EdgeStore(shard, base.collection, wait=base.store_wait)
            t = time.perf_counter()
            store.count()
            holds.append(time.perf_counter() - t - store.waited_s)
            waits.append(store.waited_s)
            store.close()
            time.sleep(interval)
        out, _ = proc.communicate()
    report = json.loads(out) if out.strip() else {}
    return {
        "pages": pages,
        "ingest_wall_s": report.get("timings", {}).get("wall_s"),
        "ingest_store_s": report.get("timings", {}).get("store_s"),
        "probes": len(waits),
        "wait_s_median": round(statistics.median(waits), 4) if waits else None,
        "wait_s_max": round(max(waits), 4) if waits else None,
        "open_and_count_s_median": round(statistics.median(holds), 4) if holds else None,
    }


def bench_peak_rss(settings: Settings | None = None, pages: list[int] = (30, 300), size=(425, 550)) -> list[dict]:
    """Peak resident memory of `tokendirect ingest` on PDFs of each length, each in a fresh process."""
    base = settings or Settings()
    out = []
    for n in pages:
        with tempfile.TemporaryDirectory(prefix="tokendirect-rss-") as tmp:
            pdf = synthetic_pdf(Path(tmp) / f"{n}.pdf", n, size)
            env = {**os.environ, "TOKENDIRECT_DATA_DIR": str(Path(tmp) / "data"), "TOKENDIRECT_MODEL": base.model}
            env.pop("TOKENDIRECT_QDRANT_URL", None)
            code = (
                "import json, resource, sys\n"
                "from ingest import Ingestor\n"
                "r = Ingestor.from_settings().ingest([sys.argv[1]], progress=False)\n"
                "print(json.dumps({'pages': r.pages_added, 'failures': len(r.failures), 'wall_s': r.timings['wall_s'],"
                " 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
            )
            proc = subprocess.run(
                [sys.executable, "-c", code, str(pdf)], env=env, capture_output=True, text=True, check=True
            )
            out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(out[-1]), file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ingest.bench")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("ingest")
    p.add_argument("--pages", type=int, default=16)
    p = sub.add_parser("shard-open")
    p.add_argument("--points", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--tokens", type=int, default=257)
    p.add_argument("--dim", type=int, default=1280)
    p = sub.add_parser("search-wait")
    p.add_argument("--pages", type=int, default=16)
    p = sub.add_parser("peak-rss")
    p.add_argument("--pages", type=int, nargs="+", default=[30, 300])
    args = parser.parse_args(argv)
    if args.what == "ingest":
        result = bench_ingest(pages=args.pages)
    elif args.what == "shard-open":
        result = bench_shard_open(args.points, args.tokens, args.dim)
    elif args.what == "search-wait":
        result = bench_search_wait(pages=args.pages)
    else:
        result = bench_peak_rss(pages=args.pages)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
