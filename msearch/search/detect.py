"""Detectors: a linear probe fitted on a collection's labelled examples, scored over the whole archive.

The probe is a regularised logistic regression (scikit-learn) on the stored unit vectors: p(x) = sigmoid(w.x + b).
With few labelled negatives, unlabelled tiles drawn from the archive (seeded, so the same catalogue gives the
same probe) join them as negatives: most tiles of an archive are not what is being looked for.

Scoring scales because the probe is one direction in the space: p(x) >= P exactly when u.x >= (logit(P) - b)/|w|
with u = w/|w|, so the space's search index, queried with u, returns the candidates in order of probability.
They are rescored exactly from the stored vectors, and the search is made deeper until it reaches past the
threshold (or the top-k, or the suggestions asked for). `exhaustive=True` scores every stored vector instead,
chunk by chunk, as a check on the candidates.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator

import numpy as np

from msearch.search.formats import CSV_COLUMNS
from msearch.search.per_place import place_fields, top_places
from msearch.search.results import SearchResult
from msearch.search.searcher import Filters, QueryError, Searcher
from msearch.store.catalogue import snapshot
from msearch.store.collections import Collection, CollectionError, example_vectors, get_collection
from msearch.store.export import export_tiles

# C of scikit-learn's LogisticRegression (inverse L2 strength). Unit vectors have small components, so the
# default 1.0 shrinks the probe to near-constant probabilities; 10 keeps them spread (ANALYSIS.md measured
# the planted cluster ranked first for C from 0.1 to 10).
REGULARISATION_C = 10.0
# Fewer labelled negatives than this, and BACKGROUND_NEGATIVES unlabelled tiles drawn with BACKGROUND_SEED
# are added as negatives.
FEW_NEGATIVES = 50
BACKGROUND_NEGATIVES = 500
BACKGROUND_SEED = 0
MIN_POSITIVES = 2
CV_FOLDS = 5
DEFAULT_TOP_K = 100
# The deepest candidate search; past it the answer says it was cut (use --exhaustive to see everything).
MAX_CANDIDATES = 200_000
FIRST_DEPTH = 256
# A probe's direction is no data point: the tiles nearest it are spread over many more lists of an inverted
# file than a query's neighbours, so its candidate search probes this many times the tuned lists (capped at all
# of them). bench/detect.py --nprobe-scales (IVF-PQ, 4096 lists, tuned nprobe 4), share of the exhaustive
# top-1000 found at x1, x4, x16, x64, x128: 0.26, 0.41, 0.67, 0.87, 0.92 at 1M; 0.19, 0.42, 0.72, 0.86, 0.88 at
# 10M, each in 0.3 s or less; at x64 the candidates held 195 of 195 planted tiles at 1M, 193 of 195 at 10M. On
# the planted test index (256 lists, tuned nprobe 64) x1 found 99 of the exhaustive top 100.
NPROBE_SCALE = 64


@dataclass
class Probe:
    """The fitted direction: p(x) = sigmoid(x . weights + bias), with what it was fitted on and how well it
    did under cross-validation on those examples."""

    weights: np.ndarray  # (dim,) float32
    bias: float
    positives: int
    negatives: int  # labelled
    background: int  # unlabelled tiles drawn as extra negatives
    cv: dict = field(default_factory=dict)  # folds, precision, recall (at p >= 0.5), average_precision

    def decision(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, dtype=np.float32) @ self.weights + self.bias

    def probability(self, vectors: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.decision(vectors).astype(np.float64)))

    @property
    def direction(self) -> np.ndarray:
        return (self.weights / np.linalg.norm(self.weights)).astype(np.float32)

    def cosine_at(self, probability: float) -> float:
        """The cosine with `direction` above which a unit vector's probability is at least `probability`."""
        logit = math.log(probability / (1 - probability))
        return (logit - self.bias) / float(np.linalg.norm(self.weights))

    def to_dict(self) -> dict:
        return {
            "positives": self.positives,
            "negatives": self.negatives,
            "background_negatives": self.background,
            "regularisation_c": REGULARISATION_C,
            "cross_validation": self.cv,
        }


