"""How stages opened separately share one store in a process, and what an ingest that stores nothing leaves behind,
on both store engines. Apart from tests/test_pipeline.py, whose shared store holds the process's in-process client
open for its whole module."""

from __future__ import annotations

from core.model import OcrModel
from core.store import open_store
from decode import Decoder
from ingest import Ingestor
from search import Searcher


def test_stages_opened_separately_share_one_store_in_a_process(backend_settings, docs):
    """A shard admits one holder and an in-process client keeps its data in its handle: both are shared."""
    ingestor = Ingestor.from_settings(backend_settings)
    ingestor.ingest([docs / "invoice.png"])
    searcher = Searcher.from_settings(backend_settings)
    decoder = Decoder.from_settings(backend_settings)
    hit = searcher.search("Invoice", top_k=1)[0]
    assert decoder.decode(hit.point_id)
    for stage in (ingestor, searcher, decoder):
        stage.close()
    reopened = open_store(backend_settings)
    # the embedded shard persists on disk; the in-process client's data ended with its last holder
    assert reopened.count() == (1 if backend_settings.qdrant_url is None else 0)
    reopened.close()


def test_only_bad_files_leave_no_collection_behind(backend_settings, tmp_path):
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    with open_store(backend_settings) as store:
        report = Ingestor(OcrModel.from_settings(backend_settings), store, backend_settings).ingest(
            [tmp_path / "broken.pdf", tmp_path / "absent.png"]
        )
        assert [f.path for f in report.failures] == [str(tmp_path / "absent.png"), str(tmp_path / "broken.pdf")]
        assert store.record() is None
