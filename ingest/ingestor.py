"""The Ingestor: one run from paths to stored pages, then tidying, the optional decoded text, and the run log."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterable

from config import Settings
from core.clock import utc_now
from core.errors import BusyError, StoreError, TokenDirectError, exit_code_for
from core.model import OcrModel, prompt_for
from core.pages import Limits, discover, display_path, point_id
from core.stage import Stage
from core.store import PageStore
from core.tensors import to_torch
from core.text import FROM_DECODER, normalize
from ingest import plan, runlog
from ingest.hooks import crash_point
from ingest.payload import location
from ingest.pipeline import Pipeline
from ingest.plan import WHOLE, Catalog, Partition, StoredDoc
from ingest.progress import Progress
from ingest.report import Failure, IngestReport

log = logging.getLogger("tokendirect.ingest")

INGEST_STORE_WAIT = 600.0  # seconds ingest waits for the embedded shard between its batches
STAGE_TIMINGS = ("hash_s", "rasterize_s", "text_s", "load_s", "encode_s", "store_s")


class Ingestor(Stage):
    def __init__(self, model: OcrModel, store: PageStore, settings: Settings | None = None):
        super().__init__(model, store, settings)
        self.limits = Limits.from_settings(self.settings)
        self._bound = False
        # A background job can afford to queue behind a long decode; a search should not wait that long.
        store.allow_wait(INGEST_STORE_WAIT)

    @property
    def lock_path(self) -> Path:
        return runlog.writer_lock_path(self.settings)

    # -- the run ---------------------------------------------------------------------------------------------

    def ingest(
        self,
        paths: Iterable[str | Path],
        progress: bool | str | None = None,
        prune: bool = False,
        wait: float = 0.0,
        force: bool = False,
        dry_run: bool = False,
        partition: Partition = WHOLE,
    ) -> IngestReport:
        """Store every page of every supported file under `paths` (see the package's notes for what a run
        guarantees). `prune` also removes documents whose source file under `paths` is gone, except where that
        looks like a missing volume (nothing left under a path, or most of its documents gone at once) unless
        `force`; `dry_run` plans everything and changes nothing, reporting what a run would do; `wait` is how long
        to wait for another ingest of the same collection to finish (else BusyError); `progress`: "bar", "lines",
        False, or None (a bar on a terminal, a line now and then elsewhere). With a `partition` (worker I of N),
        only the documents of that partition are stored, cleaned and pruned; the others are skipped unencoded and
        named in `documents_other_partition`.

        A run stopped by an expected failure (a full disk, a store that went away) raises it with what was done so
        far in its `details["report"]`."""
        paths = list(paths)
        started = utc_now()
        t0 = time.perf_counter()
        report = IngestReport(dry_run=dry_run, partition=None if partition == WHOLE else str(partition))
        failure: BaseException | None = None
        try:
            lock = runlog.take_writer_lock(self.settings, wait, partition)
            try:
                self._run(paths, report, prune, force, dry_run, progress, partition)
            finally:
                lock.release()
            return report
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self.store.release()  # whatever happened, other processes get the shard back now
            report.timings["wall_s"] = round(time.perf_counter() - t0, 3)
            if isinstance(failure, TokenDirectError) and not isinstance(failure, BusyError):
                failure.details = {"report": report.to_dict()}
            status, error = _outcome(failure, report)
            code = exit_code_for(failure) if failure is not None else (0 if report.ok else 1)
            runlog.append_run(self.settings, paths, report.to_dict(), started, status, error, code)

    def _run(
        self, paths: list, report: IngestReport, prune: bool, force: bool, dry_run: bool, progress, partition: Partition
    ) -> None:
        timings = report.timings
        files, missing = discover(paths, report.files_skipped)
        report.failures.extend(Failure(p, r) for p, r in missing)
        t = time.perf_counter()
        with self.store.window():
            # A wrong model fails before any work; a new collection is only created once a page is ready for it.
            self._bound = self._record() is not None
            if self._bound:
                self.store.bind(self.model.identity, create=False)
            # Every partition's documents: a file of another partition is recognised by its record, unread.
            catalog = Catalog(read_catalog(self.store) if self._bound else {}, partition)
        timings["plan_s"] = round(time.perf_counter() - t, 3)

        shown = Progress(_progress_mode(progress))
        pipeline = Pipeline(
            self.model, self.store, self.settings, self.limits, catalog, report, self._bind, shown, dry_run
        )
        pipeline.run(files)

        # Unfinished documents an earlier run left, old versions, moved and (with --prune) vanished sources.
        t = time.perf_counter()
        roots = [display_path(Path(p).resolve()) for p in paths if Path(p).exists()]
        actions = plan.tidy(catalog, pipeline.docs, pipeline.completed, pipeline.seen, roots, prune, force=force)
        if dry_run:
            self._carry_out(actions, report, dry_run=True)  # reported, not done
        else:
            with self.store.window():
                self._carry_out(actions, report)
                if self._bound:
                    # The embedded engine builds the first stage's HNSW index only when asked; asked every run, it
                    # also finishes an index an earlier run could not build (a full disk). Nothing to build: instant.
                    self.store.optimize()
        timings["finish_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        self._decode_texts(pipeline.untexted, report)
        timings["ocr_text_s"] = round(time.perf_counter() - t, 3)
        for key in STAGE_TIMINGS:
            timings[key] = round(pipeline.timings.get(key, 0.0), 3)

    def _bind(self) -> None:
        if not self._bound:
            self.store.bind(self.model.identity)
            self._bound = True

    def _record(self) -> dict | None:
        try:
            return self.store.record()
        except StoreError:
            # A run killed between creating the collection and writing its record leaves one that would be refused
            # forever: with no page in it, it is safe to start again.
            if self.store.abandon_unfinished():
                log.warning("removed the empty, unfinished collection %r an earlier run left", self.settings.collection)
                return None
            # On a server, another worker may have just created it: its record comes next.
            return self.store.record(wait=self.store.record_wait)

    # -- after the pages are written -------------------------------------------------------------------------

    def _carry_out(self, actions: list[plan.Action], report: IngestReport, dry_run: bool = False) -> None:
        for action in actions:
            if isinstance(action, plan.Withhold):
                documents = [d.source for d in action.docs]
                report.prune_withheld.append({"path": action.root, "reason": action.reason, "documents": documents})
                report.failures.append(
                    Failure(
                        action.root,
                        f"not pruned: {action.reason}; its {len(documents)} vanished documents are kept "
                        "(--dry-run lists them, --force prunes them)",
                    )
                )
                continue
            if isinstance(action, plan.Unfinished):
                report.documents_unfinished.append(action.doc.source)
                continue
            if isinstance(action, plan.Move):
                if not dry_run:
                    self._move(action.doc, action.to)
                continue
            if not dry_run:
                if isinstance(action, plan.Replace):
                    crash_point("before_delete")
                self.store.delete_document(action.doc.doc_id)
            report.pages_removed += len(action.doc.stored)
            if isinstance(action, plan.Clean):
                report.documents_cleaned.append(action.doc.source)
            elif isinstance(action, plan.Prune):
                report.documents_pruned.append(action.doc.source)

    def _move(self, d: StoredDoc, to: plan.Doc) -> None:
        fields = location(to)
        for page in sorted(d.stored):
            self.store.set_payload(point_id(d.doc_id, page), fields)

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


def _progress_mode(progress: bool | str | None) -> str | None:
    if progress is True:
        return "bar"
    if progress is False:
        return "off"
    return progress


def _outcome(failure: BaseException | None, report: IngestReport) -> tuple[str, str | None]:
    """The run log's status and error for a run that ended with `failure` (None: it ended normally)."""
    if failure is None:
        return ("ok" if report.ok else "partial"), None
    if isinstance(failure, BusyError):
        return "busy", str(failure)
    if isinstance(failure, KeyboardInterrupt):
        return "interrupted", "interrupted (Ctrl-C)"
    if isinstance(failure, TokenDirectError):
        return "error", str(failure)
    return "error", f"{type(failure).__name__}: {failure}"


def read_catalog(store: PageStore) -> dict[str, StoredDoc]:
    """Every stored document from its pages' payloads (no vectors read)."""
    docs: dict[str, StoredDoc] = {}
    for batch in store.scroll(batch_size=256, with_tokens=False):
        for p in batch:
            pl = p.payload
            d = docs.get(pl["doc_id"])
            if d is None:
                d = docs[pl["doc_id"]] = StoredDoc(
                    doc_id=pl["doc_id"],
                    pages=int(pl.get("pages", 0)),
                    source=str(pl.get("source", "")),
                    file_size=pl.get("file_size"),
                    file_mtime_ns=pl.get("file_mtime_ns"),
                )
            d.stored.add(int(pl["page"]))
    return docs