def fit_probe(positives: np.ndarray, negatives: np.ndarray, background: np.ndarray | None = None) -> Probe:
    """Fit the probe on positive and negative example vectors (and unlabelled `background` ones, as negatives),
    with stratified cross-validation reported in `Probe.cv`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, precision_score, recall_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    background = np.empty((0, positives.shape[1]), np.float32) if background is None else background
    if len(positives) < MIN_POSITIVES:
        raise QueryError(
            f"a detector needs at least {MIN_POSITIVES} positive examples, the collection has {len(positives)}: "
            f"add more with `msearch collection add NAME --positive TILE_ID`"
        )
    if len(negatives) + len(background) == 0:
        raise QueryError(
            "a detector needs negative examples, and the archive has no unlabelled tiles to draw them from"
        )
    x = np.concatenate([positives, negatives, background]).astype(np.float32)
    y = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives) + len(background))]).astype(int)

    def model():
        return LogisticRegression(C=REGULARISATION_C, class_weight="balanced", max_iter=2_000)

    folds = min(CV_FOLDS, len(positives), len(y) - len(positives))
    cv = {"folds": folds}
    if folds >= 2:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=BACKGROUND_SEED)
        held_out = cross_val_predict(model(), x, y, cv=splitter, method="predict_proba")[:, 1]
        cv.update(
            precision=float(precision_score(y, held_out >= 0.5, zero_division=0.0)),
            recall=float(recall_score(y, held_out >= 0.5)),
            average_precision=float(average_precision_score(y, held_out)),
        )
    fitted = model().fit(x, y)
    return Probe(
        fitted.coef_[0].astype(np.float32),
        float(fitted.intercept_[0]),
        len(positives),
        len(negatives),
        len(background),
        cv,
    )


@dataclass(frozen=True)
class Detection(SearchResult):
    """A tile ranked by a detector: the query result's fields (its `score` is the probe's w.x + b), the
    probability, and the tile's label in the collection (positive, negative, or None when unlabelled)."""

    probability: float = 0.0
    label: str | None = None


# --csv: the query's columns, then these
DETECTION_CSV_COLUMNS = (*CSV_COLUMNS, "probability", "label")


@dataclass
class DetectionAnswer:
    collection: Collection
    probe: Probe
    results: list[Detection]
    candidates: int  # tiles scored exactly
    exhaustive: bool
    truncated: bool = False  # the candidate search stopped at MAX_CANDIDATES
    matching_tiles: int | None = None
    suggestions: bool = False
    per_place: bool = False

    def info(self) -> dict:
        return {
            "query": f"detect:{self.collection.name}",
            "lang": None,
            "space": self.collection.space,
            "collection": self.collection.name,
            "fit": self.probe.to_dict(),
            "candidates_scored": self.candidates,
            "exhaustive": self.exhaustive,
            "truncated": self.truncated,
            "matching_tiles": self.matching_tiles,
            "missing_labels": [item.name for item in self.collection.missing],
            "suggestions": self.suggestions,
            "per_place": self.per_place,
        }


