"""Retrieval metrics over ranked lists of item ids, as the Llama3-MS-CLIP paper computes them.

A query's result is a ranking: item ids, best first, no id twice. Its ground truth is the set of relevant ids
(which may name items absent from the ranking: they are relevant items the search missed).

Two average precisions are offered, because the paper's number is not the textbook one:
- `average_precision_at_k` is the paper's "mAP@100" (torchmetrics `RetrievalMAP(top_k=100)` semantics): the
  sum of precisions at the relevant ranks inside the top K is divided by h, the number of relevant items
  *found in the top K*. A query that finds one relevant item at rank 1 scores 1.0 however many it missed.
- `average_precision_at_k_normalised_by_relevant` divides the same sum by min(k, R), R the total number of
  relevant items, so missed relevant items lower the score.

Scores vs rankings: torchmetrics ranks by scores itself, and recent versions (1.9 included) treat items scored
<= 0 as not relevant (they keep their rank); the paper predates that. These functions take rankings, so they never
look at scores; `rank_by_scores` turns scores into a ranking with a documented tie rule.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Collection, Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

PRECISION_K = 10


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def _top_k(ranked: Sequence[Hashable], k: int) -> Sequence[Hashable]:
    """The first min(k, N) ids, after checking that the ranking lists no id twice (a broken ranking would
    otherwise count one relevant item several times)."""
    _check_k(k)
    if len(set(ranked)) != len(ranked):
        raise ValueError("a ranking must not list the same item twice")
    return ranked[:k]


def _precision_sum(top: Sequence[Hashable], relevant: Collection[Hashable]) -> tuple[float, int]:
    """Sum of i / p_i over the relevant items at ranks p_1 < p_2 < ... (1-based), and their count h."""
    total = 0.0
    found = 0
    for position, item in enumerate(top, start=1):
        if item in relevant:
            found += 1
            total += found / position
    return total, found


def average_precision_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int = 100) -> float:
    """The paper's AP@k: keep the top K = min(k, N); with the relevant items found there at ranks
    p_1 < ... < p_h, AP = (1/h) * sum_i i / p_i, and 0 when h == 0. h counts only what was found in the top K."""
    total, found = _precision_sum(_top_k(ranked, k), relevant)
    return total / found if found else 0.0


def average_precision_at_k_normalised_by_relevant(
    ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int = 100
) -> float:
    """AP@k normalised by min(k, R), R = len(relevant): the same sum as `average_precision_at_k` divided by
    the number of relevant items a perfect top k could hold; 0 when there is no relevant item."""
    total, _ = _precision_sum(_top_k(ranked, k), relevant)
    denominator = min(k, len(relevant))
    return total / denominator if denominator else 0.0


def recall_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float:
    """Fraction of the relevant items found in the top k; 0 when there is no relevant item (as torchmetrics'
    default `empty_target_action="neg"`)."""
    top = _top_k(ranked, k)
    if not relevant:
        return 0.0
    return sum(item in relevant for item in top) / len(relevant)


def precision_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int = PRECISION_K) -> float:
    """Relevant items in the top k divided by k, also when the ranking is shorter than k (torchmetrics'
    `RetrievalPrecision(adaptive_k=False)`): a short result list does not earn a higher precision."""
    top = _top_k(ranked, k)
    return sum(item in relevant for item in top) / k


def index_recall_at_k(approx_ranked: Sequence[Hashable], exact_ranked: Sequence[Hashable], k: int = 100) -> float:
    """How much of the exact top k an approximate index returns in its own top k:
    |approx[:k] ∩ exact[:k]| / min(k, len(exact)). Order inside the top k does not matter."""
    exact_top = set(_top_k(exact_ranked, k))
    if not exact_top:
        raise ValueError("the exact ranking is empty: index recall is undefined")
    approx_top = _top_k(approx_ranked, k)
    return sum(item in exact_top for item in approx_top) / len(exact_top)


def rank_by_scores(
    scores: Sequence[float] | np.ndarray,
    item_ids: Sequence[Hashable] | None = None,
    k: int | None = None,
) -> list[Hashable]:
    """Item ids ordered by descending score, best first (positions 0..N-1 when `item_ids` is None).

    Ties are broken by item order: of two equal scores, the item that comes first in `scores` ranks first
    (a stable sort). This makes results reproducible; torchmetrics instead orders ties with `torch.topk`,
    whose order among equal values is unspecified, so on tied scores of mixed relevance its AP can differ
    from ours. NaN scores are refused rather than given an arbitrary place.
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"scores must be one-dimensional, got shape {values.shape}")
    if np.isnan(values).any():
        raise ValueError("scores contain NaN")
    if item_ids is not None and len(item_ids) != len(values):
        raise ValueError(f"{len(item_ids)} item ids for {len(values)} scores")
    # Stable ascending sort of the negated scores = descending order with ties kept in item order.
    order = np.argsort(-values, kind="stable")
    if k is not None:
        _check_k(k)
        order = order[:k]
    if item_ids is None:
        return order.tolist()
    return [item_ids[i] for i in order]


