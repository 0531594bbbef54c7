"""`msearch eval` and `msearch classify` as library calls.

Retrieval: every query is ranked against its space through the index (what users get) and exactly over the
stored vectors; metrics are computed on the index's ranking, and the index's recall@k against the exact
ranking tells index error from model error. Label-based query sets follow the paper: one query per class,
its vector the re-normalised mean of the template embeddings, class names lower-cased with '_' and '/' as
spaces (MODELS.md §3).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from sqlalchemy import select

from msearch.models.prompts import TEMPLATES, class_vectors, classify_probabilities, eurosat_class_name
from msearch.schema import catalog
from msearch.search.language import detect_language
from msearch.search.metrics import EvaluationReport, RankedQuery, evaluate_rankings, index_recall_at_k
from msearch.search.querysets import QuerySet, load_query_set, query_set_from_labels, resolve
from msearch.search.searcher import QueryError, Searcher
from msearch.store.bridges import ROUTES


@dataclass
class RetrievalEvaluation:
    report: EvaluationReport
    index_recall: dict[str, float]  # per query: recall@k of the index's ranking against exact search
    spaces: dict[str, str]  # per query: the space it was answered in
    warnings: list[str]

    @property
    def mean_index_recall(self) -> float:
        return float(np.mean(list(self.index_recall.values()))) if self.index_recall else float("nan")


@dataclass
class ClassificationEvaluation:
    accuracy: float
    mean_class_recall: float
    per_class_recall: dict[str, float]
    n_tiles: int
    warnings: list[str]


def paper_class_name(label: str) -> str:
    return eurosat_class_name(label, split_camel_case=False)


def is_labels_file(path: Path) -> bool:
    """A labels file (file -> label(s)) rather than an explicit query set (query, lang, relevant)."""
    if path.suffix.lower() != ".csv":
        return False
    with open(path, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), [])
    return "query" not in header and "file" in header


def load_queries(path: str | Path, label_column: str | None = None) -> tuple[QuerySet, bool]:
    path = Path(path)
    if not path.exists():
        raise QueryError(f"query set {path} does not exist")
    if is_labels_file(path):
        return query_set_from_labels(path, label_column=label_column, query_for_label=paper_class_name, lang="en"), True
    return load_query_set(path), False


def tile_lookup(searcher: Searcher):
    """Relevant entries name tiles by path relative to the indexed root (or key), or by tile id."""
    with searcher.store.engine.connect() as conn:
        rows = conn.execute(select(catalog.tiles.c.id, catalog.tiles.c.key, catalog.tiles.c.path)).all()
    by_name = {}
    for tile_id, key, path in rows:
        by_name.setdefault(key, tile_id)
        by_name.setdefault(path, tile_id)
    ids = {str(r[0]) for r in rows}

    def lookup(entry: str) -> int | None:
        if entry in by_name:
            return int(by_name[entry])
        return int(entry) if entry in ids else None

    return lookup


def evaluate_retrieval(
    searcher: Searcher,
    queries_path: str | Path,
    space: str | None = None,
    k: int = 100,
    templates: Sequence[str] = TEMPLATES,
    label_column: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    per_place: bool = False,
) -> RetrievalEvaluation:
    """`progress(done, total)` is called before the first query and after each. With `per_place`, places are
    scored instead of tiles: the ranking is the top-k places a query returns (msearch.search.per_place), a place
    is relevant when any of its acquisitions is, and the index's recall is against the exact per-place ranking
    (places in the order of their best acquisition's exact score)."""
    queryset, label_based = load_queries(queries_path, label_column)
    warnings = list(queryset.warnings)
    if not queryset.queries:
        raise QueryError(f"{queries_path} holds no queries")
    lookup = tile_lookup(searcher)
    ranked_queries, index_recall, spaces = [], {}, {}
    exact_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    place_cache: dict[str, dict[int, int]] = {}  # per space: tile id -> place id (per_place)
    unknown: dict[str, list[str]] = {}  # per query source: the relevant entries not in the index
    if progress is not None:
        progress(0, len(queryset.queries))
    for done, query in enumerate(queryset.queries, start=1):
        lang = query_language(query)
        name = searcher.route(lang, space)
        encoder = searcher.text_encoder(name)
        if label_based:
            vector = class_vectors([query.query], encoder.encode_texts, templates)[0]
        else:
            vector = encoder.encode_texts([query.query])[0]
        resolution = resolve(query.relevant, lookup)
        if resolution.unknown:
            unknown[query.source] = resolution.unknown
        if name not in exact_cache:
            exact_cache[name] = searcher.store.all_vectors(name)
        ids, matrix = exact_cache[name]
        scores = matrix @ vector.astype(np.float32)
        order = np.argsort(-scores, kind="stable")
        relevant = set(resolution.ids)
        if per_place:
            place_of = place_cache.setdefault(name, _places_of(searcher, ids))
            exact = list(dict.fromkeys(place_of[int(ids[i])] for i in order))[:k]
            approx = [_place_or_tile(hit.place_id, hit.best[0]) for hit in searcher.place_ranking(name, vector, k)]
            relevant = {place_of.get(t, -t) for t in relevant}
        else:
            exact = [int(ids[i]) for i in order[:k]]
            approx = [tile_id for tile_id, _ in searcher.search_vector(name, vector, k, None)]
        label = f"{query.query} [{lang}]"
        index_recall[label] = index_recall_at_k(approx, exact, k) if exact else 1.0
        spaces[label] = name
        ranked_queries.append(RankedQuery(query=label, ranked=approx, relevant=relevant, lang=lang))
        if progress is not None:
            progress(done, len(queryset.queries))
    if unknown:
        warnings.append(_not_indexed_summary(unknown, len(queryset.queries), "queries", "relevant tiles"))
    return RetrievalEvaluation(evaluate_rankings(ranked_queries, k=k), index_recall, spaces, warnings)


def _places_of(searcher: Searcher, tile_ids: np.ndarray) -> dict[int, int]:
    """Tile id -> its place id, or minus the tile id for a tile without a place (a place of its own)."""
    places = searcher.store.places_of(tile_ids)
    return {int(t): _place_or_tile(places.get(int(t)), int(t)) for t in tile_ids}


def _place_or_tile(place_id: int | None, tile_id: int) -> int:
    return place_id if place_id is not None else -tile_id


def query_language(query) -> str:
    """A query's language: its lang column, else detected; a script no encoder learnt is a QueryError that
    names the query."""
    try:
        return query.lang or detect_language(query.query)
    except ValueError as exc:
        raise QueryError(f"{query.source}: {exc}") from None


def _not_indexed_summary(unknown: dict[str, list[str]], total: int, items: str, tiles: str) -> str:
    """One line for a partly indexed set, however many queries or classes it touches."""
    entries = [entry for missing in unknown.values() for entry in missing]
    example = next(iter(unknown.values()))[0]
    return (
        f"{len(entries)} {tiles} of {len(unknown)} of the {total} {items} are not in the index and are left out "
        f"of the scores (e.g. {example})"
    )


def evaluate_classification(
    searcher: Searcher,
    labels_path: str | Path,
    space: str | None = None,
    templates: Sequence[str] = TEMPLATES,
    label_column: str | None = None,
) -> ClassificationEvaluation:
    """Zero-shot top-1 accuracy and mean per-class recall of the indexed tiles of a single-label labels file."""
    queryset, label_based = load_queries(labels_path, label_column)
    if not label_based:
        raise QueryError(f"{labels_path} is not a labels file (columns file,label): --task classify needs one")
    name = searcher.route("en", space)
    encoder = searcher.text_encoder(name)
    lookup = tile_lookup(searcher)
    classes = [q.query for q in queryset.queries]
    truth: dict[int, int] = {}
    warnings = list(queryset.warnings)
    unknown: dict[str, list[str]] = {}
    several_labels = []
    for class_index, query in enumerate(queryset.queries):
        resolution = resolve(query.relevant, lookup)
        if resolution.unknown:
            unknown[query.query] = resolution.unknown
        for tile_id in resolution.ids:
            if tile_id in truth and truth[tile_id] != class_index:
                several_labels.append(tile_id)
                continue
            truth[tile_id] = class_index
    if unknown:
        warnings.append(_not_indexed_summary(unknown, len(queryset.queries), "classes", "labelled tiles"))
    if several_labels:
        warnings.append(
            f"{len(several_labels)} tiles have several labels (e.g. tile {several_labels[0]}): "
            f"classification scores their first"
        )
    if not truth:
        raise QueryError(f"none of the tiles in {labels_path} are in the index")
    tile_ids = sorted(truth)
    probabilities = classify_probabilities(
        searcher.store.vectors_of(name, tile_ids), class_vectors(classes, encoder.encode_texts, templates)
    )
    predicted = probabilities.argmax(axis=1)
    expected = np.array([truth[t] for t in tile_ids])
    recall = {c: float((predicted[expected == i] == i).mean()) for i, c in enumerate(classes) if (expected == i).any()}
    return ClassificationEvaluation(
        float((predicted == expected).mean()), float(np.mean(list(recall.values()))), recall, len(tile_ids), warnings
    )


@dataclass
class RouteComparison:
    """mAP@k per language for each route beyond English (and English's one route, `direct`)."""

    k: int
    queryset: str
    languages: dict[str, dict]  # lang -> {route: mAP@k, ..., "queries": n, "chosen": best route}
    warnings: list[str]

    def as_dict(self) -> dict:
        return {"k": self.k, "queryset": self.queryset, "languages": self.languages}


def evaluate_routes(searcher: Searcher, queries_path: str | Path, k: int = 100) -> RouteComparison:
    """Rank every query of a query set by each route (rgb, bridge, fuse for the languages beyond English) and
    compare mAP@k per language; the chosen route is the best, rgb on ties (it needs no bridge)."""
    queryset, label_based = load_queries(queries_path)
    if label_based:
        raise QueryError(
            f"{queries_path} is a labels file (English class names): --routes compares how queries "
            f"in other languages reach the index, so give a query set with a lang column"
        )
    langs = {query_language(q) for q in queryset.queries} - {"en"}
    if not langs:
        raise QueryError(
            f"{queries_path} has no query beyond English: --routes compares how queries in other languages "
            f"reach the index (English ones take the direct route), so give queries with another lang"
        )
    if not any(searcher.bridge_for(lang) for lang in langs):
        raise QueryError("this index has no bridge to compare routes with: run `msearch align` first")
    lookup = tile_lookup(searcher)
    warnings = list(queryset.warnings)
    per_route: dict[str, list[RankedQuery]] = {}
    unbridged: dict[str, int] = {}  # lang -> queries scored by their rgb route only
    for query in queryset.queries:
        lang = query_language(query)
        relevant = set(resolve(query.relevant, lookup).ids)
        label = f"{query.query} [{lang}]"
        if lang == "en":
            vector, _ = searcher.embed_text(searcher.route("en"), query.query)
            ranked = searcher.search_vector(searcher.route("en"), vector, k, None)
            per_route.setdefault("direct", []).append(RankedQuery(label, [t for t, _ in ranked], relevant, lang))
            continue
        if searcher.bridge_for(lang) is None:
            unbridged[lang] = unbridged.get(lang, 0) + 1
        for route in ROUTES if searcher.bridge_for(lang) else ("rgb",):
            ranked, _, _ = searcher.routed_ranking(query.query, lang, route, k)
            per_route.setdefault(route, []).append(RankedQuery(label, [t for t, _ in ranked], relevant, lang))
    for lang, count in sorted(unbridged.items()):
        warnings.append(f"no bridge carries {lang!r}: only the rgb route of its {count} queries is scored")
    languages: dict[str, dict] = {}
    for route, ranked_queries in per_route.items():
        for lang, means in evaluate_rankings(ranked_queries, k=k).by_lang.items():
            entry = languages.setdefault(lang, {"queries": means.n_queries})
            entry[route] = means.mean_average_precision
    for entry in languages.values():
        scored = [r for r in ("rgb", "bridge", "fuse", "direct") if r in entry]
        entry["chosen"] = max(scored, key=lambda r: (entry[r], r == "rgb"))
    return RouteComparison(k, Path(queries_path).name, dict(sorted(languages.items())), warnings)
