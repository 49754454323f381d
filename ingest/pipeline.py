"""The ingest pipeline: a planning thread (stat, hash, validate, count pages) -> a reading thread (rasterize) -> the
calling thread (encode, in batches across documents) -> a store thread (write). The planner runs ahead, so the pages
to store are known early (progress and its ETA); bounded queues after it keep only a few pages in memory, whatever
the length of a document. Messages are typed; each says what happened to one document or page."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from core.clock import utc_now
from core.errors import InputError
from core.pages import Page, count_pages, display_path, file_digest, render_pages
from core.store import PagePoint
from core.tensors import to_numpy
from core.text import pdf_page_texts
from ingest import plan
from ingest.hooks import crash_point, pause_point
from ingest.payload import page_payload
from ingest.plan import Catalog, Doc
from ingest.progress import Progress
from ingest.report import Failure, IngestReport

log = logging.getLogger("tokendirect.ingest")


@dataclass
class Skip:
    """Nothing to encode: the document is stored whole already (or another file of this run brings its bytes), or it
    is another worker's (`doc.elsewhere`)."""

    doc: Doc


@dataclass
class Start:
    doc: Doc


@dataclass
class PageIn:
    doc: Doc
    page: Page


@dataclass
class Encoded:
    doc: Doc
    page: Page
    tokens: Any  # torch.Tensor [n, dim]


@dataclass
class End:
    doc: Doc


@dataclass
class Failed:
    doc: Doc
    reason: str


Message = Skip | Start | PageIn | Encoded | End | Failed
_END = object()  # no more messages


