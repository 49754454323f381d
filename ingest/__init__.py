"""Ingest: documents -> page images -> vision tokens -> one Qdrant point per page.

    from ingest import Ingestor
    report = Ingestor.from_settings().ingest(["docs/"])

Safe to run at any time, any number of times, and to kill at any moment:

- one writer per collection: a lock file under DATA_DIR/locks names the running job; a killed job's lock is taken over;
- incremental: a file whose record (size and mtime, else its sha256) matches a complete stored document is skipped;
  a file changed in place gets its new pages stored before the old version's pages are removed;
- resumable: point ids are deterministic (uuid5 of doc_id and page), and a document counts as stored only when all
  its pages are. Each run finishes what an interrupted one left (its pages are skipped, the rest added) or, when
  the file is gone or changed, removes the unfinished document's pages.
- streaming: a producer thread hashes and rasterizes, the calling thread encodes, a store thread writes; bounded
  queues between them keep only a few pages in memory, whatever the length of a document.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from tqdm import tqdm

from config import Settings
from core.locks import FileLock, LockBusyError, command_line
from core.model import OcrModel, prompt_for
from core.pages import (
    InputError,
    Limits,
    Page,
    count_pages,
    discover,
    display_path,
    file_digest,
    point_id,
    render_pages,
)
from core.store import EdgeStore, PagePoint, PageStore, StoreError, open_store
from core.tensors import to_numpy, to_torch
from core.text import FROM_DECODER, FROM_PDF, normalize, pdf_page_texts, text_fields

log = logging.getLogger("tokendirect.ingest")

INGEST_STORE_WAIT = 600.0  # seconds ingest waits for the embedded shard between its batches
RUN_LOG = "ingest-runs.jsonl"  # under DATA_DIR: one JSON line per run, for schedulers and people
# Test hook: "STAGE:N" kills this process with SIGKILL the N-th time it reaches STAGE (see _crash_point).
CRASH_ENV = "TOKENDIRECT_CRASH_AT"


class IngestBusyError(RuntimeError):
    """Another ingest holds the collection's writer lock."""


@dataclass
class Failure:
    path: str
    reason: str


@dataclass
class IngestReport:
    pages_added: int = 0
    pages_skipped: int = 0
    pages_removed: int = 0  # old versions, pruned documents and unfinished leftovers
    documents_added: list[str] = field(default_factory=list)
    documents_updated: list[str] = field(default_factory=list)  # changed in place: new pages in, old ones out
    documents_skipped: list[str] = field(default_factory=list)
    documents_pruned: list[str] = field(default_factory=list)  # sources gone (--prune)
    documents_cleaned: list[str] = field(default_factory=list)  # unfinished documents an earlier run left
    failures: list[Failure] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # pages added, by where their text came from: the PDF's text layer, the decoder (--ocr-text), or none
    text_pages: dict[str, int] = field(default_factory=lambda: {FROM_PDF: 0, FROM_DECODER: 0, "none": 0})

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StoredDoc:
    """A document as the collection holds it (read from page payloads)."""

    doc_id: str
    pages: int
    source: str
    stored: set[int] = field(default_factory=set)
    file_size: int | None = None
    file_mtime_ns: int | None = None

    @property
    def complete(self) -> bool:
        return len(self.stored) >= self.pages


@dataclass
class Doc:
    """One input file in this run."""

    path: Path
    name: str  # as reported
    source: str  # as stored in the payload: the resolved path
    size: int = 0
    mtime_ns: int = 0
    doc_id: str = ""
    pages: int = 0
    stored: set[int] = field(default_factory=set)  # pages in the store
    resumed: int = 0  # pages an earlier, interrupted run stored
    replaces: list[str] = field(default_factory=list)  # older versions stored under the same source
    failed: bool = False
    dropped: bool = False  # failed in the encoder: later pages and markers of it are dropped there
    texts: list[str] = field(default_factory=list)  # each page's PDF text layer ("" where it has none)


def page_payload(page: Page, doc: Doc, n_tokens: int, model: str, ingested_at: str) -> dict[str, Any]:
    """Everything a page point carries besides its vectors: the one place to add a payload field."""
    return {
        "doc_id": page.doc_id,
        "source": doc.source,
        "file_name": display_path(doc.path.name),
        "page": page.page,
        "pages": page.pages,
        "width": page.image.width,
        "height": page.image.height,
        "n_tokens": n_tokens,
        "model": model,
        "ingested_at": ingested_at,
        # The file as it was read: a later run skips it unhashed while size and mtime still match.
        "file_size": doc.size,
        "file_mtime_ns": doc.mtime_ns,
        **text_fields(doc.texts[page.page - 1] if doc.texts else None, FROM_PDF),
    }


