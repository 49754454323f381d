"""Ingest: documents -> page images -> vision tokens -> one Qdrant point per page.

    from ingest import Ingestor
    with Ingestor.from_settings() as ingestor:
        report = ingestor.ingest(["docs/"])

Safe to run at any time, any number of times, and to kill at any moment:

- one writer per collection: a lock file under DATA_DIR/locks names the running job; a killed job's lock is taken over;
- incremental: a file whose record (size and mtime, else its sha256) matches a complete stored document is skipped;
  a file changed in place gets its new pages stored before the old version's pages are removed;
- resumable: point ids are deterministic (uuid5 of doc_id and page), and a document counts as stored only when all
  its pages are. A run over an interrupted document's file finishes it (its pages are skipped, the rest added) or,
  when the file is gone or changed, removes the unfinished document's pages; runs over other paths leave it be.
- careful pruning: --prune removes nothing under a path that holds no supported file, or when most of its documents
  vanished at once (a missing volume, not deleted files), unless forced; --dry-run says what would go.
- streaming: a planning thread hashes and counts pages ahead, a reading thread rasterizes, the calling thread
  encodes, a store thread writes; bounded queues after the planner keep only a few pages in memory, whatever the
  length of a document.

    plan.py      what happens to each file, and to what was stored before (pure decisions)
    pipeline.py  the threads and their typed messages
    ingestor.py  a run: lock, plan, pipeline, tidying, decoded text, run log
    payload.py   a page point's payload
    runlog.py    the writer lock and the run log
    progress.py  the progress bar, or a line now and then
    hooks.py     crash and pause points for the tests
"""

from __future__ import annotations

from ingest.ingestor import Ingestor, read_catalog
from ingest.payload import page_payload
from ingest.report import Failure, IngestReport

__all__ = ["Ingestor", "IngestReport", "Failure", "page_payload", "read_catalog"]