class Detector:
    """A probe fitted on one collection of a searcher's index, and its scoring of the archive."""

    def __init__(self, searcher: Searcher, name: str, space: str | None = None):
        self.searcher = searcher
        store = searcher.store
        self.collection = get_collection(store, name)
        space_of = self.collection.space
        if space is not None and space != space_of:
            raise CollectionError(
                f"collection {name!r} holds examples of space {space_of!r}, not {space!r}: a detector scores the "
                f"space its examples were embedded in (leave out --space)"
            )
        if space_of not in store.manifests():
            raise CollectionError(
                f"collection {name!r} holds examples of space {space_of!r}, which this index does not have "
                f"(it has: {', '.join(store.manifests()) or 'none'})"
            )
        searcher.not_empty(space_of)
        positives = example_vectors(store, self.collection, "positive")
        negatives = example_vectors(store, self.collection, "negative")
        background = None
        if len(negatives) < FEW_NEGATIVES and len(positives) >= MIN_POSITIVES:
            background = store.sample_vectors(
                space_of, BACKGROUND_NEGATIVES, BACKGROUND_SEED, exclude=self.collection.labelled_tiles()
            )[1]
        self.probe = fit_probe(positives, negatives, background)

    @property
    def space(self) -> str:
        return self.collection.space

    def detect(
        self,
        top_k: int | None = None,
        threshold: float | None = None,
        filters: Filters = Filters(),
        exhaustive: bool = False,
        per_place: bool = False,
    ) -> DetectionAnswer:
        """Tiles by probability, best first: the top_k (default DEFAULT_TOP_K without a threshold), or every tile
        at or above `threshold` (at most top_k when both are given). `per_place`: places instead of tiles, each
        by its most probable acquisition (see `_by_place`)."""
        _check_window(top_k, threshold)
        if top_k is None and threshold is None:
            top_k = DEFAULT_TOP_K
        if per_place:
            return self._by_place(top_k, threshold, filters, exhaustive)
        allowed = self.searcher.allowed_ids(filters)
        if exhaustive:
            ids, probabilities = self._exhaustive(allowed, top_k, threshold)
            candidates, truncated = self._count(allowed), False
        else:
            cutoff = None if threshold is None else self.probe.cosine_at(threshold)

            def enough(found_ids, cosines, exhausted):
                if exhausted:
                    return True
                if threshold is None:
                    return len(found_ids) >= top_k
                if len(found_ids) and cosines[-1] < cutoff:
                    return True  # the search reached past the threshold
                return top_k is not None and len(found_ids) >= top_k

            ids, probabilities, truncated = self._candidates(allowed, enough, (top_k or 0))
            candidates = len(ids)
        keep = np.ones(len(ids), dtype=bool) if threshold is None else probabilities >= threshold
        ids, probabilities = ids[keep], probabilities[keep]
        order = np.argsort(-probabilities, kind="stable")[: top_k if top_k is not None else len(ids)]
        return DetectionAnswer(
            self.collection,
            self.probe,
            self._results(ids[order], probabilities[order]),
            candidates,
            exhaustive,
            truncated,
            len(allowed) if allowed is not None else None,
        )

    def _by_place(
        self, top_k: int | None, threshold: float | None, filters: Filters, exhaustive: bool
    ) -> DetectionAnswer:
        """The top_k places (every place with an acquisition at or above `threshold` without top_k), each as its
        most probable acquisition with the place's passing acquisitions and dates, as a query's results per
        place carry them. The tile ranking is made deeper until it holds top_k places (msearch.search.per_place),
        so a place seen at many dates does not crowd the others out."""
        allowed = self.searcher.allowed_ids(filters)
        available = self._count(allowed)
        ranked: dict[str, DetectionAnswer] = {}

        def rank(depth: int) -> list[tuple[int, float]]:
            ranked["tiles"] = self.detect(depth, threshold, filters, exhaustive)
            return [(r.tile_id, r.probability) for r in ranked["tiles"].results]

        hits = top_places(
            rank,
            top_k if top_k is not None else max(available, 1),
            self.searcher.store,
            candidates=available,
            where=filters.where() if filters.active else None,
        )
        tiles = ranked["tiles"]
        by_id = {r.tile_id: r for r in tiles.results}
        results = [
            replace(by_id[hit.best[0]], rank=position, **place_fields(hit))
            for position, hit in enumerate(hits, start=1)
        ]
        return replace(tiles, results=results, per_place=True)

    def suggest(self, n: int, filters: Filters = Filters()) -> DetectionAnswer:
        """The n unlabelled tiles whose probability is nearest 0.5 among the candidates (the next labels to
        give: where the probe is least sure)."""
        if n <= 0:
            raise QueryError(f"--suggest must be at least 1, got {n}")
        allowed = self.searcher.allowed_ids(filters)
        labelled = self.collection.labelled_tiles()
        cutoff = self.probe.cosine_at(0.5)

        def enough(found_ids, cosines, exhausted):
            # every candidate above p = 0.5, and n unlabelled ones below it
            below = found_ids[cosines < cutoff]
            return exhausted or len(below) - np.isin(below, list(labelled)).sum() >= n

        ids, probabilities, truncated = self._candidates(allowed, enough, n + len(labelled))
        scored = len(ids)
        unlabelled = ~np.isin(ids, list(labelled))
        ids, probabilities = ids[unlabelled], probabilities[unlabelled]
        order = np.argsort(np.abs(probabilities - 0.5), kind="stable")[:n]
        return DetectionAnswer(
            self.collection,
            self.probe,
            self._results(ids[order], probabilities[order]),
            scored,
            False,
            truncated,
            len(allowed) if allowed is not None else None,
            suggestions=True,
        )

    def _candidates(
        self, allowed: np.ndarray | None, enough: Callable, at_least: int
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """(tile ids, exact probabilities, truncated) of the index's candidates (see `candidate_probabilities`)."""
        return candidate_probabilities(
            self.probe,
            lambda direction, depth: self.searcher.search_vector(self.space, direction, depth, allowed, NPROBE_SCALE),
            lambda ids: self.searcher.store.vectors_of(self.space, ids),
            enough,
            max(FIRST_DEPTH, 2 * (at_least + len(self.collection.labels))),
            self._count(allowed),
        )

    def _exhaustive(
        self, allowed: np.ndarray | None, top_k: int | None, threshold: float | None
    ) -> tuple[np.ndarray, np.ndarray]:
        store, dim = self.searcher.store, self.searcher.store.manifest(self.space).dim
        with snapshot(store.engine) as conn:
            chunks = store.vector_chunks(conn, self.space, dim)
            return exhaustive_probabilities(self.probe, _allowed_rows(chunks, allowed), top_k, threshold)

    def _count(self, allowed: np.ndarray | None) -> int:
        return len(allowed) if allowed is not None else self.searcher.view(self.space).ntotal

    def _results(self, ids: np.ndarray, probabilities: np.ndarray) -> list[Detection]:
        labelled = self.collection.labelled_tiles()
        vectors = self.searcher.store.vectors_of(self.space, ids) if len(ids) else np.empty((0, 1))
        decisions = self.probe.decision(vectors) if len(ids) else []
        plain = self.searcher.results_of([(int(t), float(d)) for t, d in zip(ids, decisions)], self.space)
        return [
            Detection(**vars(result), probability=float(p), label=labelled.get(result.tile_id))
            for result, p in zip(plain, probabilities)
        ]


class FittedDetectors:
    """The detectors of a long-lived searcher (msearch serve), each fitted once per state of its collection and
    of its space's vectors, so that the page's detections, their threshold and the suggestions reuse one fit (a
    fit reads the labelled vectors, draws BACKGROUND_NEGATIVES more from the catalogue and cross-validates: 0.19 s
    on a 1M-vector catalogue, bench/detect.py --catalogue). A label added or removed, by any process, or an index
    run that changed the space (its vectors' generation and last seq, once the searcher is refreshed) fits it
    again. The `keep` most recently used are kept."""

    def __init__(self, searcher: Searcher, keep: int = 16):
        self.searcher = searcher
        self.keep = keep
        self._fitted: OrderedDict[str, tuple[tuple, Detector]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> Detector:
        state = self._state(name)
        with self._lock:
            cached = self._fitted.get(name)
            if cached is not None and cached[0] == state:
                self._fitted.move_to_end(name)
                return cached[1]
        # Fitted outside the lock; `state` was read before the fit, so a label added meanwhile makes the next call
        # see another state and fit again.
        detector = Detector(self.searcher, name)
        with self._lock:
            self._fitted[name] = (state, detector)
            self._fitted.move_to_end(name)
            while len(self._fitted) > self.keep:
                self._fitted.popitem(last=False)
        return detector

    def _state(self, name: str) -> tuple:
        collection = get_collection(self.searcher.store, name)
        labels = tuple(
            (item.label, item.tile_id, item.root, item.key, item.file, item.added_at)
            for item in collection.labels + collection.missing
        )
        vectors = None
        if collection.space in self.searcher.store.manifests():  # else Detector raises the clear error
            view = self.searcher.view(collection.space)
            vectors = (view.generation, view.synced_seq)
        return collection.id, collection.space, labels, vectors


def candidate_probabilities(
    probe: Probe,
    search: Callable[[np.ndarray, int], list[tuple[int, float]]],
    lookup: Callable[[np.ndarray], np.ndarray],
    enough: Callable[[np.ndarray, np.ndarray, bool], bool],
    first_depth: int,
    available: int,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(ids, exact probabilities, truncated): `search(direction, depth)` ranks (id, cosine) by the probe's
    direction, deeper (x4) until `enough(ids, cosines in rank order, exhausted)` or MAX_CANDIDATES; the
    candidates are then rescored from `lookup(ids)`, their stored vectors."""
    depth = first_depth
    while True:
        depth = min(depth, MAX_CANDIDATES, available)
        ranked = search(probe.direction, depth)
        ids = np.array([t for t, _ in ranked], dtype=np.int64)
        cosines = np.array([c for _, c in ranked], dtype=np.float32)
        exhausted = len(ids) < depth or depth >= available
        if enough(ids, cosines, exhausted):
            return ids, probe.probability(lookup(ids)) if len(ids) else np.empty(0), False
        if depth >= MAX_CANDIDATES:
            return ids, probe.probability(lookup(ids)), True
        depth *= 4


def exhaustive_probabilities(
    probe: Probe, chunks: Iterable[tuple[np.ndarray, np.ndarray]], top_k: int | None, threshold: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Every (ids, vectors) chunk scored; keeps only what can still make the answer (the top_k, those at or
    above the threshold)."""
    kept_ids, kept_p = np.empty(0, np.int64), np.empty(0)
    for ids, matrix in chunks:
        p = probe.probability(matrix)
        if threshold is not None:
            ids, p = ids[p >= threshold], p[p >= threshold]
        kept_ids, kept_p = np.concatenate([kept_ids, ids]), np.concatenate([kept_p, p])
        if top_k is not None and len(kept_ids) > top_k:
            best = np.argpartition(-kept_p, top_k - 1)[:top_k]
            kept_ids, kept_p = kept_ids[best], kept_p[best]
    return kept_ids, kept_p


def _allowed_rows(chunks, allowed: np.ndarray | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) of each chunk, restricted to the allowed ids when there are any."""
    for ids, matrix, _ in chunks:
        if allowed is None:
            yield ids, matrix
        else:
            inside = np.isin(ids, allowed)
            yield ids[inside], matrix[inside]


def _check_window(top_k: int | None, threshold: float | None) -> None:
    if top_k is not None and top_k <= 0:
        raise QueryError(f"--top-k must be at least 1, got {top_k}")
    if threshold is not None and not 0 < threshold < 1:
        raise QueryError(f"--threshold is a probability between 0 and 1 (exclusive), got {threshold}")


def write_geoparquet(store, answer: DetectionAnswer, path) -> int:
    """The detections as GeoParquet (msearch.store.export's columns and footprint geometry), best first, with
    `rank`, `probability`, `decision` (the probe's w.x + b) and `label`; returns the rows written."""
    import pyarrow as pa

    results = answer.results
    return export_tiles(
        store,
        path,
        [r.tile_id for r in results],
        {
            "rank": pa.array([r.rank for r in results], pa.int64()),
            "probability": pa.array([r.probability for r in results], pa.float64()),
            "decision": pa.array([r.score for r in results], pa.float64()),
            "label": pa.array([r.label for r in results], pa.string()),
        },
    )
