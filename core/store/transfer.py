"""Moving a collection between stores (the embedded engine and a server, either way) through one portable file.

The file is a zip:
    collection.json       format, version, the collection's record (model, revision, dim)
    points/NNNNNN.json    one batch of pages: id, payload, token rows, float16 patch, sha256 of the exact tokens
    points/NNNNNN.f16     the same batch's tokens as little-endian float16, rows of all its pages in order
    manifest.json         written last: point and batch counts and a digest over every page's digest
Tokens are kept as the store keeps them (float16 plus the patch of values float16 cannot hold), so they come back
bit for bit; the search vectors (`unit`, `pooled`, `dense`) are derived from them again on import, with the
target's layout. Export and import hold one batch at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from core.errors import StoreError, TransferError
from core.store.base import PageStore
from core.store.record import FUSION, built_with
from core.store.storage import PagePoint, from_storage, to_storage

FORMAT = "token-direct-export"
VERSION = 1
# Pages per batch. A full-size page is 2.9 MB as float16, but the engines hand tokens back as Python lists,
# about 45 MB per page while a batch is converted: keep batches small.
DEFAULT_BATCH = 4


def token_digest(tokens: np.ndarray) -> str:
    """sha256 of a page's exact token values (float32, little-endian) and shape."""
    exact = np.ascontiguousarray(tokens, dtype="<f4")
    return hashlib.sha256(repr(exact.shape).encode() + exact.tobytes()).hexdigest()


@dataclass
class ExportReport:
    file: str
    collection: str
    model: str
    points: int
    batches: int
    bytes: int
    digest: str
    verified: bool  # the file was read back: every page's tokens match the digest taken from the store
    unfinished: list[str] = field(default_factory=list)  # sources of documents that lack pages (an interrupted ingest)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ImportReport:
    file: str
    collection: str
    model: str
    points: int  # pages in the file
    added: int = 0  # pages the target did not have
    replaced: int = 0  # pages it had already (same ids: a repeated import changes nothing)
    verified: int = 0  # pages read back from the target whose tokens match the file's digest
    mismatched: list[str] = field(default_factory=list)  # pages missing from the target or differing
    target_points: int = 0  # all pages in the target collection afterwards
    digest: str = ""

    @property
    def ok(self) -> bool:
        return not self.mismatched and self.verified == self.points

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def export_collection(store: PageStore, path: str | Path, batch_size: int = DEFAULT_BATCH) -> ExportReport:
    """Write every page of `store` to `path`. The file appears only when complete and read back correctly."""
    path = Path(path)
    record = store.record()
    if record is None:
        raise StoreError(f"collection {store.collection!r} does not exist; nothing to export")
    partial = path.with_name(path.name + ".partial")
    digests = hashlib.sha256()
    points = batches = 0
    documents: dict[str, list] = {}  # doc_id -> [pages it has, pages exported, source]
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            zf.writestr("collection.json", json.dumps({"format": FORMAT, "version": VERSION, "record": record}))
            for batch in store.scroll(batch_size, with_tokens=True):
                entries, vectors = [], []
                for p in batch:
                    doc = documents.setdefault(p.payload.get("doc_id"), [p.payload.get("pages", 0), 0, ""])
                    doc[1] += 1
                    doc[2] = str(p.payload.get("source", ""))
                    form = to_storage(p.tokens)
                    digest = token_digest(p.tokens)
                    digests.update(digest.encode())
                    entries.append(
                        {
                            "id": p.point_id,
                            "payload": p.payload,
                            "rows": int(p.tokens.shape[0]),
                            "patch": form.patch or None,
                            "sha256": digest,
                        }
                    )
                    vectors.append(form.vectors)
                name = f"points/{batches:06d}"
                zf.writestr(f"{name}.json", json.dumps(entries, ensure_ascii=False))
                # float16 noise hardly compresses: store it as it is
                zf.writestr(f"{name}.f16", np.concatenate(vectors).astype("<f2").tobytes(), zipfile.ZIP_STORED)
                points += len(batch)
                batches += 1
            zf.writestr(
                "manifest.json", json.dumps({"points": points, "batches": batches, "digest": digests.hexdigest()})
            )
        # Read the file back: each page's tokens must match the digest taken from the store.
        with ExportFile(partial) as written:
            if written.points != points or sum(len(b) for b in written.pages()) != points:
                raise TransferError(f"the export written to {partial} does not read back whole")
        if store.count() != points:
            raise TransferError(
                f"collection {store.collection!r} changed during the export ({points} pages written, "
                f"{store.count()} now); export again when no ingest is running"
            )
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise TransferError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return ExportReport(
        file=str(path),
        collection=store.collection,
        model=record["model"],
        points=points,
        batches=batches,
        bytes=path.stat().st_size,
        digest=digests.hexdigest(),
        verified=True,
        unfinished=sorted(source for pages, exported, source in documents.values() if exported < pages),
    )


