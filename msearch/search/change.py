"""Places ranked by how their acquisitions after a split date differ from those before it.

Periods: `before` holds a place's acquisitions dated before the `before` date, `after` those dated on or
after the `after` date (by default both are the split date, so the periods meet; a later `after` leaves a
gap that neither period uses). Filters (bbox, max cloud, MGRS tile) drop acquisitions first.

Robust per-period statistics. In each period of a place the *clear* acquisitions are used (cloud cover at
most CLEAR_CLOUD percent and nodata fraction at most CLEAR_NODATA, unknown counting as clear); when a period
has none, all of its acquisitions are used. Over the used acquisitions:

- `--to TEXT`: s(a) is the cosine of acquisition a's stored vector with the text's vector (the score a query
  gives the tile); after_score and before_score are the medians of s over the period;
  change = after_score - before_score. A text beyond English is read by a route (Searcher.text_vector): rgb,
  scored in the multilingual RGB space, or bridge, carried into the multispectral space by the bridge and
  scored there; fuse has no scores to compare.
- with `--from TEXT2` as well: change = (after_score - before_score) + (from_before_score - from_after_score),
  the second term with the first text's medians: more like the second text, less like the first. The
  first text is read as the second is: in the same space, by the same route.
- `--to-like EXAMPLE`: as `--to`, with the example's vector (a catalogued tile's stored vector or a file's
  embedding) in place of the text's; the example tile itself is left out of its place's statistics.
- `--any`: each period's vector is the coordinate-wise median of its used vectors, normalised; similarity is
  the cosine of the two periods' vectors and change = 1 - similarity.

A median over three or more acquisitions ignores any single one of them, so one cloudy or odd acquisition
among clear ones never makes a change. Places without an acquisition in one of the periods are left out and
counted (`left_out`). The representative tiles are the used acquisitions at each period's median (`--any`:
the one closest to the period's vector).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date

import numpy as np

from msearch.search.searcher import Filters, QueryError, Searcher, TextVector
from msearch.store.acquisitions import AcquisitionCache, SpaceAcquisitions

CLEAR_CLOUD = 20.0  # percent
CLEAR_NODATA = 0.2
MODES = ("to", "to-like", "any")
ANY_CHUNK_ROWS = 65_536  # vectors decoded at a time for --any's medians


@dataclass(frozen=True)
class PlaceChange:
    """One ranked place. Scores are medians over the used acquisitions of each period (module docstring);
    `footprint`, `lon` and `lat` are the place's, as query results carry a tile's."""

    rank: int
    change: float
    place_id: int
    space: str
    before_acquisitions: int
    after_acquisitions: int
    before_used: int
    after_used: int
    before_tile_id: int
    after_tile_id: int
    before_score: float | None = None
    after_score: float | None = None
    from_before_score: float | None = None
    from_after_score: float | None = None
    similarity: float | None = None
    lon: float | None = None
    lat: float | None = None
    footprint: dict | None = None


CSV_COLUMNS = (
    "rank",
    "change",
    "place_id",
    "lat",
    "lon",
    "before_acquisitions",
    "after_acquisitions",
    "before_used",
    "after_used",
    "before_score",
    "after_score",
    "from_before_score",
    "from_after_score",
    "similarity",
    "before_tile_id",
    "after_tile_id",
    "space",
)


@dataclass
class ChangeAnswer:
    results: list[PlaceChange]
    mode: str
    query: str
    lang: str | None
    space: str
    after: date
    before: date
    first_date: str
    last_date: str
    places_compared: int  # places with acquisitions in both periods
    left_out: int  # places with acquisitions (that pass the filters) missing from one period
    route: str | None = None  # a text beyond English: rgb or bridge (Searcher.text_vector)

    def info(self) -> dict:
        return {
            "query": self.query,
            "lang": self.lang,
            "space": self.space,
            "route": self.route,
            "mode": self.mode,
            "after": self.after.isoformat(),
            "before": self.before.isoformat(),
            "archive_dates": [self.first_date, self.last_date],
            "places_compared": self.places_compared,
            "left_out": self.left_out,
        }


class ChangeFinder:
    """Change queries over one searcher's index; the acquisitions of each space stay loaded between queries
    (msearch serve, a benchmark) and are read again when an index run changed the space."""

    def __init__(self, searcher: Searcher, cache: AcquisitionCache | None = None):
        self.searcher = searcher
        self.cache = cache or AcquisitionCache()

    def find(
        self,
        after: date,
        before: date | None = None,
        *,
        to: str | None = None,
        from_text: str | None = None,
        to_like: str | None = None,
        any_change: bool = False,
        top_k: int = 10,
        lang: str = "auto",
        space: str | None = None,
        filters: Filters = Filters(),
        route: str | None = None,
    ) -> ChangeAnswer:
        """Places ranked by change (module docstring). `route`: how a text beyond English is read
        (Searcher.text_vector: rgb or bridge; left out, the stored route comparison's choice, else rgb)."""
        if sum([to is not None, to_like is not None, any_change]) != 1:
            raise QueryError("say what change to look for: one of --to TEXT, --to-like EXAMPLE or --any")
        if from_text is not None and to is None:
            raise QueryError("--from TEXT goes with --to TEXT: how much less like the first, more like the second")
        if route is not None and to is None:
            raise QueryError("--route is how a --to TEXT beyond English is read; --to-like and --any use no text")
        if top_k <= 0:
            raise QueryError(f"--top-k must be at least 1, got {top_k}")
        if filters.date_from is not None or filters.date_to is not None:
            raise QueryError("the periods of a change query are set by --after and --before, not by date filters")
        before = after if before is None else before
        if before > after:
            raise QueryError(f"--before {before} is after --after {after}: the periods would overlap")
        example = None
        read = None
        if to is not None:
            read = self.searcher.text_vector(to, lang, space, route)
            name, vector = read.space, read.vector
            from_vector = self._from_vector(from_text, lang, read) if from_text is not None else None
            query = to if from_text is None else f"{from_text} -> {to}"
        elif to_like is not None:
            name, vector, example = self.searcher.example_vector(to_like, space)
            from_vector, query = None, f"like:{to_like}"
        else:
            name = self.searcher.example_space(space)
            vector = from_vector = None
            query = "any"
        answer = self.rank(name, after, before, vector, from_vector, example, top_k, filters)
        answer.mode = "any" if any_change else "to-like" if to_like is not None else "to"
        answer.query = query
        answer.lang, answer.route = (read.lang, read.route) if read is not None else (None, None)
        return answer

    def _from_vector(self, from_text: str, lang: str, to: TextVector) -> np.ndarray:
        """The --from text's vector where the --to text's lies: in its space (English or a chosen space), or,
        beyond English, by its route and so in its language (a route is refused for English)."""
        if to.route is None:
            return self.searcher.text_vector(from_text, lang, to.space).vector
        return self.searcher.text_vector(from_text, to.lang, route=to.route).vector

    def rank(
        self,
        space: str,
        after: date,
        before: date,
        vector: np.ndarray | None,
        from_vector: np.ndarray | None = None,
        example: int | None = None,
        top_k: int = 10,
        filters: Filters = Filters(),
    ) -> ChangeAnswer:
        """The ranking of `find` from the query's vectors in a space: `vector` (and `from_vector`) for a text
        or an example (`example`: its tile id, left out of its place), None for any change."""
        table = self.cache.get(self.searcher.store, space)
        first, last = _archive_dates(table)
        if not (first < np.datetime64(before, "D") and np.datetime64(after, "D") <= last):
            raise QueryError(
                f"the split ({_split_text(before, after)}) is outside the archive's dates: its acquisitions run "
                f"from {first} to {last}, so one period would be empty; choose a date after {first} and on or "
                f"before {last}"
            )
        keep = np.ones(len(table), dtype=bool)
        if filters.active:
            keep &= np.isin(table.tile_ids, self.searcher.allowed_ids(filters))
        if example is not None:
            keep &= table.tile_ids != example
        periods = _Periods(table, keep, before, after)
        if vector is None:
            change, similarity, picks = periods.vector_change()
            scores = {"similarity": similarity}
        else:
            to_medians, picks = periods.score_medians(vector)
            change = to_medians[:, 1] - to_medians[:, 0]
            scores = {"before_score": to_medians[:, 0], "after_score": to_medians[:, 1]}
            if from_vector is not None:
                from_medians, _ = periods.score_medians(from_vector)
                change = change + from_medians[:, 0] - from_medians[:, 1]
                scores |= {"from_before_score": from_medians[:, 0], "from_after_score": from_medians[:, 1]}
        return ChangeAnswer(
            periods.ranked(change, scores, picks, top_k, space, self.searcher.store.place),
            "any" if vector is None else "to",
            "any" if vector is None else "vector",
            None,
            space,
            after,
            before,
            str(first),
            str(last),
            int(periods.compared.sum()),
            int(periods.left_out),
        )


def _archive_dates(table: SpaceAcquisitions) -> tuple[np.datetime64, np.datetime64]:
    known = table.days[~np.isnat(table.days)]
    if not len(known):
        raise QueryError(f"no tile of space {table.space!r} has an acquisition date: there is no time to compare")
    return known.min(), known.max()


def _split_text(before: date, after: date) -> str:
    return f"split date {after}" if before == after else f"before {before}, after {after}"


class _Periods:
    """The acquisitions a change query compares, grouped by (place, period) with their used rows."""

    def __init__(self, table: SpaceAcquisitions, keep: np.ndarray, before: date, after: date):
        self.table = table
        starts = np.r_[True, table.place_ids[1:] != table.place_ids[:-1]] if len(table) else np.empty(0, bool)
        place_index = np.cumsum(starts) - 1
        self.place_ids = table.place_ids[starts]
        n_places = len(self.place_ids)
        period = np.full(len(table), -1, dtype=np.int8)
        period[table.days < np.datetime64(before, "D")] = 0
        period[table.days >= np.datetime64(after, "D")] = 1
        rows = np.flatnonzero(keep & (period >= 0))
        group = place_index[rows] * 2 + period[rows]
        counts = np.bincount(group, minlength=2 * n_places).reshape(n_places, 2)
        self.compared = (counts > 0).all(axis=1)
        self.left_out = ((np.bincount(place_index[keep], minlength=n_places) > 0) & ~self.compared).sum()
        clear = ~(table.cloud[rows] > CLEAR_CLOUD) & ~(table.nodata[rows] > CLEAR_NODATA)  # NaN: unknown, clear
        has_clear = np.bincount(group, weights=clear, minlength=2 * n_places) > 0
        used = (clear | ~has_clear[group]) & self.compared[group // 2]
        self.counts = counts
        self.used_counts = np.bincount(group[used], minlength=2 * n_places).reshape(n_places, 2)
        self.rows, self.group = rows[used], group[used]  # sorted by group: the table is in (place, date) order

    def score_medians(self, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(median score per place and period (n_places, 2), the row at each median) for a query vector."""
        scores = self.table.scores(vector, self.rows).astype(np.float64)
        order = np.lexsort((scores, self.group))
        counts = self.used_counts.ravel()
        starts = np.r_[0, np.cumsum(counts)[:-1]]
        present = counts > 0
        low, high = (starts + (counts - 1) // 2)[present], (starts + counts // 2)[present]
        medians = np.full(len(counts), np.nan)
        medians[present] = (scores[order[low]] + scores[order[high]]) / 2
        picks = np.full(len(counts), -1, dtype=np.int64)
        picks[present] = self.rows[order[low]]
        return medians.reshape(-1, 2), picks.reshape(-1, 2)

    def vector_change(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(1 - cosine, cosine, rows closest to each period's vector) per place, from the coordinate-wise
        median vector of each period's used acquisitions. Groups of one size are stacked and reduced at once."""
        n_groups = self.used_counts.size
        counts = self.used_counts.ravel()
        starts = np.r_[0, np.cumsum(counts)[:-1]]
        dim = self.table.codes.shape[1]
        centres = np.full((n_groups, dim), np.nan, dtype=np.float32)
        picks = np.full(n_groups, -1, dtype=np.int64)
        for size in np.unique(counts[counts > 0]):
            groups = np.flatnonzero(counts == size)
            step = max(1, ANY_CHUNK_ROWS // int(size))
            for at in range(0, len(groups), step):
                chunk = groups[at : at + step]
                rows = self.rows[starts[chunk][:, None] + np.arange(size)]  # (groups, size)
                vectors = self.table.vectors(rows.ravel()).reshape(len(chunk), size, dim)
                centre = np.median(vectors, axis=1)
                centre /= np.maximum(np.linalg.norm(centre, axis=1, keepdims=True), 1e-12)
                centres[chunk] = centre
                picks[chunk] = rows[np.arange(len(chunk)), np.einsum("gsd,gd->gs", vectors, centre).argmax(axis=1)]
        pairs = centres.reshape(-1, 2, dim).astype(np.float64)
        similarity = np.einsum("pd,pd->p", pairs[:, 0], pairs[:, 1])
        return 1.0 - similarity, similarity, picks.reshape(-1, 2)

    def ranked(self, change, scores: dict, picks, top_k: int, space: str, place_row) -> list[PlaceChange]:
        candidates = np.flatnonzero(self.compared)
        order = candidates[np.lexsort((self.place_ids[candidates], -change[candidates]))][:top_k]
        results = []
        for rank, p in enumerate(order, start=1):
            before_tile, after_tile = (int(t) for t in self.table.tile_ids[picks[p]])
            place = place_row(int(self.place_ids[p])) or {}
            results.append(
                PlaceChange(
                    rank=rank,
                    change=float(change[p]),
                    place_id=int(self.place_ids[p]),
                    space=space,
                    before_acquisitions=int(self.counts[p, 0]),
                    after_acquisitions=int(self.counts[p, 1]),
                    before_used=int(self.used_counts[p, 0]),
                    after_used=int(self.used_counts[p, 1]),
                    before_tile_id=before_tile,
                    after_tile_id=after_tile,
                    **{name: float(values[p]) for name, values in scores.items()},
                    lon=place.get("centre_lon"),
                    lat=place.get("centre_lat"),
                    footprint=json.loads(place["footprint"]) if place.get("footprint") else None,
                )
            )
        return results
