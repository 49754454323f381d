"""The fast path's vectors (core/pooling.py): pooled multivectors, the dense vector, blank-token masks, MUVERA."""

from __future__ import annotations

import numpy as np
import pytest

from core.pooling import (
    dense_vector,
    keep_mask,
    maxsim,
    muvera_fde,
    pool_tokens,
    pooled_count,
    unit_length,
)

DIM = 64


def clustered(rng, centres: np.ndarray, rows: int, noise: float = 0.05) -> np.ndarray:
    picks = centres[rng.integers(0, len(centres), rows)]
    return (picks + rng.normal(scale=noise, size=picks.shape)).astype(np.float32)


def test_pooled_count_follows_pool_size():
    assert [pooled_count(n, 8) for n in (1, 8, 9, 257, 1121)] == [1, 1, 2, 33, 141]
    assert pooled_count(5, 1) == 5


def test_fine_vectors_follow_a_fractional_pool_size_and_fit_one_multivector():
    from dataclasses import replace

    from config import defaults
    from core.store.layout import FINE, POOLED, SearchLayout
    from core.store.schema import rows_per_vector

    def rows(fine_pool_size: float, n: int, dim: int, fine_max: int = 0) -> tuple[int, int]:
        # a collection made without a codebook has coarse pooled vectors too
        coarse = {"fine_pool_size": fine_pool_size, "fine_max": fine_max, "codebook_size": 0}
        layout = SearchLayout.from_settings(defaults().model_copy(update=coarse))
        unit = unit_length(np.random.default_rng(n).normal(size=(n, dim)).astype(np.float32))
        _, derived = layout.derive(unit, rows_per_vector(dim))
        _, with_codebook = replace(layout, codebook=4096).derive(unit, rows_per_vector(dim))
        assert POOLED not in with_codebook and np.array_equal(with_codebook[FINE], derived[FINE])
        return len(derived[POOLED]), len(derived[FINE])

    assert rows(2.6, 257, DIM) == (33, 99)
    assert rows(2.5, 257, DIM) == (33, 103)  # the fine vectors, and only they, follow the setting
    assert rows(2.6, 1121, 1280) == (141, 432)
    assert rows(1.6, 1121, 1280) == (141, 701)
    assert rows(1, 1121, 1280) == (141, 819)  # one a token would be 1121 rows: as many as one multivector holds
    # the cap: a tiled page's fine vectors stop at it, a shorter page's stay as the pool size makes them
    assert rows(1.6, 1121, 1280, fine_max=448) == (141, 448)
    assert rows(1.6, 689, 1280, fine_max=448) == (87, 431)
    assert rows(1, 1121, 1280, fine_max=900) == (141, 819)  # a cap over a multivector's rows: the multivector's


def test_a_page_of_a_few_repeated_directions_gets_one_fine_vector_for_each():
    from core.pooling import covering, farthest_points
    from core.store.layout import FINE, SearchLayout

    rng = np.random.default_rng(11)
    dim, n = 1280, 257
    layout = SearchLayout.from_settings()
    assert layout.fine_likeness < 1 and layout.built()["fine_likeness"] == layout.fine_likeness
    # 40 directions, each written about 6 times (copies at cosine ~0.94 to their direction, ~0.89 to each other)
    directions = unit_length(rng.normal(size=(40, dim)).astype(np.float32))
    copies = unit_length(clustered(rng, directions, n, noise=0.35 / np.sqrt(dim)))
    _, derived = layout.derive(copies, 819)
    fine = unit_length(derived[FINE].astype(np.float32) - 127.5)  # sign codes back to +-1 rows
    assert len(fine) == 40  # one for each direction, not one per 1.6 tokens
    assert np.sort((fine @ directions.T).argmax(1)).tolist() == list(range(40))  # ... and every direction has one
    # negative controls: as many distinct tokens keep one vector per 1.6 of them; likeness 1 is the count alone
    distinct = unit_length(rng.normal(size=(n, dim)).astype(np.float32))
    assert len(layout.derive(distinct, 819)[1][FINE]) == 161
    assert len(layout.adopt({**layout.built(), "fine_likeness": 1.0}).derive(copies, 819)[1][FINE]) == 161
    before = {k: v for k, v in layout.built().items() if k != "fine_likeness"}  # a collection made before it
    assert layout.adopt(before).fine_likeness == 1.0
    # the count is the fewest seeds that leave every token at least that alike to one
    sketched = unit_length(copies[:, :256])
    seeds, reach = farthest_points(sketched, 100)
    for likeness in (0.3, 0.6, 0.8):
        k = covering(reach, likeness)
        best = (sketched @ sketched[seeds[:k]].T).max(1)
        assert best.min() >= likeness and (k == 1 or (sketched @ sketched[seeds[: k - 1]].T).max(1).min() < likeness)