class Ingestor:
    def __init__(self, model: OcrModel, store: PageStore, settings: Settings | None = None):
        self.model = model
        self.store = store
        self.settings = settings or Settings()
        self.limits = Limits.from_settings(self.settings)
        self._bound = False
        if isinstance(store, EdgeStore):
            # A background job can afford to queue behind a long decode; a search should not wait that long.
            store.wait = max(store.wait, INGEST_STORE_WAIT)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "Ingestor":
        s = settings or Settings()
        return cls(OcrModel.from_settings(s), open_store(s), s)

    # -- the run ---------------------------------------------------------------------------------------------

    def ingest(
        self,
        paths: Iterable[str | Path],
        progress: bool | None = None,
        prune: bool = False,
        wait: float = 0.0,
    ) -> IngestReport:
        """Store every page of every supported file under `paths`; see the module's notes for what a run
        guarantees. `prune` also removes documents whose source file under `paths` is gone; `wait` is how long
        to wait for another ingest of the same collection to finish (else IngestBusyError)."""
        paths = list(paths)
        started = _now()
        t0 = time.perf_counter()
        report = IngestReport()
        status, error = "ok", None
        try:
            lock = self._lock(wait)
            try:
                self._run(paths, report, prune, progress)
            finally:
                lock.release()
            status = "ok" if report.ok else "partial"
            return report
        except IngestBusyError as exc:
            status, error = "busy", str(exc)
            raise
        except BaseException as exc:
            status, error = "error", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if isinstance(self.store, EdgeStore):
                self.store.close()  # whatever happened, other processes get the shard back now
            report.timings["wall_s"] = round(time.perf_counter() - t0, 3)
            self._log_run(paths, report, started, status, error)

    def _run(self, paths: list, report: IngestReport, prune: bool, progress: bool | None) -> None:
        timings = report.timings
        files, missing = discover(paths)
        report.failures.extend(Failure(p, r) for p, r in missing)
        t = time.perf_counter()
        with self.store.window():
            record = self._record()
            # A wrong model fails before any work; a new collection is only created once a page is ready for it.
            self._bound = record is not None
            if self._bound:
                self.store.bind(self.model.identity, create=False)
            catalog = read_catalog(self.store) if self._bound else {}
        timings["plan_s"] = round(time.perf_counter() - t, 3)
        by_source: dict[str, list[StoredDoc]] = {}
        for d in catalog.values():
            by_source.setdefault(d.source, []).append(d)

        run = _Run(self, report, catalog, by_source, progress)
        run.go(files)

        # Unfinished documents an earlier run left, old versions, moved and (with --prune) vanished sources.
        t = time.perf_counter()
        with self.store.window():
            self._finish(run, paths, prune)
            if report.pages_added:
                self.store.optimize()  # the embedded engine builds the first stage's HNSW index only when asked
        timings["finish_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        self._decode_texts(run.untexted, report)
        timings["ocr_text_s"] = round(time.perf_counter() - t, 3)
        for key in ("hash_s", "rasterize_s", "text_s", "load_s", "encode_s", "store_s"):
            timings[key] = round(run.timings.get(key, 0.0), 3)

    def _decode_texts(self, point_ids: list[str], report: IngestReport) -> None:
        """--ocr-text: pages stored without a text layer get the matched decoder's reading of their stored tokens,
        so BM25 finds them too. It runs once the pages are safely stored; a run killed here leaves whole pages,
        only without that text."""
        prompt = prompt_for("ocr")
        for pid in point_ids:
            with self.store.window():
                point = self.store.get(pid, with_tokens=True)
            if point is None:
                continue  # its document failed later in the run and was removed
            tokens = to_torch(point.tokens, self.model.dtype)
            text = self.model.generate_from_tokens(tokens, prompt, self.settings.max_new_tokens)
            if not normalize(text):
                continue  # nothing readable: the page stays without text
            with self.store.window():
                self.store.set_text(pid, text, FROM_DECODER)
            report.text_pages["none"] -= 1
            report.text_pages[FROM_DECODER] += 1

    def _finish(self, run: "_Run", paths: list, prune: bool) -> None:
        report = run.report
        roots = [display_path(Path(p).resolve()) for p in paths if Path(p).exists()]
        found = {doc.source: doc for doc in run.docs if doc.doc_id and not doc.failed}
        current = {source: doc.doc_id for source, doc in found.items()}
        present = {doc.source for doc in run.docs}  # seen this run, even if it failed: not gone
        for d in run.catalog.values():
            if d.doc_id in run.completed:
                continue
            if not d.complete:
                self._delete(report, d.doc_id, len(d.stored))
                report.documents_cleaned.append(d.source)
                continue
            same = found.get(d.source)
            if same is not None and same.doc_id == d.doc_id and (same.size, same.mtime_ns) != (
                d.file_size, d.file_mtime_ns
            ):
                self._move(d, same)  # same bytes, new mtime (touched, copied): record it so the next run need not hash
                continue
            superseded = d.source in current and current[d.source] != d.doc_id
            gone = d.source not in present and not os.path.exists(d.source)
            if not (superseded or gone):
                continue
            copy = run.seen.get(d.doc_id)  # the same bytes at another path this run: the record moves there
            if copy is not None and copy.source != d.source:
                self._move(d, copy)
            elif superseded:
                _crash_point("before_delete")
                self._delete(report, d.doc_id, len(d.stored))
            elif prune and _under(d.source, roots):
                self._delete(report, d.doc_id, len(d.stored))
                report.documents_pruned.append(d.source)

    def _delete(self, report: IngestReport, doc_id: str, pages: int) -> None:
        self.store.delete_document(doc_id)
        report.pages_removed += pages

    def _move(self, d: StoredDoc, copy: Doc) -> None:
        fields = {"source": copy.source, "file_name": display_path(copy.path.name),
                  "file_size": copy.size, "file_mtime_ns": copy.mtime_ns}
        for page in sorted(d.stored):
            self.store.set_payload(point_id(d.doc_id, page), fields)

    def _record(self) -> dict | None:
        try:
            return self.store.record()
        except StoreError:
            # A run killed between creating the embedded shard and writing its record leaves an empty shard
            # that would be refused forever: with no page in it, it is safe to start again.
            if isinstance(self.store, EdgeStore) and self.store.count() == 0:
                log.warning("removing the empty, unfinished collection %r an earlier run left", self.store.collection)
                self.store.drop()
                return None
            raise

    # -- the writer lock and the run log ---------------------------------------------------------------------

    def _target(self) -> str:
        s = self.settings
        return s.qdrant_url or f"embedded store {Path(s.data_dir) / 'qdrant' / s.collection}"

    @property
    def lock_path(self) -> Path:
        """One writer per (data dir, store, collection): a server's collection gets its own lock name, but only
        jobs sharing this data directory on this host see it (README: "One writer")."""
        s = self.settings
        where = hashlib.sha256((s.qdrant_url or "embedded").encode()).hexdigest()[:12]
        return Path(s.data_dir) / "locks" / f"ingest-{s.collection}-{where}.lock"

    def _lock(self, wait: float) -> FileLock:
        s = self.settings
        lock = FileLock(self.lock_path, command_line())
        try:
            lock.acquire(wait)
        except LockBusyError as exc:
            who = exc.holder.describe() if exc.holder else "another process"
            raise IngestBusyError(
                f"another ingest into collection {s.collection!r} ({self._target()}) is running: {who}; "
                f"it was still running after {wait:g} s (--wait SECONDS to wait longer)"
            ) from None
        if lock.stale:
            log.warning("took over the ingest lock from %s, which no longer runs", lock.stale.describe())
        return lock

    def _log_run(self, paths: list, report: IngestReport, started: str, status: str, error: str | None) -> None:
        line = {
            "started_at": started,
            "finished_at": _now(),
            "status": status,
            "exit_code": {"ok": 0, "partial": 1}.get(status, 2),
            "error": error,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "collection": self.settings.collection,
            "store": self._target(),
            "paths": [display_path(p) for p in paths],
            **report.to_dict(),
        }
        try:
            path = Path(self.settings.data_dir) / RUN_LOG
            path.parent.mkdir(parents=True, exist_ok=True)
            # One write with O_APPEND: concurrent writers never interleave within a line.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace"))
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("could not append to the run log: %s", exc)


# ---------------------------------------------------------------------------------------------------------------
# The pipeline: producer thread (hash, rasterize) -> this thread (encode) -> store thread (write)

_END = object()


class _Run:
    def __init__(self, ingestor: Ingestor, report: IngestReport, catalog, by_source, progress):
        self.ing = ingestor
        self.report = report
        self.catalog: dict[str, StoredDoc] = catalog
        self.by_source: dict[str, list[StoredDoc]] = by_source
        self.settings = ingestor.settings
        self.docs: list[Doc] = []
        self.seen: dict[str, Doc] = {}  # doc_id -> the first file with those bytes this run
        self.bad: dict[str, str] = {}  # doc_id -> why those bytes failed this run
        self.completed: set[str] = set()  # doc ids whose every page is stored, checked this run
        self.untexted: list[str] = []  # pages stored without a text layer, for --ocr-text
        self.timings: dict[str, float] = {}
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        batch = self.settings.batch_size
        self.pages_q: queue.Queue = queue.Queue(maxsize=2 * batch)  # rendered pages waiting for the encoder
        self.store_q: queue.Queue = queue.Queue(maxsize=2)  # encoded batches waiting for the store
        # disable=None: the bar shows on a terminal and stays silent in logs and pipes.
        self.bar = tqdm(unit="page", file=sys.stderr, disable=None if progress is None else not progress)
        self._lock = threading.Lock()

    def add_time(self, key: str, seconds: float) -> None:
        with self._lock:
            self.timings[key] = self.timings.get(key, 0.0) + seconds

    def go(self, files: list[Path]) -> None:
        producer = threading.Thread(target=self._guard, args=(self._produce, files), name="ingest-read", daemon=True)
        writer = threading.Thread(target=self._guard, args=(self._write,), name="ingest-store", daemon=True)
        producer.start()
        writer.start()
        try:
            self._encode()
        except BaseException as exc:
            self.errors.append(exc)
            self.stop.set()
        writer.join()
        producer.join()
        self.bar.close()
        if self.errors:
            raise self.errors[0]

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except BaseException as exc:
            self.errors.append(exc)
            self.stop.set()

    def _put(self, q: queue.Queue, item) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue, timeout: float | None = None, idle=None):
        """The next item; None after `timeout` seconds with nothing (or when the run stops). `idle` is called
        every 0.1 s of waiting."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.stop.is_set():
            step = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
            try:
                return q.get(timeout=step)
            except queue.Empty:
                if idle is not None:
                    idle()
                if deadline is not None and time.monotonic() >= deadline:
                    return None
        return None

    # -- producer: stat, hash, validate, rasterize --------------------------------------------------------------

    def _produce(self, files: list[Path]) -> None:
        try:
            for path in files:
                if self.stop.is_set():
                    return
                doc = Doc(path=path, name=display_path(path), source=display_path(path.resolve()))
                self.docs.append(doc)
                try:
                    self._read(doc)
                except (InputError, OSError) as exc:
                    if doc.doc_id:  # other copies of these bytes fail alike
                        self.bad.setdefault(doc.doc_id, _reason(exc))
                    self._put(self.pages_q, ("fail", doc, _reason(exc)))
                except Exception as exc:  # an unforeseen failure names the file; the run goes on
                    log.exception("unexpected failure on %s", doc.name)
                    self._put(self.pages_q, ("fail", doc, f"{type(exc).__name__}: {exc}"))
        finally:
            self._put(self.pages_q, _END)

    def _read(self, doc: Doc) -> None:
        st = doc.path.stat()
        doc.size, doc.mtime_ns = st.st_size, st.st_mtime_ns
        if doc.size == 0:
            raise InputError("empty file")
        older = self.by_source.get(doc.source, [])
        if self.settings.trust_mtime:
            for d in older:
                if d.complete and (d.file_size, d.file_mtime_ns) == (doc.size, doc.mtime_ns):
                    doc.doc_id, doc.pages, doc.stored = d.doc_id, d.pages, set(d.stored)
                    doc.replaces = [o.doc_id for o in older if o.doc_id != doc.doc_id]
                    self.seen.setdefault(d.doc_id, doc)
                    self._put(self.pages_q, ("skip", doc))
                    return
        if doc.size > self.ing.limits.max_bytes:
            count_pages(doc.path, self.ing.limits)  # names the breach without reading the file
        t = time.perf_counter()
        doc.doc_id = file_digest(doc.path)
        self.add_time("hash_s", time.perf_counter() - t)
        if doc.doc_id in self.bad:
            raise InputError(self.bad[doc.doc_id])
        first = self.seen.setdefault(doc.doc_id, doc)
        stored = self.catalog.get(doc.doc_id)
        doc.replaces = [d.doc_id for d in older if d.doc_id != doc.doc_id]
        if first is not doc or (stored is not None and stored.complete):
            # The same bytes are stored already (from this path or another): nothing to encode.
            doc.pages = stored.pages if stored else 0
            doc.stored = set(stored.stored) if stored else set()
            self._put(self.pages_q, ("skip", doc))
            return
        t = time.perf_counter()
        doc.pages = count_pages(doc.path, self.ing.limits, self.settings.pdf_dpi)
        doc.stored = set(stored.stored) if stored else set()
        doc.resumed = len(doc.stored)
        todo = [k for k in range(1, doc.pages + 1) if k not in doc.stored]
        if todo:
            t_text = time.perf_counter()
            # one pass over the file for every page's text
            doc.texts = pdf_page_texts(doc.path, doc.pages, self.settings.raster_timeout)
            self.add_time("text_s", time.perf_counter() - t_text)
        self._put(self.pages_q, ("start", doc))
        pages = render_pages(doc.path, doc.doc_id, self.settings.pdf_dpi, self.ing.limits, todo, doc.pages)
        while True:
            page = next(pages, None)
            self.add_time("rasterize_s", time.perf_counter() - t)
            if page is None:
                break
            if not self._put(self.pages_q, ("page", doc, page)):
                return
            t = time.perf_counter()
        self._put(self.pages_q, ("end", doc))

    # -- encoder: batches pages across documents ---------------------------------------------------------------

    def _encode(self) -> None:
        pending: list[tuple] = []  # pages and document markers, in order
        done = False
        while not done:
            n_pages = sum(1 for item in pending if item[0] == "page")
            # Wait briefly for a fuller batch; with nothing more to come soon, encode what is here.
            item = self._get(self.pages_q, timeout=0.05 if n_pages else None)
            if item is _END:
                done = True
            elif item is not None:
                if item[0] == "fail":  # pages of a failed document are not worth encoding
                    pending = [x for x in pending if not (x[0] == "page" and x[1] is item[1])]
                if item[1].dropped:
                    continue
                pending.append(item)
                n_pages = sum(1 for x in pending if x[0] == "page")
                if n_pages < self.settings.batch_size:
                    continue
            elif self.stop.is_set():
                return
            if pending:
                self._flush(pending)
                pending = []
        self._put(self.store_q, _END)

    def _flush(self, items: list[tuple]) -> None:
        pages = [item[2] for item in items if item[0] == "page"]
        tokens: list = []
        if pages:
            if "load_s" not in self.timings:
                t = time.perf_counter()
                self.ing.model.load()
                self.add_time("load_s", time.perf_counter() - t)
            t = time.perf_counter()
            try:
                tokens = self.ing.model.encode_pages([p.image for p in pages], batch_size=self.settings.batch_size)
            except Exception:  # one page the processor cannot frame must not sink the others: find it
                tokens = [self._encode_one(item) for item in items if item[0] == "page"]
            self.add_time("encode_s", time.perf_counter() - t)
        it = iter(tokens)
        out = []
        for item in items:
            doc = item[1]
            t = next(it) if item[0] == "page" else None
            if doc.dropped:
                continue  # the rest of a document that failed to encode
            if isinstance(t, str):
                doc.dropped = True
                out.append(("fail", doc, t))
            else:
                out.append(item if t is None else (*item, t))
        self._put(self.store_q, out)

    def _encode_one(self, item: tuple):
        try:
            return self.ing.model.encode_pages([item[2].image])[0]
        except Exception as exc:
            return f"page {item[2].page} could not be encoded ({type(exc).__name__}: {str(exc)[:120]})"

    # -- store writer --------------------------------------------------------------------------------------------

    def _write(self) -> None:
        store = self.ing.store
        keep, store.keep_open = store.keep_open, True  # hold the shard between batches until another process asks
        try:
            self._write_batches()
        finally:
            store.keep_open = keep  # the tidying window at the end of the run gives the shard back

    def _write_batches(self) -> None:
        while True:
            items = self._get(self.store_q, idle=self.ing.store.yield_if_wanted)
            if items is None or items is _END:
                return
            t = time.perf_counter()
            # The shard is held only when there is something to write (pages, or a failed document's pages to remove).
            work = [x for x in items if x[0] == "page" or (x[0] in ("fail", "end") and x[1].stored)]
            if work:
                with self.ing.store.window():
                    self._apply(items)
            else:
                self._apply(items)
            self.add_time("store_s", time.perf_counter() - t)

    def _apply(self, items: list[tuple]) -> None:
        report = self.report
        points, stored_now = [], []
        now = _now()
        for item in items:
            if item[0] == "page":
                _, doc, page, tokens = item
                n = int(tokens.shape[0])
                points.append(PagePoint(page.point_id, page_payload(page, doc, n, self.ing.model.name, now),
                                        to_numpy(tokens)))
                stored_now.append((doc, page.page))
        if points:
            if not self.ing._bound:
                self.ing.store.bind(self.ing.model.identity)
                self.ing._bound = True
            _crash_point("before_upsert")
            self.ing.store.upsert(points)
            _crash_point("after_upsert")
            for doc, number in stored_now:
                doc.stored.add(number)
            for point in points:
                source = point.payload["text_source"]
                report.text_pages[source or "none"] += 1
                if source is None and self.settings.ocr_text:
                    self.untexted.append(point.point_id)
            report.pages_added += len(points)
            self.bar.update(len(points))
        for item in items:
            kind, doc = item[0], item[1]
            if kind == "start":
                report.pages_skipped += doc.resumed
            elif kind == "end":
                if len(doc.stored) >= doc.pages:
                    self.completed.add(doc.doc_id)
                    (report.documents_updated if doc.replaces else report.documents_added).append(doc.name)
                else:
                    self._fail(doc, "not every page was stored")
            elif kind == "skip":
                report.pages_skipped += doc.pages
                # With older versions under this path, an interrupted run stored the new one: the update ends now.
                (report.documents_updated if doc.replaces else report.documents_skipped).append(doc.name)
            elif kind == "fail":
                self._fail(doc, item[2])

    def _fail(self, doc: Doc, reason: str) -> None:
        doc.failed = True
        if doc.doc_id and doc.doc_id not in self.completed and doc.stored:
            # A document counts only when whole: its pages go, this run's and any an earlier run left.
            self.ing.store.delete_document(doc.doc_id)
            self.report.pages_removed += len(doc.stored)
            self.catalog.pop(doc.doc_id, None)
        self.report.failures.append(Failure(doc.name, reason))


# ---------------------------------------------------------------------------------------------------------------


def read_catalog(store: PageStore) -> dict[str, StoredDoc]:
    """Every stored document from its pages' payloads (no vectors read)."""
    docs: dict[str, StoredDoc] = {}
    for batch in store.scroll(batch_size=256, with_tokens=False):
        for p in batch:
            pl = p.payload
            d = docs.get(pl["doc_id"])
            if d is None:
                d = docs[pl["doc_id"]] = StoredDoc(
                    doc_id=pl["doc_id"], pages=int(pl.get("pages", 0)), source=str(pl.get("source", "")),
                    file_size=pl.get("file_size"), file_mtime_ns=pl.get("file_mtime_ns"),
                )
            d.stored.add(int(pl["page"]))
    return docs


def _crash_point(stage: str) -> None:
    """For the kill tests: SIGKILL this process the N-th time it reaches `stage` (TOKENDIRECT_CRASH_AT=STAGE:N)."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    name, _, count = spec.partition(":")
    if name != stage:
        return
    _CRASH_COUNTS[stage] = _CRASH_COUNTS.get(stage, 0) + 1
    if _CRASH_COUNTS[stage] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


_CRASH_COUNTS: dict[str, int] = {}


def _under(source: str, roots: list[str]) -> bool:
    return any(source == r or source.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _reason(exc: Exception) -> str:
    if isinstance(exc, InputError):
        return str(exc)
    return f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"


__all__ = ["Ingestor", "IngestReport", "Failure", "IngestBusyError", "page_payload", "read_catalog"]
