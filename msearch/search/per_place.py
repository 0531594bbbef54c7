"""Results per place: the top-k places of a ranking of acquisitions, each with its best-matching acquisition and
the dates of its acquisitions that pass the filters.

A place's score is its best acquisition's. The ranking of acquisitions is searched deeper (x4 at a time) until
it holds k distinct places (3k when they are rescored exactly, below: one more round at most once k are there)
or every candidate has been ranked, so k
places come back whenever k places have a passing acquisition, however many repeats of the best places rank
above them. Then every passing acquisition
of the chosen places is read from the catalogue (msearch.store.places), and, when the ranking is one space's
cosine, scored exactly from its stored vector: a place's best acquisition and its dates' order are exact even
where the approximate index missed one of its acquisitions, and the places are ordered by those scores: the
first 3k places of the ranking are rescored, and the best k by exact score are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from msearch.store import IndexStore

FIRST_DEPTH_PER_PLACE = 8  # acquisitions ranked per wanted place before searching deeper
DEEPER = 4
MAX_DATES = 20  # dates listed per place
CANDIDATE_PLACES = 3  # with exact rescoring: places rescored per place returned, at most
# A place's acquisitions are near-duplicates that share inverted lists, so one list not probed loses a whole
# place: the index's tuning (recall@100 of vectors) overstates recall of places. Twice the lists (bench/places.py
# measures both; README "Places").
NPROBE_SCALE = 2


@dataclass
class PlaceHit:
    """A place of a ranking: its id (None for a tile that has no place), and its passing acquisitions best
    first as (tile id, score, acquired); a score is None where it is not known (a fused ranking that did not
    reach that acquisition)."""

    place_id: int | None
    acquisitions: list[tuple[int, float | None, str | None]]

    @property
    def best(self) -> tuple[int, float]:
        tile_id, score, _ = self.acquisitions[0]
        return tile_id, score


def place_fields(hit: PlaceHit) -> dict:
    """A place's fields on its result (msearch.search.results.SearchResult): how many of its acquisitions pass
    the filters, and the dates and tile ids of the best MAX_DATES of them."""
    shown = hit.acquisitions[:MAX_DATES]
    return {
        "acquisitions": len(hit.acquisitions),
        "dates": [acquired for _, _, acquired in shown],
        "date_tile_ids": [tile_id for tile_id, _, _ in shown],
    }


def top_places(
    rank: Callable[[int], list[tuple[int, float]]],
    k: int,
    store: IndexStore,
    *,
    candidates: int,
    where=None,
    exclude: frozenset[int] = frozenset(),
    exclude_places: frozenset[int] = frozenset(),
    exact: tuple[str, np.ndarray] | None = None,
) -> list[PlaceHit]:
    """The top-k places of `rank(depth)` (the best `depth` (tile id, score) pairs, best first). `candidates` is
    how many acquisitions could be ranked at most (deeper than that finds nothing new); `where` is the filters'
    clause on the tiles table; `exclude` tiles and `exclude_places` (examples and their places) are never
    results; `exact` = (space, unit query vector) rescores the chosen places' acquisitions by cosine with their
    stored vectors (an acquisition without a vector in that space is left out of its place)."""
    # With exact rescoring to follow, more places than k are gathered: the ranking's order is approximate.
    wanted = k * CANDIDATE_PLACES if exact is not None else k
    depth = min(max(k * FIRST_DEPTH_PER_PLACE, k + len(exclude)), max(candidates, 1))
    searched_for_candidates = False
    while True:
        ranked = [(t, s) for t, s in rank(depth) if t not in exclude]
        place_of = store.places_of([t for t, _ in ranked])
        first: dict[object, tuple[int, float]] = {}
        for tile_id, score in ranked:
            if place_of.get(tile_id) not in exclude_places:
                first.setdefault(_place_key(place_of.get(tile_id), tile_id), (tile_id, score))
        if len(first) >= wanted or depth >= candidates:
            break
        if len(first) >= k:  # k places are there: one more round for candidates, no more
            if searched_for_candidates:
                break
            searched_for_candidates = True
        depth = min(depth * DEEPER, candidates)
    # With exact scores, the first `wanted` places of the ranking are candidates: a place whose best acquisition
    # the approximate index missed or misplaced still comes in by its others, and takes its true rank.
    chosen = list(first.items())[:wanted]
    passing = store.acquisitions_by_place([key for key, _ in chosen if isinstance(key, int)], where)
    dated = {tile_id: acquired for rows in passing.values() for tile_id, acquired in rows}
    if any(not isinstance(key, int) for key, _ in chosen):  # tiles without a place: their own rows
        alone = [tile_id for key, (tile_id, _) in chosen if not isinstance(key, int)]
        dated.update({tile_id: row["acquired"] for tile_id, row in store.tiles_by_id(alone).items()})
    scores = dict(ranked)
    if exact is not None:
        space, vector = exact
        ids, vectors = store.stored_vectors(space, [t for t in dated if t not in exclude])
        scores = dict(zip(ids.tolist(), (vectors @ np.asarray(vector, dtype=np.float32)).tolist()))
    rank_of = {tile_id: i for i, (tile_id, _) in enumerate(ranked)}
    hits = []
    for key, (best_tile, _) in chosen:
        members = [t for t, _ in passing.get(key, [])] if isinstance(key, int) else [best_tile]
        members = [t for t in members if t not in exclude and (exact is None or t in scores)]
        # best first: by score where known (exact: all), then the rest in date order (members are in date order)
        members.sort(key=lambda t: (t not in scores, -scores.get(t, 0.0), rank_of.get(t, len(rank_of))))
        hits.append(PlaceHit(key if isinstance(key, int) else None, [(t, scores.get(t), dated[t]) for t in members]))
    if exact is not None:
        hits.sort(key=lambda hit: -hit.best[1])  # stable: ties keep the ranking's order
    return hits[:k]


def _place_key(place_id: int | None, tile_id: int) -> object:
    """What groups a ranking: the place, or the tile itself when it has no place (a row written by hand)."""
    return place_id if place_id is not None else ("tile", tile_id)