def test_collections_made_before_the_fine_cap_keep_deriving_every_fine_vector():
    from config import defaults
    from core.store.layout import SearchLayout

    layout = SearchLayout.from_settings(defaults())
    assert layout.fine_max == 448 and layout.built()["fine_max"] == 448
    before = {k: v for k, v in layout.built().items() if k != "fine_max"}
    assert layout.adopt(before).fine_size(1121, 819) < 1121 / 448 < layout.fine_size(1121, 819)


def test_binary_coded_pooled_vectors_are_kept_as_their_sign_codes_in_new_collections_only():
    from dataclasses import replace

    from config import defaults
    from core.store.layout import FINE, POOLED, SIGN, SearchLayout

    layout = SearchLayout.from_settings(defaults().model_copy(update={"codebook_size": 0}))  # both pooled vectors
    assert layout.coded and layout.built()["sign_codes"] is True
    assert not layout.adopt({"first_stage": "pooled", "fine_pool_size": 2.6}).coded  # a record from before codes
    assert not replace(layout, pooled_quantization=False).coded  # float16 scored as it is: no codes
    rng = np.random.default_rng(5)
    unit = unit_length(rng.normal(size=(257, DIM)).astype(np.float32))
    _, coded = layout.derive(unit, 819)
    _, originals = replace(layout, sign_codes=False).derive(unit, 819)
    for name in (POOLED, FINE):
        assert coded[name].dtype == np.uint8 and originals[name].dtype == np.float16
        assert np.array_equal(coded[name], np.where(originals[name] > 0, SIGN, 0))
    _, other = layout.derive(unit[::-1] * np.where(np.arange(DIM) % 2, 1, -1), 819)  # another page: other codes
    assert not np.array_equal(other[FINE], coded[FINE])


def test_the_coarse_query_pools_alike_query_tokens_and_keeps_every_direction():
    from config import defaults
    from core.store.layout import SearchLayout

    rng = np.random.default_rng(3)
    directions = unit_length(rng.normal(size=(4, DIM)).astype(np.float32))
    query = clustered(rng, directions, 20)
    layout = SearchLayout.from_settings(defaults())
    pooled = layout.coarse_query(query)
    assert pooled.shape == (8, DIM)  # one row per 2.5 tokens
    likeness = pooled @ directions.T
    assert likeness.max(axis=1).min() > 0.85  # each row is one of the directions (a blend of two: about 0.7)
    assert set(likeness.argmax(axis=1)) == {0, 1, 2, 3}  # and every direction has a row
    whole = SearchLayout.from_settings(defaults().model_copy(update={"query_pool_size": 1}))
    assert whole.coarse_query(query) is query


@pytest.mark.parametrize("method", ["cluster", "window"])
def test_pooled_vectors_are_unit_length_and_deterministic(method):
    tokens = np.random.default_rng(0).normal(size=(257, DIM)).astype(np.float32) * 3
    pooled = pool_tokens(tokens, 8, method)
    assert pooled.shape == (33, DIM) and pooled.dtype == np.float32
    assert np.allclose(np.linalg.norm(pooled, axis=1), 1, atol=1e-5)
    assert np.array_equal(pooled, pool_tokens(tokens, 8, method))


def test_window_pooling_averages_runs_along_the_sequence():
    tokens = np.repeat(np.eye(4, DIM, dtype=np.float32), 3, axis=0)  # 4 runs of 3 equal tokens
    assert np.allclose(pool_tokens(tokens, 3, "window"), np.eye(4, DIM))


def test_clustering_finds_the_directions_wherever_their_tokens_sit():
    rng = np.random.default_rng(1)
    centres = unit_length(rng.normal(size=(6, DIM)))
    tokens = clustered(rng, centres, 60)  # shuffled: windows along the sequence would mix the directions
    pooled = pool_tokens(tokens, 10, "cluster")
    assert pooled.shape == (6, DIM)
    # every direction has a pooled vector close to it; windows of mixed tokens have none
    assert (centres @ pooled.T).max(axis=1).min() > 0.98
    assert (centres @ pool_tokens(tokens, 10, "window").T).max(axis=1).min() < 0.9


def test_pooled_maxsim_keeps_the_ranking_of_exact_maxsim():
    rng = np.random.default_rng(2)
    pages = [clustered(rng, unit_length(rng.normal(size=(8, DIM))), 64) for _ in range(20)]
    for i, page in enumerate(pages):
        query = unit_length(page[:6])
        pooled_scores = [maxsim(query, pool_tokens(p, 8)) for p in pages]
        assert int(np.argmax(pooled_scores)) == i


