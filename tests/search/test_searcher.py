import numpy as np
import pytest
from sqlalchemy import select

from msearch.schema import catalog
from msearch.search.searcher import Filters, QueryError, Searcher, reciprocal_rank_fusion


@pytest.fixture(scope="module")
def searcher(eurosat_index):
    return Searcher(eurosat_index)


def brute_force(searcher, space, vector, allowed=None):
    ids, matrix = searcher.store.all_vectors(space)
    if allowed is not None:
        keep = np.isin(ids, allowed)
        ids, matrix = ids[keep], matrix[keep]
    scores = matrix @ vector
    order = np.argsort(-scores, kind="stable")
    return [int(ids[i]) for i in order], scores[order]


@pytest.mark.parametrize("text,space", [("a river between fields", "tiny-ms-clip"), ("rio entre campos", "rs-m-clip")])
def test_ranking_equals_brute_force_numpy_search(searcher, text, space):
    answer = searcher.query(text, top_k=10)
    assert answer.spaces == [space]
    vector = searcher.encoder(space).encode_texts([text])[0]
    expected_ids, expected_scores = brute_force(searcher, space, vector)
    assert [r.tile_id for r in answer.results] == expected_ids[:10]
    np.testing.assert_allclose([r.score for r in answer.results], expected_scores[:10], atol=1e-5)
    assert [r.rank for r in answer.results] == list(range(1, 11))


@pytest.mark.parametrize(
    "text,lang",
    [
        ("flooded farmland", "en"),
        ("terras agrícolas inundadas", "pt"),
        ("campos de cultivo inundados", "es"),
        ("terres agricoles inondées", "fr"),
        ("überflutetes Ackerland", "de"),
        ("overstroomde landbouwgrond", "nl"),
        ("terreni agricoli allagati", "it"),
        ("被淹没的农田", "zh"),
        ("침수된 농경지", "ko"),
        ("затопленные сельхозугодья", "ru"),
    ],
)
def test_each_language_is_routed_to_a_space_that_speaks_it(searcher, text, lang):
    answer = searcher.query(text, top_k=3)
    assert answer.lang == lang
    assert answer.spaces == (["tiny-ms-clip"] if lang == "en" else ["rs-m-clip"])
    assert len(answer.results) == 3


def test_bbox_filter_equals_sql_ground_truth_and_returns_k_when_k_match(searcher):
    bbox = (-2.0, 45.0, 12.0, 55.0)
    with searcher.store.engine.connect() as conn:
        t = catalog.tiles.c
        truth = set(
            conn.execute(
                select(t.id).where(
                    t.max_lon >= bbox[0], t.min_lon <= bbox[2], t.max_lat >= bbox[1], t.min_lat <= bbox[3]
                )
            ).scalars()
        )
    assert 3 < len(truth) < 30
    answer = searcher.query("forest", top_k=len(truth) + 5, filters=Filters(bbox=bbox))
    assert {r.tile_id for r in answer.results} == truth
    assert answer.matching_tiles == len(truth)
    vector = searcher.encoder("tiny-ms-clip").encode_texts(["forest"])[0]
    assert [r.tile_id for r in answer.results] == brute_force(searcher, "tiny-ms-clip", vector, list(truth))[0]


def test_a_filter_that_keeps_one_tile_returns_that_tile(searcher):
    row = searcher.store.tiles_by_id([7])[7]
    lon, lat = row["centre_lon"], row["centre_lat"]
    answer = searcher.query("forest", top_k=10, filters=Filters(bbox=(lon - 1e-4, lat - 1e-4, lon + 1e-4, lat + 1e-4)))
    assert [r.tile_id for r in answer.results] == [7]


def test_fusion_merges_both_spaces(searcher):
    answer = searcher.query("forest", top_k=5, fuse=True)
    assert set(answer.spaces) == {"tiny-ms-clip", "rs-m-clip"}
    assert len(answer.results) == 5
    fused = reciprocal_rank_fusion([[(1, 0.9), (2, 0.8)], [(2, 0.7), (3, 0.6)]])
    assert [t for t, _ in fused] == [2, 1, 3]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)


def test_query_by_example_finds_itself_excluded_and_ranks_by_stored_vectors(searcher):
    answer = searcher.like("River/River_1.tif", top_k=5)
    ids, _ = brute_force(
        searcher, "tiny-ms-clip", searcher.store.vectors_of("tiny-ms-clip", [answer.results[0].tile_id])[0]
    )
    with searcher.store.engine.connect() as conn:
        own = conn.execute(select(catalog.tiles.c.id).where(catalog.tiles.c.key == "River/River_1.tif")).scalar()
    assert own not in [r.tile_id for r in answer.results]
    vector = searcher.store.vectors_of("tiny-ms-clip", [own])[0]
    assert [r.tile_id for r in answer.results] == [
        i for i in brute_force(searcher, "tiny-ms-clip", vector)[0] if i != own
    ][:5]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"text": "   "}, "empty"),
        ({"text": "forest", "top_k": 0}, "top-k"),
        ({"text": "forest", "lang": "xx"}, "xx"),
        ({"text": "forêt", "lang": "fr", "space": "tiny-ms-clip"}, "does not understand"),
        ({"text": "forest", "space": "nope"}, "no space"),
    ],
)
def test_bad_queries_get_clear_errors(searcher, kwargs, message):
    with pytest.raises(ValueError, match=message):
        searcher.query(**kwargs)


def test_malformed_filters_are_rejected():
    with pytest.raises(QueryError, match="min <= max"):
        Filters(bbox=(10, 50, 5, 40))
    with pytest.raises(QueryError, match="percentage"):
        Filters(max_cloud=150)


def test_over_long_query_is_marked_truncated(searcher):
    assert searcher.query("forest " * 100, top_k=1).truncated
    assert not searcher.query("forest", top_k=1).truncated