class ExportFile:
    """An export file, opened for reading; `pages()` checks each page's tokens against its digest."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.zip = zipfile.ZipFile(self.path)
            header = json.loads(self.zip.read("collection.json"))
            if header.get("format") != FORMAT:
                raise TransferError(f"{self.path} is not a token-direct export")
            if header.get("version") != VERSION:
                raise TransferError(f"{self.path} is a version {header.get('version')} export; this reads {VERSION}")
            manifest = json.loads(self.zip.read("manifest.json"))
        except KeyError as exc:
            raise TransferError(f"{self.path} is incomplete ({exc.args[0]} missing): export it again") from None
        except (OSError, zipfile.BadZipFile, ValueError) as exc:
            raise TransferError(f"cannot read {self.path} as an export: {exc}") from None
        self.record = header["record"]
        self.identity = built_with(self.record)
        self.points = int(manifest["points"])
        self.batches = int(manifest["batches"])
        self.digest = manifest["digest"]

    def batch_entries(self) -> Iterator[list[dict]]:
        """Each batch's pages without their tokens: id, payload, rows, sha256."""
        for k in range(self.batches):
            yield self._read_json(k)

    def pages(self) -> Iterator[list[PagePoint]]:
        """Each batch's pages with their exact tokens, checked against the recorded digests."""
        dim = self.identity.dim
        digests = hashlib.sha256()
        for k in range(self.batches):
            entries = self._read_json(k)
            try:
                raw = self.zip.read(f"points/{k:06d}.f16")
            except (KeyError, zipfile.BadZipFile, OSError) as exc:
                raise TransferError(f"{self.path} is damaged (batch {k}: {exc})") from None
            rows = sum(e["rows"] for e in entries)
            if len(raw) != rows * dim * 2:
                raise TransferError(f"{self.path} is damaged (batch {k} holds {len(raw)} bytes of tokens)")
            vectors = np.frombuffer(raw, dtype="<f2").reshape(rows, dim)
            batch, start = [], 0
            for e in entries:
                tokens = from_storage(vectors[start : start + e["rows"]], e["patch"])
                start += e["rows"]
                if token_digest(tokens) != e["sha256"]:
                    raise TransferError(f"{self.path} is damaged (the tokens of page {e['id']} do not match)")
                digests.update(e["sha256"].encode())
                batch.append(PagePoint(point_id=e["id"], payload=e["payload"], tokens=tokens))
            yield batch
        if digests.hexdigest() != self.digest:
            raise TransferError(f"{self.path} is damaged (its pages do not match its manifest)")

    def _read_json(self, k: int) -> list[dict]:
        try:
            return json.loads(self.zip.read(f"points/{k:06d}.json"))
        except (KeyError, zipfile.BadZipFile, OSError, ValueError) as exc:
            raise TransferError(f"{self.path} is damaged (batch {k}: {exc})") from None

    def close(self) -> None:
        self.zip.close()

    def __enter__(self) -> "ExportFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def import_collection(store: PageStore, path: str | Path) -> ImportReport:
    """Write the pages of an export file into `store`, then read them back and compare each page's digest.

    The whole file is checked before anything is written. The target collection is created with the file's
    model record, or must have been built with the same model. Point ids are kept, so importing again changes
    nothing. If writing fails half way, a collection this import created is removed again; an existing one keeps
    the whole pages written so far, and running the same import again completes it.
    """
    with ExportFile(path) as export:
        checked = rows = 0
        for batch in export.pages():  # every digest, before the target is touched
            checked += len(batch)
            rows = max([rows, *(len(p.tokens) for p in batch)])
        if checked != export.points:
            raise TransferError(f"{export.path} holds {checked} pages, its manifest says {export.points}")
        report = ImportReport(
            file=str(export.path),
            collection=store.collection,
            model=export.identity.model,
            points=export.points,
            digest=export.digest,
        )
        created = store.record() is None
        # refuses a collection built with another model; a new one holds the longest page (files of older versions
        # do not record the most tokens a page may have)
        store.bind(replace(export.identity, max_tokens=max(export.identity.max_tokens, rows)), create=True)
        try:
            if created and FUSION in export.record:  # weights calibrated for hybrid search travel with the pages
                store.save_fusion(export.record[FUSION])
            for batch in export.pages():
                present = store.existing(p.point_id for p in batch)
                store.upsert(batch)
                report.replaced += len(present)
                report.added += len(batch) - len(present)
        except BaseException:
            if created:
                store.discard()
            raise
        for entries in export.batch_entries():
            stored = {p.point_id: p.tokens for p in store.retrieve([e["id"] for e in entries], with_tokens=True)}
            for e in entries:
                tokens = stored.get(e["id"])
                if tokens is not None and token_digest(tokens) == e["sha256"]:
                    report.verified += 1
                else:
                    report.mismatched.append(e["id"])
        report.target_points = store.count()
    return report


__all__ = ["export_collection", "import_collection", "ExportFile", "ExportReport", "ImportReport", "TransferError"]