def test_dense_vector_is_the_normalised_mean_of_unit_tokens():
    tokens = np.array([[3.0, 0.0], [0.0, 0.5]], dtype=np.float32)
    assert np.allclose(dense_vector(tokens), [np.sqrt(0.5), np.sqrt(0.5)])


def test_keep_mask_drops_tokens_like_the_reference_but_never_all():
    rng = np.random.default_rng(3)
    blank = unit_length(rng.normal(size=(4, DIM)))
    content = unit_length(rng.normal(size=(5, DIM)))
    tokens = np.concatenate([blank * 2.0, content])  # likeness is by direction, not length
    assert keep_mask(tokens, blank, 0.9).tolist() == [False] * 4 + [True] * 5
    assert keep_mask(blank, blank, 0.9).all()  # only blank: keep everything rather than nothing


def test_muvera_fde_dot_products_follow_maxsim():
    rng = np.random.default_rng(4)
    pages = [clustered(rng, unit_length(rng.normal(size=(4, DIM))), 32) for _ in range(10)]
    encoded = np.stack([muvera_fde(p, query=False) for p in pages])
    assert encoded.shape == (10, 10 * 16 * 16)
    hits = 0
    for i, page in enumerate(pages):
        query = muvera_fde(page[:8], query=True)
        hits += int(np.argmax(encoded @ query) == i)
    assert hits >= 9


def test_a_querys_matrix_products_run_on_one_blas_thread():
    from threadpoolctl import threadpool_info

    from core.tensors import one_blas_thread
    from search.plan import search

    def blas_threads() -> list[int]:
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    before = blas_threads()
    assert before, "numpy's BLAS is not seen"
    with one_blas_thread():
        assert set(blas_threads()) == {1}
    assert blas_threads() == before  # given back after the block
    assert search.__wrapped__  # the search plan runs in such a block


@pytest.mark.parametrize(
    "dim, change, depths",
    [
        (1280, {}, (350, 20)),  # the dimension the defaults are set for
        (4096, {}, (350, 20)),  # wider codes: never shallower than set
        (384, {}, (640, 37)),  # sqrt(1280 / 384) = 1.83 times deeper
        (384, {"prefetch_dim": 0}, (350, 20)),  # the depths as set
        (384, {"first_stage": "mean"}, (350, 20)),  # an HNSW first stage and int8 scores: no binary codes
        (384, {"pooled_quantization": False}, (350, 20)),  # float16 in RAM: no binary codes
        (128, {}, (1107, 64)),  # sqrt(10) = 3.16
    ],
)
def test_binary_coded_stages_look_deeper_the_narrower_the_tokens(dim, change, depths):
    from dataclasses import replace

    from core.store.layout import SearchLayout

    layout = replace(SearchLayout.from_settings(), **change)
    assert layout.limits(10, 2000, dim) == depths
    assert layout.limits(10, 10_000, 1280) == (800, 20)  # a share of a larger collection


def test_the_first_stage_grows_as_the_square_root_of_the_collection_or_a_share_of_it():
    """PREFETCH_DENSE (350) at PREFETCH_AT (2,000) pages, times sqrt(pages / 2,000), or PREFETCH_SHARE (8%) of the
    pages where that is more; PREFETCH_AT 0 keeps the depth as set."""
    from dataclasses import replace

    from core.store.layout import SearchLayout

    layout = SearchLayout.from_settings()
    first = {pages: layout.limits(10, pages, 1280)[0] for pages in (300, 1000, 2000, 5000, 10_000, 20_000)}
    assert first == {300: 136, 1000: 248, 2000: 350, 5000: 554, 10_000: 800, 20_000: 1600}
    assert layout.limits(10, 0, 1280) == (350, 20)  # no size given: the depth as set
    as_set = replace(layout, prefetch_at=0)
    assert [as_set.limits(10, n, 1280)[0] for n in (300, 2000, 10_000)] == [350, 350, 800]
    shallow = replace(layout, prefetch_dense=5, prefetch_share=0.0)
    assert shallow.limits(10, 300, 1280) == (20, 20)  # never shallower than the next stage


def test_shared_floats_are_every_float16_and_byte_value_exactly_and_made_once():
    from core.tensors import shared_floats

    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    looked_up = shared_floats(every).astype(np.float64)
    assert np.array_equal(looked_up, every.astype(np.float64), equal_nan=True)
    assert not np.array_equal(shared_floats(every[::-1]).astype(np.float64), looked_up, equal_nan=True)
    codes = np.array([[0, 255], [255, 7]], dtype=np.uint8)
    assert shared_floats(codes).tolist() == [[0.0, 255.0], [255.0, 7.0]]
    assert shared_floats(codes)[0, 1] is shared_floats(codes)[1, 0]  # one object per value, not one per use
    with pytest.raises(TypeError):
        shared_floats(codes.astype(np.float32))


