"""Parallel ingest: N workers, each given `--partition I/N`, share a corpus by doc_id. With the tiny model on small
pages (one 1024 px view each): the partitions cover a folder exactly once, into separate collections or into one;
a worker skips the others' files unencoded, and cleans and prunes only its own documents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.pages import count_pages, file_digest, point_id
from core.store import EdgeStore, PagePoint, open_store
from ingest import Ingestor
from ingest.plan import Partition
from tests.helpers import SMALL, cli_env, ok_json, page_image, run_here

N = 3


def owner(path: Path, n: int = N) -> int:
    doc_id = file_digest(path)
    return next(i for i in range(n) if Partition(i, n).owns(doc_id))


def make_corpus(folder: Path) -> Path:
    """A two-page PDF and single-page images, as few as give each of N partitions a document and each of 2 halves
    two (one to delete, one to keep)."""
    folder.mkdir(parents=True, exist_ok=True)
    pages = [page_image(["report 0", "first page"], size=SMALL), page_image(["report 0", "second page"], size=SMALL)]
    pages[0].save(folder / "report.pdf", save_all=True, append_images=pages[1:], resolution=100)
    for k in range(60):
        owners = [(owner(f), owner(f, 2)) for f in folder.iterdir()]
        if all(any(o[0] == i for o in owners) for i in range(N)) and all(
            sum(o[1] == i for o in owners) >= 2 for i in range(2)
        ):
            break
        page_image([f"note {k}"], size=SMALL).save(folder / f"note-{k:02d}.png")
    return folder


def point_ids(folder: Path, partition: Partition | None = None) -> set[str]:
    ids = set()
    for f in sorted(folder.iterdir()):
        doc_id = file_digest(f)
        if partition is None or partition.owns(doc_id):
            ids.update(point_id(doc_id, k) for k in range(1, count_pages(f) + 1))
    return ids


def stored(settings) -> dict[str, dict]:
    store = EdgeStore(settings.shard_path(), settings.collection, wait=5)
    try:
        return {p.point_id: p.payload for batch in store.scroll(256, with_tokens=False) for p in batch}
    finally:
        store.close()


def ingest(settings, folder: Path, partition: Partition, prune: bool = False) -> dict:
    with Ingestor.from_settings(settings) as ingestor:
        return ingestor.ingest([folder], prune=prune, partition=partition).to_dict()


def names(paths: list[str]) -> set[str]:
    return {Path(p).name for p in paths}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("partition") / "docs")


def test_n_partitions_into_separate_collections_cover_a_folder_exactly_once(corpus, settings):
    files = {f.name for f in corpus.iterdir()}
    collections = []
    for i in range(N):
        s = settings.model_copy(update={"collection": f"part-{i}"})
        report = ingest(s, corpus, Partition(i, N))
        mine = {f.name for f in corpus.iterdir() if owner(f) == i}
        assert report["failures"] == [] and report["partition"] == f"{i}/{N}"
        assert names(report["documents_added"]) == mine
        assert names(report["documents_other_partition"]) == files - mine  # skipped, not encoded
        points = stored(s)
        assert points.keys() == point_ids(corpus, Partition(i, N))
        assert report["pages_added"] == len(points)
        collections.append(set(points))
    assert set.union(*collections) == point_ids(corpus)  # every page of every file...
    assert sum(map(len, collections)) == len(point_ids(corpus))  # ...once: no page in two partitions


def test_workers_of_one_collection_share_it_without_touching_each_others_documents(corpus, settings, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for f in corpus.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    halves = [Partition(0, 2), Partition(1, 2)]
    for half in halves:
        ingest(settings, folder, half)
    assert stored(settings).keys() == point_ids(folder)

    # Run again: nothing is encoded, and every file, of either partition, is recognised by its record, unread.
    again = ingest(settings, folder, halves[0])
    assert again["pages_added"] == 0 and again["timings"]["hash_s"] == 0
    assert names(again["documents_other_partition"]) == {f.name for f in folder.iterdir() if owner(f, 2) == 1}

    # An unfinished document of partition 1 (its worker was killed, or is writing it right now) and one file of
    # each partition deleted: worker 0 cleans and prunes only its own.
    theirs = next(f"{k:064x}" for k in range(1000) if halves[1].owns(f"{k:064x}"))
    with open_store(settings) as store:
        dim = store.record()["dim"]
        tokens = np.ones((4, dim), dtype=np.float32)
        payload = {"doc_id": theirs, "source": str(folder / "writing.pdf"), "page": 1, "pages": 3}
        store.upsert([PagePoint(point_id(theirs, 1), payload, tokens)])
    gone = {i: next(f for f in sorted(folder.iterdir()) if owner(f, 2) == i) for i in (0, 1)}
    gone_ids = {i: file_digest(f) for i, f in gone.items()}
    for f in gone.values():
        f.unlink()
    report = ingest(settings, folder, halves[0], prune=True)
    assert names(report["documents_pruned"]) == {gone[0].name} and report["documents_cleaned"] == []
    left = {p["doc_id"] for p in stored(settings).values()}
    assert theirs in left and gone_ids[1] in left and gone_ids[0] not in left
    report = ingest(settings, folder, halves[1], prune=True)
    assert names(report["documents_pruned"]) == {gone[1].name}
    assert names(report["documents_cleaned"]) == {"writing.pdf"}
    assert stored(settings).keys() == point_ids(folder)


def test_the_command_line_takes_a_partition_and_refuses_a_bad_one(corpus, tiny_model_dir, tmp_path):
    env = cli_env(tiny_model_dir, tmp_path / "data")
    report = ok_json(run_here(["ingest", corpus, "--partition", "1/3", "--json"], env, tmp_path))
    assert report["partition"] == "1/3"
    assert names(report["documents_added"]) == {f.name for f in corpus.iterdir() if owner(f) == 1}
    bad = run_here(["ingest", corpus, "--partition", "3/3"], env, tmp_path)
    assert bad.returncode == 2 and "--partition takes I/N" in bad.stderr
