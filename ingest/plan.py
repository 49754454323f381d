"""What ingest does with each file, decided from plain data: no threads, model or store.

A run sees each input file twice at most: first by its record (size and mtime), which may settle it unread, then by
its bytes (sha256). After the pages are written, `tidy` decides what happens to what the collection held before:
unfinished documents under this run's paths are cleaned (those elsewhere are left for a run over their paths), old
versions removed, moved files re-pointed, vanished ones pruned - unless the vanishing looks like a missing volume
rather than deleted files (a path that holds no supported file, or most of its documents gone at once): then nothing
under that path is pruned without `force`.

Several workers may share a collection, each with a `Partition` of the documents: once a file's doc_id is known
(from its record or its bytes) a worker leaves another partition's file alone, and `tidy` acts on its own only.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UsageError


@dataclass(frozen=True)
class Partition:
    """A stable share of the documents, by doc_id, for one of `count` ingest workers: worker `index` (0 to count - 1)
    takes the documents whose doc_id hashes to `index` modulo `count`. The hash is sha256, the same on every host and
    in every run, so N workers given 0/N to N-1/N take every document exactly once between them, whatever order or
    subset of files each sees; a document keeps its worker as long as its bytes do (a changed file is a new doc_id,
    and may move to another worker)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> "Partition":
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match or not int(match[1]) < int(match[2]):
            raise UsageError(
                f"--partition takes I/N, worker I of N counted from 0 (0/3, 1/3 and 2/3 share a corpus): got {text!r}"
            )
        return cls(int(match[1]), int(match[2]))

    def owns(self, doc_id: str) -> bool:
        if self.count == 1:
            return True
        return int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big") % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE = Partition()  # a single worker: every document is its own


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
    elsewhere: bool = False  # of another worker's partition: neither encoded nor tidied by this one
    texts: list[str] = field(default_factory=list)  # each page's PDF text layer ("" where it has none)

    def todo(self) -> list[int]:
        """The page numbers still to store."""
        return [k for k in range(1, self.pages + 1) if k not in self.stored]


class Catalog:
    """What the collection held when the run began: stored documents by doc_id and by source."""

    def __init__(self, docs: dict[str, StoredDoc] | None = None, partition: Partition = WHOLE):
        self.docs = docs or {}
        self.partition = partition
        self.by_source: dict[str, list[StoredDoc]] = {}
        for d in self.docs.values():
            self.by_source.setdefault(d.source, []).append(d)

    def owns(self, doc_id: str) -> bool:
        """Whether the document is in this worker's partition (every document is, for a single worker)."""
        return self.partition.owns(doc_id)

    def stored_whole(self, doc_id: str) -> bool:
        d = self.docs.get(doc_id)
        return d is not None and d.complete

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


def settle_partition(doc: Doc, catalog: Catalog) -> bool:
    """Once `doc.doc_id` is known (from its record or its bytes): True when the document is in another worker's
    partition. That worker encodes it; this one skips it unrasterized and leaves its stored pages alone."""
    doc.elsewhere = not catalog.owns(doc.doc_id)
    return doc.elsewhere


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


# Prune nothing under a path when more than this share of its stored documents would go at once (without `force`).
PRUNE_MAX_SHARE = 0.5


@dataclass(frozen=True)
class Clean:
    """An unfinished document an earlier run left, whose file under this run's paths changed or is gone: its pages
    go."""

    doc: StoredDoc


@dataclass(frozen=True)
class Unfinished:
    """An unfinished document this run cannot finish (its file lies outside this run's paths, or under a path that
    holds no file now): its pages stay for a run over its file."""

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


@dataclass(frozen=True)
class Withhold:
    """Documents gone from under `root` that are not pruned, because the way they vanished looks like a missing
    volume rather than deleted files (`reason`); `force` prunes them."""

    root: str
    docs: tuple[StoredDoc, ...]
    reason: str


Action = Clean | Unfinished | Replace | Move | Prune | Withhold


def tidy(
    catalog: Catalog,
    docs: list[Doc],
    completed: set[str],
    seen: dict[str, Doc],
    roots: list[str],
    prune: bool,
    exists=os.path.exists,
    force: bool = False,
) -> list[Action]:
    """What to do with the documents the collection held before this run, once its pages are written. `completed`
    holds the doc ids stored whole this run, `seen` the first file of this run for each doc id, `roots` the paths
    this run was given (resolved); `force` prunes even where the vanishing looks like a missing volume.

    Only documents of this worker's partition are acted on: another worker may be storing its own at this moment. A
    file's new version of another partition supersedes this worker's old one once it is stored whole (before that,
    the old version stays, so a search always finds one of them)."""
    found = {
        doc.source: doc
        for doc in docs
        if doc.doc_id and not doc.failed and (not doc.elsewhere or catalog.stored_whole(doc.doc_id))
    }
    current = {source: doc.doc_id for source, doc in found.items()}
    present = {doc.source for doc in docs}  # seen this run, even if it failed: not gone
    empty = {root for root in roots if not any(under(source, [root]) for source in present)}
    actions: list[Action] = []
    gone_under: dict[str, list[StoredDoc]] = {}  # root -> documents whose file is gone from under it
    for d in catalog.docs.values():
        if d.doc_id in completed or not catalog.owns(d.doc_id):
            continue
        root = innermost(d.source, roots)
        if not d.complete:
            # Only a run over its file can finish it; where that file is, this run decides (changed or gone).
            actions.append(Clean(d) if root is not None and root not in empty else Unfinished(d))
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
        elif prune and root is not None:
            gone_under.setdefault(root, []).append(d)
    for root, vanished in gone_under.items():
        reason = None if force else _withhold_reason(root, vanished, catalog, roots, root in empty)
        if reason is None:
            actions.extend(Prune(d) for d in vanished)
        else:
            actions.append(Withhold(root, tuple(vanished), reason))
    return actions


def _withhold_reason(root: str, vanished: list[StoredDoc], catalog: Catalog, roots: list[str], empty: bool):
    """Why the documents gone from under `root` look like a missing volume rather than deleted files, or None."""
    if empty:
        return "it holds no supported file now (an unmounted or emptied volume?)"
    stored = sum(1 for d in catalog.docs.values() if d.complete and innermost(d.source, roots) == root)
    if len(vanished) > PRUNE_MAX_SHARE * stored:
        return f"{len(vanished)} of its {stored} stored documents are gone at once"
    return None


def under(source: str, roots: list[str]) -> bool:
    return any(source == r or source.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def innermost(source: str, roots: list[str]) -> str | None:
    """The most specific of `roots` that holds `source`, or None."""
    holding = [r for r in roots if under(source, [r])]
    return max(holding, key=len) if holding else None