@dataclass(frozen=True)
class RankedQuery:
    """One query's result to evaluate: its text, language ("" when unknown), ranking and relevant ids."""

    query: str
    ranked: Sequence[Hashable]
    relevant: Collection[Hashable]
    lang: str = ""


@dataclass(frozen=True)
class QueryMetrics:
    """One query's scores (a row of the per-query table). `relevant_in_top_k` is the paper's h."""

    query: str
    lang: str
    n_relevant: int
    n_ranked: int
    relevant_in_top_k: int
    average_precision: float
    average_precision_normalised_by_relevant: float
    recall_at_1: float
    recall_at_5: float
    recall_at_10: float
    precision_at_10: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# The per-query scores that are averaged into MeanMetrics, in column order.
_AVERAGED = (
    "average_precision",
    "average_precision_normalised_by_relevant",
    "recall_at_1",
    "recall_at_5",
    "recall_at_10",
    "precision_at_10",
)


@dataclass(frozen=True)
class MeanMetrics:
    """Unweighted means over a group of queries: scope "all" (lang is then "") or scope "lang" with its code
    ("" being the group of queries whose language is not given). `mean_average_precision` is the paper's mAP."""

    scope: str
    lang: str
    n_queries: int
    mean_average_precision: float
    mean_average_precision_normalised_by_relevant: float
    recall_at_1: float
    recall_at_5: float
    recall_at_10: float
    precision_at_10: float

    @classmethod
    def over(cls, rows: Sequence[QueryMetrics], scope: str, lang: str) -> "MeanMetrics":
        means = [float(np.mean([getattr(row, name) for row in rows])) for name in _AVERAGED]
        return cls(scope, lang, len(rows), *means)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EvaluationReport:
    """Per-query rows, their overall means and the means per language, for one cut-off k."""

    k: int
    queries: tuple[QueryMetrics, ...]
    overall: MeanMetrics
    by_lang: dict[str, MeanMetrics]

    def as_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "overall": self.overall.as_dict(),
            "by_lang": {lang: means.as_dict() for lang, means in self.by_lang.items()},
            "queries": [row.as_dict() for row in self.queries],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.as_dict(), indent=indent, ensure_ascii=False)

    def write_queries_csv(self, path: str | Path) -> None:
        _write_csv(path, QueryMetrics, [row.as_dict() for row in self.queries])

    def write_means_csv(self, path: str | Path) -> None:
        """The overall row first, then one row per language in sorted order."""
        rows = [self.overall, *self.by_lang.values()]
        _write_csv(path, MeanMetrics, [row.as_dict() for row in rows])


def _write_csv(path: str | Path, row_type: type, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[field.name for field in fields(row_type)])
        writer.writeheader()
        writer.writerows(rows)


def evaluate_query(ranked_query: RankedQuery, k: int = 100) -> QueryMetrics:
    """All scores of one query; AP at cut-off k, recall at 1/5/10 and precision at 10."""
    ranked, relevant = ranked_query.ranked, set(ranked_query.relevant)
    return QueryMetrics(
        query=ranked_query.query,
        lang=ranked_query.lang,
        n_relevant=len(relevant),
        n_ranked=len(ranked),
        relevant_in_top_k=_precision_sum(_top_k(ranked, k), relevant)[1],
        average_precision=average_precision_at_k(ranked, relevant, k),
        average_precision_normalised_by_relevant=average_precision_at_k_normalised_by_relevant(ranked, relevant, k),
        recall_at_1=recall_at_k(ranked, relevant, 1),
        recall_at_5=recall_at_k(ranked, relevant, 5),
        recall_at_10=recall_at_k(ranked, relevant, 10),
        precision_at_10=precision_at_k(ranked, relevant, PRECISION_K),
    )


def evaluate_rankings(ranked_queries: Iterable[RankedQuery], k: int = 100) -> EvaluationReport:
    """Score every query and average: overall and per language (languages in sorted order).

    Every query counts in the means, including one with no relevant item (it scores 0), as in the paper."""
    _check_k(k)
    rows = tuple(evaluate_query(ranked_query, k) for ranked_query in ranked_queries)
    if not rows:
        raise ValueError("no query to evaluate")
    by_lang = {
        lang: MeanMetrics.over([row for row in rows if row.lang == lang], "lang", lang)
        for lang in sorted({row.lang for row in rows})
    }
    return EvaluationReport(k=k, queries=rows, overall=MeanMetrics.over(rows, "all", ""), by_lang=by_lang)
