"""What ingest decides for each file and for what was stored before: plain data in, decisions out (no threads,
model or store)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from core.errors import UsageError
from ingest import plan
from ingest.plan import WHOLE, Catalog, Clean, Doc, Move, Partition, Prune, Replace, StoredDoc, Unfinished, Withhold


def stored(doc_id: str, source: str, pages: int = 2, have: int | None = None, size=100, mtime=1) -> StoredDoc:
    return StoredDoc(doc_id, pages, source, set(range(1, (pages if have is None else have) + 1)), size, mtime)


def seen(source: str, doc_id: str = "", size=100, mtime=1) -> Doc:
    return Doc(path=Path(source), name=source, source=source, size=size, mtime_ns=mtime, doc_id=doc_id)


# -- per file ------------------------------------------------------------------------------------------------------


def test_an_unchanged_record_settles_a_file_unread():
    catalog = Catalog({"d1": stored("d1", "/docs/a.pdf")})
    doc = seen("/docs/a.pdf")
    assert plan.settle_unread(doc, catalog, trust_mtime=True)
    assert (doc.doc_id, doc.pages, doc.stored, doc.replaces) == ("d1", 2, {1, 2}, [])


def test_a_new_mtime_size_or_distrust_means_reading_the_file():
    catalog = Catalog({"d1": stored("d1", "/docs/a.pdf")})
    assert not plan.settle_unread(seen("/docs/a.pdf", mtime=2), catalog, trust_mtime=True)
    assert not plan.settle_unread(seen("/docs/a.pdf", size=101), catalog, trust_mtime=True)
    assert not plan.settle_unread(seen("/docs/a.pdf"), catalog, trust_mtime=False)


def test_an_unfinished_document_is_never_settled_unread():
    catalog = Catalog({"d1": stored("d1", "/docs/a.pdf", pages=3, have=2)})
    assert not plan.settle_unread(seen("/docs/a.pdf"), catalog, trust_mtime=True)


def test_a_settled_update_names_the_older_versions_it_replaces():
    catalog = Catalog({"new": stored("new", "/docs/a.pdf"), "old": stored("old", "/docs/a.pdf", mtime=0)})
    doc = seen("/docs/a.pdf")
    assert plan.settle_unread(doc, catalog, trust_mtime=True)
    assert doc.doc_id == "new" and doc.replaces == ["old"]


def test_bytes_stored_whole_need_no_encoding():
    catalog = Catalog({"d1": stored("d1", "/elsewhere/a.pdf")})
    doc = seen("/docs/a.pdf", doc_id="d1")
    assert plan.settle_read(doc, catalog, first=doc)
    assert doc.pages == 2 and doc.stored == {1, 2}


def test_a_second_copy_in_the_same_run_is_not_encoded_twice():
    first, copy = seen("/docs/a.pdf", doc_id="d1"), seen("/docs/a-copy.pdf", doc_id="d1")
    assert not plan.settle_read(first, Catalog(), first=first)
    assert plan.settle_read(copy, Catalog(), first=first)


def test_an_interrupted_document_resumes_with_the_pages_it_lacks():
    catalog = Catalog({"d1": stored("d1", "/docs/a.pdf", pages=4, have=2)})
    doc = seen("/docs/a.pdf", doc_id="d1")
    assert not plan.settle_read(doc, catalog, first=doc)
    assert plan.resume(doc, 4) == [3, 4] and doc.resumed == 2


def test_changed_bytes_at_a_stored_path_replace_the_old_version():
    catalog = Catalog({"old": stored("old", "/docs/a.pdf")})
    doc = seen("/docs/a.pdf", doc_id="new")
    assert not plan.settle_read(doc, catalog, first=doc)
    assert doc.replaces == ["old"] and plan.resume(doc, 3) == [1, 2, 3]


# -- after the run -------------------------------------------------------------------------------------------------


def tidy(
    catalog, docs, completed=(), prune=False, roots=("/docs",), exists=lambda path: False, force=False, partition=WHOLE
):
    first = {}
    for d in docs:
        first.setdefault(d.doc_id, d)
    return plan.tidy(
        Catalog(catalog, partition), docs, set(completed), first, list(roots), prune, exists=exists, force=force
    )


def test_an_unfinished_document_whose_file_is_gone_is_cleaned():
    old = stored("d1", "/docs/a.pdf", pages=3, have=1)
    assert tidy({"d1": old}, [seen("/docs/b.pdf", "d2")]) == [Clean(old)]


def test_an_unfinished_document_whose_file_changed_is_cleaned():
    old = stored("d1", "/docs/a.pdf", pages=3, have=1)
    assert tidy({"d1": old}, [seen("/docs/a.pdf", "d2")], completed=["d2"]) == [Clean(old)]


def test_an_unfinished_document_outside_the_runs_paths_is_left_for_a_run_over_its_file():
    old = stored("d1", "/docs/a.pdf", pages=3, have=1)
    other = seen("/other/b.pdf", "d2")
    assert tidy({"d1": old}, [other], completed=["d2"], roots=["/other"]) == [Unfinished(old)]


def test_an_unfinished_document_under_a_path_that_holds_no_file_is_left():
    old = stored("d1", "/docs/a.pdf", pages=3, have=1)
    assert tidy({"d1": old}, []) == [Unfinished(old)]


def test_a_document_completed_this_run_is_left_alone():
    unfinished = stored("d1", "/docs/a.pdf", pages=3, have=1)
    assert tidy({"d1": unfinished}, [seen("/docs/a.pdf", "d1")], completed=["d1"]) == []


def test_an_old_version_is_replaced_once_the_new_one_is_seen():
    old = stored("old", "/docs/a.pdf")
    assert tidy({"old": old}, [seen("/docs/a.pdf", "new")]) == [Replace(old)]


def test_the_same_bytes_at_a_new_path_move_there():
    old = stored("d1", "/docs/a.pdf")
    moved = seen("/docs/b.pdf", "d1")
    assert tidy({"d1": old}, [moved]) == [Move(old, moved)]


def test_a_touched_file_has_its_new_record_kept():
    old = stored("d1", "/docs/a.pdf", mtime=1)
    touched = seen("/docs/a.pdf", "d1", mtime=2)
    assert tidy({"d1": old}, [touched]) == [Move(old, touched)]


def test_a_vanished_file_is_pruned_only_when_asked_and_only_under_a_root():
    inside, outside, kept = stored("d1", "/docs/a.pdf"), stored("d2", "/other/b.pdf"), stored("d3", "/docs/c.pdf")
    catalog = {"d1": inside, "d2": outside, "d3": kept}
    present = [seen("/docs/c.pdf", "d3")]
    assert tidy(catalog, present) == []
    assert tidy(catalog, present, prune=True) == [Prune(inside)]


def test_prune_removes_nothing_under_a_path_that_holds_no_supported_file():
    """What an unmounted volume leaves behind: the folder is there, its files are not."""
    a, b = stored("d1", "/docs/a.pdf"), stored("d2", "/docs/b.pdf")
    (action,) = tidy({"d1": a, "d2": b}, [], prune=True)
    assert isinstance(action, Withhold) and action.root == "/docs" and action.docs == (a, b)
    assert "no supported file" in action.reason


def test_prune_removes_nothing_when_most_documents_of_a_path_vanish_at_once():
    catalog = {f"d{k}": stored(f"d{k}", f"/docs/{k}.pdf") for k in range(4)}
    (action,) = tidy(catalog, [seen("/docs/0.pdf", "d0")], prune=True)
    assert isinstance(action, Withhold) and len(action.docs) == 3
    assert "3 of its 4 stored documents" in action.reason


def test_prune_goes_ahead_when_half_or_fewer_vanish():
    catalog = {f"d{k}": stored(f"d{k}", f"/docs/{k}.pdf") for k in range(4)}
    present = [seen("/docs/0.pdf", "d0"), seen("/docs/1.pdf", "d1")]
    assert tidy(catalog, present, prune=True) == [Prune(catalog["d2"]), Prune(catalog["d3"])]


def test_force_prunes_what_would_be_withheld():
    a, b = stored("d1", "/docs/a.pdf"), stored("d2", "/docs/b.pdf")
    assert tidy({"d1": a, "d2": b}, [], prune=True, force=True) == [Prune(a), Prune(b)]


def test_each_path_is_judged_on_its_own():
    gone, kept, lost = stored("d1", "/docs/a.pdf"), stored("d2", "/docs/b.pdf"), stored("d3", "/mnt/c.pdf")
    actions = tidy(
        {"d1": gone, "d2": kept, "d3": lost}, [seen("/docs/b.pdf", "d2")], prune=True, roots=("/docs", "/mnt")
    )
    assert actions[0] == Prune(gone)
    assert isinstance(actions[1], Withhold) and actions[1].root == "/mnt"


def test_a_file_that_is_still_there_or_failed_this_run_is_not_pruned():
    a, b = stored("d1", "/docs/a.pdf"), stored("d2", "/docs/b.pdf")
    failed = seen("/docs/b.pdf", "")
    failed.failed = True
    actions = tidy({"d1": a, "d2": b}, [failed], prune=True, exists=lambda path: path == "/docs/a.pdf")
    assert actions == []


# -- partitions: several workers, one collection ---------------------------------------------------------------------

MINE, THEIRS = Partition(0, 2), Partition(1, 2)


def doc_ids(partition: Partition, n: int) -> list[str]:
    """`n` doc ids (sha256 digests, as ingest makes them) that fall in `partition`."""
    ids = (hashlib.sha256(str(i).encode()).hexdigest() for i in range(10_000))
    return [d for d in ids if partition.owns(d)][:n]


def test_a_partition_is_worker_i_of_n_counted_from_zero():
    assert Partition.parse("0/3") == Partition(0, 3) and Partition.parse(" 2 / 3 ") == Partition(2, 3)
    assert str(Partition(1, 4)) == "1/4"
    for bad in ("3/3", "1", "-1/2", "a/b", "1/0", ""):
        with pytest.raises(UsageError, match="I/N"):
            Partition.parse(bad)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_n_partitions_take_every_document_exactly_once(n):
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    owners = [[i for i in range(n) if Partition(i, n).owns(d)] for d in ids]
    assert all(len(o) == 1 for o in owners)
    shares = [sum(o == [i] for o in owners) for i in range(n)]
    assert min(shares) > 0.8 * len(ids) / n, shares  # an even share each, not one worker doing it all


def test_the_partition_of_a_document_does_not_depend_on_the_worker_or_the_run():
    d = doc_ids(THEIRS, 1)[0]
    assert not MINE.owns(d) and THEIRS.owns(d) and WHOLE.owns(d)
    assert Partition(1, 2).owns(d)  # a new Partition, the same answer: a hash of the id, not Python's hash()


def test_a_document_of_another_partition_is_skipped_before_it_is_read_or_encoded():
    theirs, mine = doc_ids(THEIRS, 1)[0], doc_ids(MINE, 1)[0]
    catalog = Catalog({}, MINE)
    doc = seen("/docs/a.pdf", theirs)
    assert plan.settle_partition(doc, catalog) and doc.elsewhere
    assert not plan.settle_partition(seen("/docs/b.pdf", mine), catalog)
    # recognised by its stored record too, without hashing: every worker reads every partition's records
    catalog = Catalog({theirs: stored(theirs, "/docs/a.pdf")}, MINE)
    doc = seen("/docs/a.pdf")
    assert plan.settle_unread(doc, catalog, trust_mtime=True) and plan.settle_partition(doc, catalog)


def test_a_worker_cleans_and_prunes_only_its_own_partition():
    (mine_a, mine_b), (theirs_a, theirs_b) = doc_ids(MINE, 2), doc_ids(THEIRS, 2)
    catalog = {
        mine_a: stored(mine_a, "/docs/a.pdf", pages=3, have=1),  # unfinished
        theirs_a: stored(theirs_a, "/docs/b.pdf", pages=3, have=1),  # another worker is storing it right now
        mine_b: stored(mine_b, "/docs/gone-1.pdf"),
        theirs_b: stored(theirs_b, "/docs/gone-2.pdf"),
    }
    # the folder still holds another file, and --force: a deliberate prune, not a missing volume
    present = [seen("/docs/c.pdf", "c")]
    actions = tidy(catalog, present, prune=True, force=True, partition=MINE)
    assert actions == [Clean(catalog[mine_a]), Prune(catalog[mine_b])]
    theirs = tidy(catalog, present, prune=True, force=True, partition=THEIRS)
    assert theirs == [Clean(catalog[theirs_a]), Prune(catalog[theirs_b])]


def test_an_old_version_is_replaced_by_its_worker_once_the_new_one_of_another_partition_is_stored_whole():
    (old,), (new,) = doc_ids(MINE, 1), doc_ids(THEIRS, 1)
    changed = seen("/docs/a.pdf", new)
    changed.elsewhere = True
    before = {old: stored(old, "/docs/a.pdf")}
    # the new version's worker has not stored it yet: the old one stays, so a search finds one of them
    assert tidy(before, [changed], partition=MINE) == []
    assert tidy({**before, new: stored(new, "/docs/a.pdf", pages=3, have=1)}, [changed], partition=MINE) == []
    stored_whole = {**before, new: stored(new, "/docs/a.pdf", mtime=2)}
    assert tidy(stored_whole, [changed], partition=MINE) == [Replace(before[old])]
    # and the new version's worker never removes the old one itself
    assert tidy(stored_whole, [seen("/docs/a.pdf", new, mtime=2)], completed=[new], partition=THEIRS) == []
