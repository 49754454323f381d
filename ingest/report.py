"""What an ingest run reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from core.text import FROM_DECODER, FROM_PDF


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
    # unfinished documents whose files lie outside this run's paths: left for a run over them
    documents_unfinished: list[str] = field(default_factory=list)
    # files whose document is in another worker's partition (--partition): skipped unencoded
    documents_other_partition: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    # vanished documents --prune kept, per path: {"path", "reason", "documents"} (--force prunes them)
    prune_withheld: list[dict] = field(default_factory=list)
    files_skipped: dict[str, int] = field(default_factory=dict)  # files in the folders that are not ingested, by reason
    timings: dict[str, float] = field(default_factory=dict)
    # pages added, by where their text came from: the PDF's text layer, the decoder (--ocr-text), or none
    text_pages: dict[str, int] = field(default_factory=lambda: {FROM_PDF: 0, FROM_DECODER: 0, "none": 0})
    dry_run: bool = False  # nothing was changed: the counts say what a run would do
    partition: str | None = None  # "I/N" for worker I of N; None: the whole corpus

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "IngestReport":
        return cls(**{**data, "failures": [Failure(**f) for f in data.get("failures", [])]})