def test_the_embedded_engine_keeps_every_float16_and_byte_value_handed_over_as_float32_rows(tmp_path):
    import qdrant_edge as q

    from core.tensors import float32_rows

    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    every = every[np.isfinite(every)].reshape(-1, 1024)  # 62 rows: subnormals, -0.0 and the largest included
    codes = np.arange(256 * 4, dtype=np.uint32).astype(np.uint8).reshape(-1, 1024)

    def params(datatype):
        multi = q.MultiVectorConfig(q.MultiVectorComparator.MaxSim)
        return q.EdgeVectorParams(size=1024, distance=q.Distance.Dot, multivector_config=multi, datatype=datatype)

    types = q.VectorStorageDatatype
    vectors = {"half": params(types.Float16), "byte": params(types.Uint8)}
    shard = q.EdgeShard.create(str(tmp_path / "shard"), q.EdgeConfig(vectors=vectors, wal_enabled=False))
    shifted = np.roll(every, 1, axis=1)  # the negative control: the same values, each in another place
    for pid, half in ((1, every), (2, shifted)):
        point = q.Point(pid, {"half": float32_rows(half), "byte": float32_rows(codes)}, {})
        shard.update(q.UpdateOperation.upsert_points([point]))
    stored = {r.id: r.vector for r in shard.retrieve([1, 2], with_payload=False, with_vector=True)}
    shard.close()
    back = np.array(stored[1]["half"], dtype=np.float16)
    assert np.array_equal(back.view(np.uint16), every.view(np.uint16))
    assert not np.array_equal(np.array(stored[2]["half"], dtype=np.float16).view(np.uint16), back.view(np.uint16))
    assert np.array_equal(np.array(stored[1]["byte"]), codes)
    assert float32_rows(every[0]).tolist() == every[0].astype(np.float64).tolist()  # a single vector: one array


def test_float16_casts_round_as_numpys_do_on_every_kind_of_value():
    from core.tensors import from_float16, to_float16

    rng = np.random.default_rng(5)
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    every = every[~np.isnan(every)]
    ties = (every[:-1].astype(np.float64) + every[1:].astype(np.float64)) / 2  # halfway between neighbours
    values = np.concatenate(
        [
            rng.normal(size=(300, 64)).ravel(),
            rng.normal(scale=1e-6, size=1000),  # float16 subnormals
            ties[np.isfinite(ties)],
            [65504.0, 65519.0, 65520.0, -1e6, 1e-9, 0.0, -0.0, np.inf, -np.inf],  # the largest, overflow, underflow
        ]
    ).astype(np.float32)
    with np.errstate(over="ignore"):
        expected = values.astype(np.float16)
    assert np.array_equal(to_float16(values).view(np.uint16), expected.view(np.uint16))
    assert np.array_equal(from_float16(every).view(np.uint32), every.astype(np.float32).view(np.uint32))
    # A tie and the next float32 above it round apart: the comparison above sees which way a value rounds.
    tie = np.float32(ties[1000])
    assert to_float16(np.array([tie])) != to_float16(np.array([np.nextafter(tie, np.float32(np.inf))]))


def test_group_sums_add_each_groups_rows_whatever_its_size():
    from core.pooling import GROUP_LAYERS, _group_sums

    rng = np.random.default_rng(6)
    sizes = [0, 1, 2, 3, GROUP_LAYERS, GROUP_LAYERS + 1, 3 * GROUP_LAYERS, 0, 1]
    assign = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    rows = rng.normal(size=(len(assign), DIM)).astype(np.float32)
    sums, filled = _group_sums(rows, assign, len(sizes))
    naive = np.stack([rows[assign == g].sum(axis=0) for g in range(len(sizes))])
    assert np.array_equal(filled, np.array(sizes) > 0)
    assert np.allclose(sums, naive, atol=1e-5)
    other = int(np.flatnonzero(assign != assign[0])[0])
    moved = assign.copy()
    moved[[0, other]] = assign[[other, 0]]  # two rows of different groups trade places
    assert not np.allclose(_group_sums(rows, moved, len(sizes))[0], naive, atol=1e-5)


def test_sign_codes_of_float16_rows_mark_exactly_the_positive_values():
    from core.store.layout import SIGN, codes

    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)  # NaNs, infinities, -0 too
    with np.errstate(invalid="ignore"):
        positive = every > 0
    assert np.array_equal(codes(every), positive * np.uint8(SIGN))
    assert np.array_equal(codes(every.astype(np.float32)), codes(every))  # float32 rows: the same codes
    assert not np.array_equal(codes(-every), codes(every))  # the sign decides
