"""What ingest does with each file, decided from plain data: no threads, model or store.

A run sees each input file twice at most: first by its record (size and mtime), which may settle it unread, then by
its bytes (sha256). After the pages are written, `tidy` decides what happens to what the collection held before:
unfinished documents are cleaned, old versions removed, moved files re-pointed, vanished ones pruned.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class StoredDoc:
    """A document as the collection holds it (read from its pages' payloads)."""

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
    texts: list[str] = field(default_factory=list)  # each page's PDF text layer ("" where it has none)

    def todo(self) -> list[int]:
        """The page numbers still to store."""
        return [k for k in range(1, self.pages + 1) if k not in self.stored]


class Catalog:
    """What the collection held when the run began: stored documents by doc_id and by source."""

    def __init__(self, docs: dict[str, StoredDoc] | None = None):
        self.docs = docs or {}
        self.by_source: dict[str, list[StoredDoc]] = {}
        for d in self.docs.values():
            self.by_source.setdefault(d.source, []).append(d)

    def forget(self, doc_id: str) -> None:
        """A document removed during the run (it failed): nothing is left to tidy."""
        self.docs.pop(doc_id, None)


# -- per file ------------------------------------------------------------------------------------------------------


def settle_unread(doc: Doc, catalog: Catalog, trust_mtime: bool) -> bool:
    """Skip a file without reading it when its record (size and mtime) matches a complete stored document at its
    path: fills in `doc` from that document and returns True."""
    if not trust_mtime:
        return False
    older = catalog.by_source.get(doc.source, [])
    for d in older:
        if d.complete and (d.file_size, d.file_mtime_ns) == (doc.size, doc.mtime_ns):
            doc.doc_id, doc.pages, doc.stored = d.doc_id, d.pages, set(d.stored)
            doc.replaces = [o.doc_id for o in older if o.doc_id != doc.doc_id]
            return True
    return False


def settle_read(doc: Doc, catalog: Catalog, first: Doc) -> bool:
    """Once `doc.doc_id` is known: True when nothing needs encoding, because these bytes are stored whole already
    or another file of this run (`first`, the first seen with them) brings them. Fills in what is stored."""
    stored = catalog.docs.get(doc.doc_id)
    doc.replaces = [d.doc_id for d in catalog.by_source.get(doc.source, []) if d.doc_id != doc.doc_id]
    doc.stored = set(stored.stored) if stored else set()
    if first is not doc or (stored is not None and stored.complete):
        doc.pages = stored.pages if stored else 0
        return True
    return False


def resume(doc: Doc, pages: int) -> list[int]:
    """A document to encode, of `pages` pages: the pages an interrupted run stored count as resumed; returns the
    page numbers still to store."""
    doc.pages = pages
    doc.resumed = len(doc.stored)
    return doc.todo()


# -- after the run -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clean:
    """An unfinished document an earlier run left: its pages go."""

    doc: StoredDoc


@dataclass(frozen=True)
class Replace:
    """An old version of a file changed in place, whose new version is stored whole: its pages go."""

    doc: StoredDoc


@dataclass(frozen=True)
class Move:
    """The same bytes are now at another path (or have a new mtime): the stored pages are re-pointed there."""

    doc: StoredDoc
    to: Doc


@dataclass(frozen=True)
class Prune:
    """A document whose file is gone, under a root of this run (only with --prune)."""

    doc: StoredDoc


Action = Clean | Replace | Move | Prune


def tidy(
    catalog: Catalog,
    docs: list[Doc],
    completed: set[str],
    seen: dict[str, Doc],
    roots: list[str],
    prune: bool,
    exists=os.path.exists,
) -> list[Action]:
    """What to do with the documents the collection held before this run, once its pages are written. `completed`
    holds the doc ids stored whole this run, `seen` the first file of this run for each doc id."""
    found = {doc.source: doc for doc in docs if doc.doc_id and not doc.failed}
    current = {source: doc.doc_id for source, doc in found.items()}
    present = {doc.source for doc in docs}  # seen this run, even if it failed: not gone
    actions: list[Action] = []
    for d in catalog.docs.values():
        if d.doc_id in completed:
            continue
        if not d.complete:
            actions.append(Clean(d))
            continue
        same = found.get(d.source)
        if (
            same is not None
            and same.doc_id == d.doc_id
            and (same.size, same.mtime_ns) != (d.file_size, d.file_mtime_ns)
        ):
            actions.append(
                Move(d, same)
            )  # same bytes, new mtime (touched, copied): recorded, so the next run need not hash
            continue
        superseded = d.source in current and current[d.source] != d.doc_id
        gone = d.source not in present and not exists(d.source)
        if not (superseded or gone):
            continue
        copy = seen.get(d.doc_id)  # the same bytes at another path this run: the record moves there
        if copy is not None and copy.source != d.source:
            actions.append(Move(d, copy))
        elif superseded:
            actions.append(Replace(d))
        elif prune and under(d.source, roots):
            actions.append(Prune(d))
    return actions


def under(source: str, roots: list[str]) -> bool:
    return any(source == r or source.startswith(r.rstrip(os.sep) + os.sep) for r in roots)
