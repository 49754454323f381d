"""Query encoding does no avoidable work: every view of a query in one model call, and the blank-canvas reference
encoded once per model and canvas size, then read from DATA_DIR by later searchers (and processes); and
`tokendirect bench query` reports where a query's time goes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.model import OcrModel
from core.store import open_store
from search import Searcher
from search.blank import BlankCanvases
from tests.helpers import SMALL, cli_env, page_image, run_here

WORDS = "heron colony nests counted along the river weir gauge reading spring survey".split()


@pytest.fixture
def calls(settings, monkeypatch):
    """The images of each encode_pages call the model makes (a collection exists: searchers bind to it)."""
    model = OcrModel.from_settings(settings)
    with open_store(settings) as store:
        store.bind(model.identity)
    seen: list[list[tuple[int, int]]] = []
    encode = model.encode_pages

    def recording(images, batch_size=4):
        seen.append([im.size for im in images])
        return encode(images, batch_size)

    monkeypatch.setattr(model, "encode_pages", recording)
    return seen


def searcher_for(settings) -> Searcher:
    return Searcher(OcrModel.from_settings(settings), open_store(settings), settings)


def two_view_query(searcher: Searcher) -> str:
    text = " ".join(WORDS)
    while len(searcher.render(text).views) < 2:
        text += " " + text
    return text


def test_every_view_and_an_unknown_blank_canvas_go_in_one_call(settings, calls):
    first = searcher_for(settings)
    text = two_view_query(first)
    views = first.render(text).views
    assert len(views) == 2
    tokens = first.encode_query(text)
    sizes = list(dict.fromkeys(v.size for v in views))
    assert calls == [[v.size for v in views] + sizes]  # one call: the views, then a blank canvas of each size
    assert 0 < tokens.shape[0] < 2 * 257  # blank-canvas tokens left out
    first.encode_query(text)
    assert calls[1] == [v.size for v in views]  # known now: only the views
    folder = first.blank_canvases().folder
    assert folder.parent.parent == settings.data_dir / "cache" and sorted(p.name for p in folder.iterdir()) == sorted(
        f"{w}x{h}.npy" for w, h in sizes
    )
    first.close()

    # A searcher that starts afresh (a new process) reads them from DATA_DIR: the same tokens, nothing encoded
    second = searcher_for(settings)
    second.encode_query(text)
    assert calls[2] == [v.size for v in views]
    for size in sizes:
        assert np.array_equal(second.blank_canvases().get(size), first.blank_canvases().get(size))
    second.close()

    # negative control: another data directory has no cache, so the blank canvases are encoded again
    elsewhere = settings.model_copy(update={"data_dir": settings.data_dir.parent / "other-data"})
    with open_store(elsewhere) as store:
        store.bind(OcrModel.from_settings(elsewhere).identity)
    other = searcher_for(elsewhere)
    other.encode_query(text)
    assert calls[3] == [v.size for v in views] + sizes
    other.close()


def test_a_damaged_or_unwritable_cache_only_costs_the_encoding(settings, calls):
    image = page_image(["Heron colony", "48 nests"], size=SMALL)
    first = searcher_for(settings)
    kept = first.query_tokens(image)
    path = first.blank_canvases().folder / f"{SMALL[0]}x{SMALL[1]}.npy"
    first.close()
    path.write_bytes(b"not an array")
    again = searcher_for(settings)
    assert again.query_tokens(image).shape == kept.shape
    assert calls[-1] == [SMALL, SMALL]  # encoded again with its blank canvas ...
    assert np.load(path).shape == (257, again.model.dim)  # ... and the file replaced
    again.close()

    blocked = settings.model_copy(update={"data_dir": settings.data_dir / "blocked"})
    blocked.data_dir.mkdir(parents=True)
    (blocked.data_dir / "cache").write_text("a file where the cache folder would go")
    with open_store(blocked) as store:
        store.bind(OcrModel.from_settings(blocked).identity)
    searcher = searcher_for(blocked)
    assert searcher.query_tokens(image).shape == kept.shape  # searched all the same
    searcher.close()


def test_the_cache_is_keyed_by_the_weights_and_dtype_not_the_folder():
    key = BlankCanvases.key("/models/a", "local-0123", "torch.bfloat16")
    assert key == BlankCanvases.key("/models/a", "local-0123", "torch.bfloat16")
    assert key.split("-")[0] != BlankCanvases.key("/models/a", "local-9999", "torch.bfloat16").split("-")[0]
    assert key.split("-")[0] != BlankCanvases.key("/models/a", "local-0123", "torch.float32").split("-")[0]


def test_bench_query_reports_each_phase(tmp_path, tiny_model_dir):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    page_image(["Heron colony", "48 nests"], size=SMALL).save(corpus / "page.png")
    args = ["bench", "query", "--corpus", corpus, "--query", "heron nests", "--runs", "1", "--repeat", "1", "--json"]
    proc = run_here(args, cli_env(tiny_model_dir, tmp_path / "data"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["pages"] == 1 and set(data["in_process_ms"]) == {"visual", "text", "hybrid", "rerank"}
    for state in ("empty_cache", "filled_cache"):
        run = data["command_line"][state]
        assert all(v >= 0 for v in run["phases_s"].values()) and run["command_s"] > 0
        assert run["total_s"] == pytest.approx(sum(run["phases_s"].values()), abs=0.01)
    assert data["in_process_ms"]["text"]["encode_p50"] == 0 < data["in_process_ms"]["hybrid"]["encode_p50"]
    assert data["encoding_ms"]["views"] == 2 and data["encoding_ms"]["views_one_call"] > 0
    assert not (tmp_path / "data").exists()  # everything lived in a temporary directory
