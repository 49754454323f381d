"""What ingest decides for each file and for what was stored before: plain data in, decisions out (no threads,
model or store)."""

from __future__ import annotations

from pathlib import Path

from ingest import plan
from ingest.plan import Catalog, Clean, Doc, Move, Prune, Replace, StoredDoc, Unfinished, Withhold


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


def tidy(catalog, docs, completed=(), prune=False, roots=("/docs",), exists=lambda path: False, force=False):
    first = {}
    for d in docs:
        first.setdefault(d.doc_id, d)
    return plan.tidy(Catalog(catalog), docs, set(completed), first, list(roots), prune, exists=exists, force=force)


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
