"""Moving a collection: embedded engine -> server mode (qdrant-client in-process) -> embedded engine, through
`export` / `import` files, with every page's tokens read back and compared bit for bit.

The five test pages are ingested once for the module into an embedded store, plus one page holding values
float16 cannot keep; the tests then export and import that collection.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from config import Settings
from core.errors import ModelMismatchError, TransferError
from core.model import ModelIdentity, OcrModel
from core.pages import point_id
from core.store import PagePoint, open_store
from core.store.storage import to_storage
from core.store.transfer import ExportFile, export_collection, import_collection
from ingest import Ingestor
from search.plan import search
from tests.helpers import cli_env, make_docs, ok_json, run_here, usage_error


def every_page(store) -> dict[str, PagePoint]:
    return {p.point_id: p for batch in store.scroll(batch_size=4) for p in batch}


def assert_same_pages(store, source: dict[str, PagePoint]) -> None:
    """Same ids, same payload, the same token values bit for bit."""
    pages = every_page(store)
    assert pages.keys() == source.keys()
    for pid, page in pages.items():
        assert page.payload == source[pid].payload
        assert page.tokens.shape == source[pid].tokens.shape
        assert np.array_equal(page.tokens.view(np.uint32), source[pid].tokens.view(np.uint32)), pid


@pytest.fixture(scope="module")
def src(tmp_path_factory, tiny_model_dir) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("transfer")
    settings = Settings(
        model=str(tiny_model_dir),
        data_dir=root / "src",
        device="cpu",
        batch_size=2,
        qdrant_url=None,
        qdrant_api_key=None,
    )
    store = open_store(settings)
    assert (
        Ingestor(OcrModel.from_settings(settings), store, settings).ingest([make_docs(root / "docs")]).pages_added == 5
    )
    # One more page whose tokens float16 cannot hold everywhere: the patch has to travel too.
    tokens = every_page(store)[point_id(next(iter(store.documents())), 1)].tokens.copy()
    tokens[0, :3] = [1e-7, -3e-6, 70144.0]
    assert to_storage(tokens).patch
    store.upsert([PagePoint(point_id("patched", 1), {"doc_id": "patched", "page": 1}, tokens)])
    pages = every_page(store)
    record = store.record()
    identity = ModelIdentity(record["model"], record["revision"], record["dim"])
    file = root / "pages.zip"
    report = export_collection(store, file, batch_size=4)
    store.close()
    return SimpleNamespace(
        root=root, settings=settings, pages=pages, record=record, identity=identity, file=file, report=report
    )


def fresh(src, name: str, **update) -> Settings:
    return src.settings.model_copy(update={"data_dir": src.root / name, **update})


def test_export_writes_every_page_in_batches(src):
    assert src.report.points == 6 and src.report.batches == 2 and src.report.verified
    with ExportFile(src.file) as export:
        assert export.record == src.record and export.points == 6
        assert [len(b) for b in export.batch_entries()] == [4, 2]
    assert not list(src.root.glob("*.partial"))


def test_embedded_to_server_mode_and_back_keeps_every_token(src):
    with open_store(fresh(src, "unused", qdrant_url=":memory:")) as server:
        report = import_collection(server, src.file)
        assert report.ok and (report.added, report.replaced, report.verified) == (6, 0, 6)
        assert report.target_points == 6 and report.digest == src.report.digest
        assert_same_pages(server, src.pages)
        assert {k: server.record()[k] for k in ("model", "revision", "dim")} == {
            k: src.record[k] for k in ("model", "revision", "dim")
        }
        back_file = src.root / "from-server.zip"
        back = export_collection(server, back_file)
        assert back.points == 6 and back.digest == src.report.digest

    with open_store(fresh(src, "back")) as embedded:
        report = import_collection(embedded, back_file)
        assert report.ok and report.verified == 6
        assert_same_pages(embedded, src.pages)
        # The ranking vectors were derived again from the same tokens: search gives what it gave before.
        query = src.pages[point_id("patched", 1)].tokens
        with open_store(src.settings) as original:
            before = [(h.point_id, h.score) for h in search(original, query, 6)]
        assert [(h.point_id, h.score) for h in search(embedded, query, 6)] == before


def test_importing_again_changes_nothing(src):
    with open_store(fresh(src, "twice")) as store:
        import_collection(store, src.file)
        again = import_collection(store, src.file)
        assert again.ok and (again.added, again.replaced, again.verified, again.target_points) == (0, 6, 6, 6)
        assert_same_pages(store, src.pages)


def test_import_refuses_a_collection_built_with_another_model(src):
    with open_store(fresh(src, "other")) as store:
        store.bind(ModelIdentity("some/other-model", "rev-x", src.identity.dim))
        with pytest.raises(ModelMismatchError, match="some/other-model") as err:
            import_collection(store, src.file)
        assert src.identity.model in str(err.value)
        assert store.count() == 0 and store.record()["model"] == "some/other-model"


def rewrite(source: Path, target: Path, change) -> Path:
    """A copy of an export with some entries changed (`change(name, data)` returns new data, or None to leave
    the entry out); entries are rewritten whole, so the zip itself stays valid."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)
    return target


@pytest.mark.parametrize(
    "damage,message",
    [
        ("tokens", "tokens of page .* do not match"),
        ("manifest", "incomplete"),
        ("batch", "damaged"),
        ("format", "not a token-direct export"),
    ],
)
def test_a_damaged_file_is_refused_before_anything_is_written(src, tmp_path, damage, message):
    def change(name: str, data: bytes):
        if damage == "tokens" and name == "points/000001.f16":
            flipped = bytearray(data)
            flipped[100] ^= 0x01  # one bit of one token value
            return bytes(flipped)
        if damage == "manifest" and name == "manifest.json":
            return None  # an export that stopped before its end
        if damage == "batch" and name == "points/000001.json":
            return None
        if damage == "format" and name == "collection.json":
            return json.dumps({**json.loads(data), "format": "something-else"}).encode()
        return data

    damaged = rewrite(src.file, tmp_path / "damaged.zip", change)
    with open_store(fresh(src, f"damaged-{damage}")) as store:
        with pytest.raises(TransferError, match=message):
            import_collection(store, damaged)
        assert store.record() is None  # not even the collection was made


def test_export_and_import_on_the_command_line(src, tiny_model_dir):
    shutil.copytree(src.settings.data_dir, src.root / "cli-src")
    out = src.root / "cli.zip"
    exported = ok_json(
        run_here(
            ["export", out, "--json", "--batch-size", "5"], cli_env(tiny_model_dir, src.root / "cli-src"), src.root
        )
    )
    assert (exported["points"], exported["batches"], exported["verified"]) == (6, 2, True)
    assert exported["digest"] == src.report.digest and exported["bytes"] == out.stat().st_size

    target = cli_env(tiny_model_dir, src.root / "cli-dst")
    imported = ok_json(run_here(["import", out, "--json"], target, src.root))
    assert imported["ok"] and (imported["points"], imported["verified"], imported["mismatched"]) == (6, 6, [])
    info = ok_json(run_here(["info", "--json"], target, src.root))
    assert (info["points"], info["documents"], info["model"]) == (6, 4, src.record["model"])

    line = usage_error(run_here(["import", src.root / "no-such.zip"], target, src.root))
    assert "no-such.zip" in line
