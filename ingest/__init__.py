"""Ingest: documents -> page images -> vision tokens -> one Qdrant point per page.

    from ingest import Ingestor
    report = Ingestor.from_settings().ingest(["docs/"])
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from config import Settings
from core.model import OcrModel, prompt_for
from core.pages import InputError, Page, count_pages, discover, file_digest, point_id, render_pages
from core.store import PagePoint, PageStore, open_store
from core.tensors import to_numpy
from core.text import FROM_DECODER, FROM_PDF, pdf_page_texts, text_fields


@dataclass
class Failure:
    path: str
    reason: str


@dataclass
class IngestReport:
    pages_added: int = 0
    pages_skipped: int = 0
    documents_added: list[str] = field(default_factory=list)
    documents_skipped: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    # pages added, by where their text came from: the PDF's text layer, the decoder (--ocr-text), or none
    text_pages: dict[str, int] = field(default_factory=lambda: {FROM_PDF: 0, FROM_DECODER: 0, "none": 0})

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return asdict(self)


class Ingestor:
    def __init__(self, model: OcrModel, store: PageStore, settings: Settings | None = None):
        self.model = model
        self.store = store
        self.settings = settings or Settings()
        self._bound = False

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "Ingestor":
        s = settings or Settings()
        return cls(OcrModel.from_settings(s), open_store(s), s)

    def ingest(self, paths: Iterable[str | Path], progress: bool | None = None) -> IngestReport:
        """Store every page of every supported file under `paths`. Files already stored are skipped; a file
        that fails is named in the report with its reason and leaves the store as it was."""
        report = IngestReport()
        files, missing = discover(list(paths))
        report.failures.extend(Failure(p, r) for p, r in missing)
        if not files:
            return report
        # A wrong model fails before any work; a new collection is only created once a page is ready for it.
        self._bound = self.store.record() is not None
        if self._bound:
            self.store.bind(self.model.identity, create=False)

        plans = []
        for path in files:
            try:
                doc_id = file_digest(path)
                n = count_pages(path)
            except (InputError, OSError) as exc:
                report.failures.append(Failure(str(path), _reason(exc)))
                continue
            ids = [point_id(doc_id, k) for k in range(1, n + 1)]
            done = self.store.existing(ids) if self._bound else set()
            if len(done) == n:
                report.pages_skipped += n
                report.documents_skipped.append(str(path))
            else:
                plans.append((path, doc_id, n, done))

        total = sum(n - len(done) for _, _, n, done in plans)
        # disable=None: the bar shows on a terminal and stays silent in logs and pipes.
        bar = tqdm(total=total, unit="page", file=sys.stderr, disable=None if progress is None else not progress)
        with bar:
            for path, doc_id, n, done in plans:
                try:
                    added = self._ingest_document(path, doc_id, n, done, bar, report)
                except (InputError, OSError) as exc:
                    if not done and self._bound:  # leave no partial document behind
                        self.store.delete_document(doc_id)
                    report.failures.append(Failure(str(path), _reason(exc)))
                    continue
                report.pages_added += added
                report.pages_skipped += len(done)
                report.documents_added.append(str(path))
        return report

    def _ingest_document(
        self, path: Path, doc_id: str, n: int, done: set[str], bar: tqdm, report: IngestReport
    ) -> int:
        added = 0
        batch: list[Page] = []
        texts = pdf_page_texts(path, n)  # the text layer of every page, in one pass over the file
        for page in render_pages(path, doc_id, self.settings.pdf_dpi):
            if page.point_id in done:
                continue
            batch.append(page)
            if len(batch) == self.settings.batch_size:
                added += self._store_batch(batch, path, texts, report)
                bar.update(len(batch))
                batch = []
        if batch:
            added += self._store_batch(batch, path, texts, report)
            bar.update(len(batch))
        return added

    def _store_batch(self, pages: list[Page], path: Path, texts: list[str], report: IngestReport) -> int:
        tokens = self.model.encode_pages([p.image for p in pages], batch_size=self.settings.batch_size)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        points = [
            PagePoint(
                point_id=page.point_id,
                tokens=to_numpy(t),
                payload={
                    "doc_id": page.doc_id,
                    "source": str(path.resolve()),
                    "file_name": path.name,
                    "page": page.page,
                    "pages": page.pages,
                    "width": page.image.width,
                    "height": page.image.height,
                    "n_tokens": int(t.shape[0]),
                    "model": self.model.name,
                    "ingested_at": now,
                    **text_fields(texts[page.page - 1], FROM_PDF),
                },
            )
            for page, t in zip(pages, tokens)
        ]
        if not self._bound:
            self.store.bind(self.model.identity)
            self._bound = True
        self.store.upsert(points)
        for point, t in zip(points, tokens):
            if point.payload["text_source"] is None and self.settings.ocr_text:
                self._decode_text(point, t)
            report.text_pages[point.payload["text_source"] or "none"] += 1
        return len(points)

    def _decode_text(self, point: PagePoint, tokens) -> None:
        """A page without a text layer gets the matched decoder's reading of its tokens (the very values just
        stored), so BM25 can find it too. Runs after the page is stored: an interrupted run loses only text."""
        text = self.model.generate_from_tokens(tokens, prompt_for("ocr"), self.settings.max_new_tokens)
        self.store.set_text(point.point_id, text, FROM_DECODER)
        point.payload.update(text_fields(text, FROM_DECODER))


def _reason(exc: Exception) -> str:
    if isinstance(exc, InputError):
        return str(exc)
    return f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"


__all__ = ["Ingestor", "IngestReport", "Failure"]