class Pipeline:
    """One run's pages through the model into the store. `bind` is called before the first write (it creates the
    collection when the run brings its first page)."""

    def __init__(
        self,
        model,
        store,
        settings,
        limits,
        catalog: Catalog,
        report: IngestReport,
        bind: Callable,
        progress: Progress,
        dry_run: bool = False,
    ):
        self.model = model
        self.store = store
        self.settings = settings
        self.limits = limits
        self.catalog = catalog
        self.report = report
        self.bind = bind
        self.dry_run = dry_run  # plan every file, read and write nothing: what the run would do
        self.docs: list[Doc] = []
        self.seen: dict[str, Doc] = {}  # doc_id -> the first file with those bytes this run
        self.bad: dict[str, str] = {}  # doc_id -> why those bytes failed this run
        self.completed: set[str] = set()  # doc ids whose every page is stored, checked this run
        self.untexted: list[str] = []  # pages stored without a text layer, for --ocr-text
        self.timings: dict[str, float] = {}
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self._dropped: set[int] = set()  # documents (by id()) that failed in the encoder
        batch = settings.batch_size
        self.plan_q: queue.Queue = queue.Queue()  # planned documents (no pages): the planner runs ahead
        self.pages_q: queue.Queue = queue.Queue(maxsize=2 * batch)  # rendered pages waiting for the encoder
        self.store_q: queue.Queue = queue.Queue(maxsize=2)  # encoded batches waiting for the store
        self.progress = progress
        self._lock = threading.Lock()

    def add_time(self, key: str, seconds: float) -> None:
        with self._lock:
            self.timings[key] = self.timings.get(key, 0.0) + seconds

    def run(self, files: list[Path]) -> None:
        threads = [
            threading.Thread(target=self._guard, args=(self._plan, files), name="ingest-plan", daemon=True),
            threading.Thread(target=self._guard, args=(self._produce,), name="ingest-read", daemon=True),
            threading.Thread(target=self._guard, args=(self._write,), name="ingest-store", daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            self._guard(self._encode)
        finally:
            for thread in reversed(threads):
                thread.join()
            self.progress.close()
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

    # -- planner: stat, hash, validate, count pages --------------------------------------------------------------

    def _plan(self, files: list[Path]) -> None:
        try:
            for path in files:
                if self.stop.is_set():
                    return
                doc = Doc(path=path, name=display_path(path), source=display_path(path.resolve()))
                self.docs.append(doc)
                try:
                    todo = self._settle(doc)
                except (InputError, OSError) as exc:
                    self.plan_q.put((doc, Failed(doc, _reason(exc))))
                except Exception as exc:  # an unforeseen failure names the file; the run goes on
                    log.exception("unexpected failure on %s", doc.name)
                    self.plan_q.put((doc, Failed(doc, f"{type(exc).__name__}: {exc}")))
                else:
                    if todo:
                        self.progress.plan(len(todo))
                    self.plan_q.put((doc, todo if todo is not None else Skip(doc)))
        finally:
            self.plan_q.put(_END)
            self.progress.planned()

    def _settle(self, doc: Doc) -> list[int] | None:
        """The page numbers `doc` needs stored, or None when nothing needs encoding."""
        st = doc.path.stat()
        doc.size, doc.mtime_ns = st.st_size, st.st_mtime_ns
        if doc.size == 0:
            raise InputError("empty file")
        if plan.settle_unread(doc, self.catalog, self.settings.trust_mtime):
            plan.settle_partition(doc, self.catalog)
            self.seen.setdefault(doc.doc_id, doc)
            return None
        if doc.size > self.limits.max_bytes:
            count_pages(doc.path, self.limits)  # names the breach without reading the file
        t = time.perf_counter()
        doc.doc_id = file_digest(doc.path)
        self.add_time("hash_s", time.perf_counter() - t)
        first = self.seen.setdefault(doc.doc_id, doc)
        if plan.settle_partition(doc, self.catalog) or plan.settle_read(doc, self.catalog, first):
            return None
        return plan.resume(doc, count_pages(doc.path, self.limits, self.settings.pdf_dpi))

    # -- reader: rasterize, in the planner's order ------------------------------------------------------------

    def _produce(self) -> None:
        try:
            while True:
                item = self._get(self.plan_q)
                if item is None or item is _END:
                    return
                doc, todo = item
                if isinstance(todo, Failed) or (doc.doc_id in self.bad and not isinstance(todo, list)):
                    # other copies of bytes that failed fail alike
                    reason = todo.reason if isinstance(todo, Failed) else self.bad[doc.doc_id]
                    if doc.doc_id:
                        self.bad.setdefault(doc.doc_id, reason)
                    self._put(self.pages_q, Failed(doc, reason))
                    continue
                if isinstance(todo, Skip):
                    self._put(self.pages_q, todo)
                    continue
                try:
                    self._read(doc, todo)
                except (InputError, OSError) as exc:
                    self.bad.setdefault(doc.doc_id, _reason(exc))
                    self._put(self.pages_q, Failed(doc, _reason(exc)))
                except Exception as exc:
                    log.exception("unexpected failure on %s", doc.name)
                    self._put(self.pages_q, Failed(doc, f"{type(exc).__name__}: {exc}"))
        finally:
            self._put(self.pages_q, _END)

    def _read(self, doc: Doc, todo: list[int]) -> None:
        if self.dry_run:  # what would be stored is known: nothing is read
            self._put(self.pages_q, Start(doc))
            self._put(self.pages_q, End(doc))
            return
        if todo:
            t = time.perf_counter()
            # one pass over the file for every page's text
            doc.texts = pdf_page_texts(doc.path, doc.pages, self.settings.raster_timeout)
            self.add_time("text_s", time.perf_counter() - t)
        t = time.perf_counter()
        self._put(self.pages_q, Start(doc))
        pages = render_pages(doc.path, doc.doc_id, self.settings.pdf_dpi, self.limits, todo, doc.pages)
        while True:
            page = next(pages, None)
            self.add_time("rasterize_s", time.perf_counter() - t)
            if page is None:
                break
            if not self._put(self.pages_q, PageIn(doc, page)):
                return
            t = time.perf_counter()
        self._put(self.pages_q, End(doc))

    # -- encoder: batches pages across documents -------------------------------------------------------------

    def _encode(self) -> None:
        pending: list[Message] = []  # pages and document markers, in order
        done = False
        while not done:
            n_pages = sum(isinstance(m, PageIn) for m in pending)
            # Wait briefly for a fuller batch; with nothing more to come soon, encode what is here.
            item = self._get(self.pages_q, timeout=0.05 if n_pages else None)
            if item is _END:
                done = True
            elif item is not None:
                if isinstance(item, Failed):  # pages of a failed document are not worth encoding
                    pending = [m for m in pending if not (isinstance(m, PageIn) and m.doc is item.doc)]
                if id(item.doc) in self._dropped:
                    continue
                pending.append(item)
                if sum(isinstance(m, PageIn) for m in pending) < self.settings.batch_size:
                    continue
            elif self.stop.is_set():
                return
            if pending:
                self._flush(pending)
                pending = []
        self._put(self.store_q, _END)

    def _flush(self, items: list[Message]) -> None:
        pages = [m for m in items if isinstance(m, PageIn)]
        results: list[Any] = []
        if pages:
            if "load_s" not in self.timings:
                t = time.perf_counter()
                self.model.load()
                self.add_time("load_s", time.perf_counter() - t)
            self.progress.now(pages[-1].doc.name)
            t = time.perf_counter()
            try:
                results = self.model.encode_pages([m.page.image for m in pages], batch_size=self.settings.batch_size)
            except Exception:  # one page the processor cannot frame must not sink the others: find it
                results = [self._encode_one(m) for m in pages]
            self.add_time("encode_s", time.perf_counter() - t)
        out: list[Message] = []
        encoded = iter(results)
        for m in items:
            result = next(encoded) if isinstance(m, PageIn) else None
            if id(m.doc) in self._dropped:
                continue  # the rest of a document that failed to encode
            if isinstance(result, Failed):
                self._dropped.add(id(m.doc))
                out.append(result)
            else:
                out.append(m if result is None else Encoded(m.doc, m.page, result))
        self._put(self.store_q, out)

    def _encode_one(self, m: PageIn):
        """The page's tokens, or why it could not be encoded."""
        try:
            return self.model.encode_pages([m.page.image])[0]
        except Exception as exc:
            return Failed(m.doc, f"page {m.page.page} could not be encoded ({type(exc).__name__}: {str(exc)[:120]})")

    # -- store writer ----------------------------------------------------------------------------------------

    def _write(self) -> None:
        with self.store.holding():  # the shard stays open between batches until another process asks
            while True:
                items = self._get(self.store_q, idle=self.store.yield_if_wanted)
                if items is None or items is _END:
                    return
                t = time.perf_counter()
                # The shard is held only when there is something to write (pages, or a failed document's pages).
                if any(isinstance(m, Encoded) or (isinstance(m, (Failed, End)) and m.doc.stored) for m in items):
                    with self.store.window():
                        self._apply(items)
                else:
                    self._apply(items)
                self.add_time("store_s", time.perf_counter() - t)
                pause_point("after_write", idle=self.store.yield_if_wanted)

    def _apply(self, items: list[Message]) -> None:
        report = self.report
        encoded = [m for m in items if isinstance(m, Encoded)]
        if encoded:
            now = utc_now()
            points = [
                PagePoint(
                    m.page.point_id,
                    page_payload(m.page, m.doc, int(m.tokens.shape[0]), self.model.name, now),
                    to_numpy(m.tokens),
                )
                for m in encoded
            ]
            self.bind()
            crash_point("before_upsert")
            self.store.upsert(points)
            crash_point("after_upsert")
            for m in encoded:
                m.doc.stored.add(m.page.page)
            for point in points:
                source = point.payload["text_source"]
                report.text_pages[source or "none"] += 1
                if source is None and self.settings.ocr_text:
                    self.untexted.append(point.point_id)
            report.pages_added += len(points)
            self.progress.update(len(points))
        for m in items:
            doc = m.doc
            if isinstance(m, Start):
                report.pages_skipped += doc.resumed
            elif isinstance(m, End):
                if self.dry_run:
                    report.pages_added += len(doc.todo())  # what the run would store
                if self.dry_run or len(doc.stored) >= doc.pages:
                    self.completed.add(doc.doc_id)
                    (report.documents_updated if doc.replaces else report.documents_added).append(doc.name)
                else:
                    self._fail(doc, "not every page was stored")
            elif isinstance(m, Skip) and doc.elsewhere:
                report.documents_other_partition.append(doc.name)
            elif isinstance(m, Skip):
                report.pages_skipped += doc.pages
                # With older versions under this path, an interrupted run stored the new one: the update ends now.
                (report.documents_updated if doc.replaces else report.documents_skipped).append(doc.name)
            elif isinstance(m, Failed):
                self._fail(doc, m.reason)

    def _fail(self, doc: Doc, reason: str) -> None:
        doc.failed = True
        if doc.doc_id and doc.doc_id not in self.completed and doc.stored and not self.dry_run:
            # A document counts only when whole: its pages go, this run's and any an earlier run left.
            self.store.delete_document(doc.doc_id)
            self.report.pages_removed += len(doc.stored)
            self.catalog.forget(doc.doc_id)
        self.report.failures.append(Failure(doc.name, reason))


def _reason(exc: Exception) -> str:
    if isinstance(exc, InputError):
        return str(exc)
    return f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
