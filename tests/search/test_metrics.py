"""Retrieval metrics: hand-computed cases, and agreement with torchmetrics' RetrievalMAP(top_k=100), the
implementation the paper used for its mAP@100."""

import csv
import json

import numpy as np
import pytest
import torch
from torchmetrics.retrieval import RetrievalMAP, RetrievalPrecision, RetrievalRecall

from msearch.search.metrics import (
    EvaluationReport,
    RankedQuery,
    average_precision_at_k,
    average_precision_at_k_normalised_by_relevant,
    evaluate_rankings,
    index_recall_at_k,
    precision_at_k,
    rank_by_scores,
    recall_at_k,
)


def torchmetrics_value(metric, scores, relevant_mask, query_index=None) -> float:
    scores = torch.as_tensor(np.asarray(scores), dtype=torch.float32)
    target = torch.as_tensor(np.asarray(relevant_mask), dtype=torch.bool)
    if query_index is None:
        query_index = torch.zeros(len(scores), dtype=torch.long)
    return float(metric(scores, target, indexes=torch.as_tensor(np.asarray(query_index), dtype=torch.long)))


# ---- hand-computed cases (the expected numbers are worked out by hand in the comments) ----


def test_ap_missed_relevant_counts_only_in_the_normalised_variant():
    # relevant b at rank 2, d at rank 4, x never retrieved. Paper: h = 2, (1/2 + 2/4) / 2 = 0.5.
    # Normalised: (1/2 + 2/4) / min(100, R=3) = 1/3.
    ranked, relevant = ["a", "b", "c", "d", "e"], {"b", "d", "x"}
    assert average_precision_at_k(ranked, relevant) == pytest.approx(0.5)
    assert average_precision_at_k_normalised_by_relevant(ranked, relevant) == pytest.approx(1 / 3)


def test_ap_cut_off_at_k():
    # k = 3 keeps a, b, c: only a (rank 1) is found, h = 1 -> 1/1 = 1.0; d at rank 4 is cut off.
    # Normalised: 1 / min(3, R=2) = 0.5.
    ranked, relevant = ["a", "b", "c", "d"], {"a", "d"}
    assert average_precision_at_k(ranked, relevant, k=3) == pytest.approx(1.0)
    assert average_precision_at_k_normalised_by_relevant(ranked, relevant, k=3) == pytest.approx(0.5)


def test_ap_fewer_items_than_k():
    # N = 4 < 100, relevant at ranks 3 and 4: (1/3 + 2/4) / 2 = 5/12 in both variants (R = h = 2).
    ranked, relevant = ["a", "b", "c", "d"], {"c", "d"}
    assert average_precision_at_k(ranked, relevant) == pytest.approx(5 / 12)
    assert average_precision_at_k_normalised_by_relevant(ranked, relevant) == pytest.approx(5 / 12)


def test_ap_relevant_item_beyond_rank_100():
    # 150 items, relevant at ranks 1 and 101. Paper: h = 1 -> 1/1 = 1.0. Normalised: 1 / min(100, 2) = 0.5.
    ranked = list(range(150))
    relevant = {0, 100}
    assert average_precision_at_k(ranked, relevant) == pytest.approx(1.0)
    assert average_precision_at_k_normalised_by_relevant(ranked, relevant) == pytest.approx(0.5)


def test_ap_more_relevant_than_k_all_on_top():
    # 120 relevant items fill the top 100: each term is i/i = 1, sum 100; /h=100 and /min(100, 120) both 1.0.
    ranked = list(range(200))
    relevant = set(range(120))
    assert average_precision_at_k(ranked, relevant) == pytest.approx(1.0)
    assert average_precision_at_k_normalised_by_relevant(ranked, relevant) == pytest.approx(1.0)


def test_ap_no_relevant_and_all_relevant():
    assert average_precision_at_k(["a", "b"], set()) == 0.0
    assert average_precision_at_k_normalised_by_relevant(["a", "b"], set()) == 0.0
    assert average_precision_at_k(["a", "b"], {"z"}) == 0.0  # relevant exists but was not retrieved
    assert average_precision_at_k(["a", "b", "c"], {"a", "b", "c"}) == 1.0
    assert average_precision_at_k_normalised_by_relevant(["a", "b", "c"], {"a", "b", "c"}) == 1.0


def test_recall_and_precision_by_hand():
    ranked = list("abcdefghijkl")  # 12 items
    relevant = {"a", "f", "z"}  # ranks 1 and 6, z never retrieved: R = 3
    assert recall_at_k(ranked, relevant, 1) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, relevant, 5) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, relevant, 10) == pytest.approx(2 / 3)
    assert precision_at_k(ranked, relevant, 10) == pytest.approx(2 / 10)
    # A 4-item ranking with 2 relevant still divides by 10.
    assert precision_at_k(["a", "b", "c", "d"], {"b", "d"}, 10) == pytest.approx(0.2)
    assert recall_at_k(ranked, set(), 10) == 0.0


def test_index_recall_by_hand():
    exact = list(range(1, 11))
    # top 5 of exact is {1..5}; approx's top 5 holds 1, 2, 3, 4 and a stranger 11 -> 4/5.
    assert index_recall_at_k([1, 2, 3, 11, 4, 5], exact, k=5) == pytest.approx(0.8)
    assert index_recall_at_k([5, 4, 3, 2, 1], exact, k=5) == 1.0  # order inside the top k does not matter
    # An exact ranking shorter than k: the denominator is its length (3), approx finds 2 of them.
    assert index_recall_at_k([7, 8, 9], [7, 9, 6], k=100) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="empty"):
        index_recall_at_k([1], [], k=5)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="twice"):
        average_precision_at_k(["a", "b", "a"], {"a"})
    for bad_k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            average_precision_at_k(["a"], {"a"}, k=bad_k)
    with pytest.raises(ValueError, match="NaN"):
        rank_by_scores([0.1, float("nan")])
    with pytest.raises(ValueError, match="2 item ids for 3 scores"):
        rank_by_scores([0.1, 0.2, 0.3], ["a", "b"])


def test_rank_by_scores_is_descending_and_stable_on_ties():
    scores = [0.2, 0.5, 0.5, 0.1, 0.5, -1.0]
    assert rank_by_scores(scores) == [1, 2, 4, 0, 3, 5]
    assert rank_by_scores(np.array(scores), item_ids=list("abcdef")) == list("bceadf")
    assert rank_by_scores(scores, k=2) == [1, 2]
    assert rank_by_scores([0.0, -0.0, 0.0]) == [0, 1, 2]  # -0.0 == 0.0: a tie, kept in item order


# ---- agreement with torchmetrics ----


@pytest.mark.parametrize("seed", range(40))
def test_ap_matches_torchmetrics_on_random_rankings(seed):
    rng = np.random.default_rng(seed)
    n_items = int(rng.integers(1, 400))  # below and above the cut-off of 100
    # Continuous scores in (0.01, 1]: positive (torchmetrics 1.9 would zero the relevance of scores <= 0) and,
    # with probability 1, without ties.
    scores = rng.uniform(0.01, 1.0, n_items)
    relevant_mask = rng.random(n_items) < rng.uniform(0.0, 0.5)
    relevant = set(np.flatnonzero(relevant_mask).tolist())
    ranked = rank_by_scores(scores)

    ours = average_precision_at_k(ranked, relevant, k=100)
    assert ours == pytest.approx(torchmetrics_value(RetrievalMAP(top_k=100), scores, relevant_mask), abs=1e-6)
    for k in (1, 5, 10):
        expected = torchmetrics_value(RetrievalRecall(top_k=k), scores, relevant_mask)
        assert recall_at_k(ranked, relevant, k) == pytest.approx(expected, abs=1e-6)
    expected_precision = torchmetrics_value(RetrievalPrecision(top_k=10), scores, relevant_mask)
    assert precision_at_k(ranked, relevant, 10) == pytest.approx(expected_precision, abs=1e-6)


@pytest.mark.parametrize("seed", range(10))
def test_mean_ap_matches_torchmetrics_on_multi_label_queries(seed):
    """Several queries over one item set with multi-label relevance (one query per class, an item relevant to
    every class among its labels), including classes nobody carries: the mean equals RetrievalMAP's mean."""
    rng = np.random.default_rng(1000 + seed)
    n_items, n_classes = 250, 7
    labels = rng.random((n_items, n_classes)) < 0.2
    labels[:, -1] = False  # a class with no relevant item scores 0 in both
    scores = rng.uniform(0.01, 1.0, (n_classes, n_items))

    queries = [
        RankedQuery(f"class {c}", rank_by_scores(scores[c]), set(np.flatnonzero(labels[:, c]).tolist()), "en")
        for c in range(n_classes)
    ]
    report = evaluate_rankings(queries, k=100)
    expected = torchmetrics_value(
        RetrievalMAP(top_k=100),
        scores.reshape(-1),
        labels.T.reshape(-1),
        np.repeat(np.arange(n_classes), n_items),
    )
    assert report.overall.mean_average_precision == pytest.approx(expected, abs=1e-6)
    assert report.queries[-1].average_precision == 0.0


def test_ties_of_equal_relevance_match_torchmetrics():
    """Tied groups whose members are all relevant or all not: any order inside a group gives the same AP,
    so torchmetrics must agree although it orders ties differently."""
    rng = np.random.default_rng(7)
    group_scores = rng.uniform(0.01, 1.0, 40)
    group_relevant = rng.random(40) < 0.3
    sizes = rng.integers(1, 8, 40)
    scores = np.repeat(group_scores, sizes)
    relevant_mask = np.repeat(group_relevant, sizes)
    ranked = rank_by_scores(scores)
    relevant = set(np.flatnonzero(relevant_mask).tolist())
    expected = torchmetrics_value(RetrievalMAP(top_k=100), scores, relevant_mask)
    assert average_precision_at_k(ranked, relevant) == pytest.approx(expected, abs=1e-6)


def test_ties_of_mixed_relevance_follow_item_order():
    """Three items tied at 0.5, only the last relevant. Our stable order ranks it 3rd: AP = 1/3 by hand.
    torchmetrics 1.9 orders ties with torch.topk (unspecified order; on CPU it did not keep item order), so
    its value can be anything the tie allows: between the worst order (1/3) and the best (1)."""
    scores, relevant_mask = [0.5, 0.5, 0.5], [False, False, True]
    assert average_precision_at_k(rank_by_scores(scores), {2}) == pytest.approx(1 / 3)
    theirs = torchmetrics_value(RetrievalMAP(top_k=100), scores, relevant_mask)
    assert theirs in (pytest.approx(1 / 3), pytest.approx(1 / 2), pytest.approx(1.0))


def test_torchmetrics_drops_nonpositive_scores_and_the_paper_did_not():
    """torchmetrics 1.9 counts an item scored <= 0 as not relevant (it keeps its rank). The paper predates
    that, and cosine similarities can be negative, so our AP, computed from the ranking, keeps it."""
    scores, relevant_mask = [0.9, 0.0, -0.1], [False, True, True]
    ranked = rank_by_scores(scores)
    # relevant at ranks 2 and 3: (1/2 + 2/3) / 2 = 7/12.
    assert average_precision_at_k(ranked, {1, 2}) == pytest.approx(7 / 12)
    assert torchmetrics_value(RetrievalMAP(top_k=100), scores, relevant_mask) == 0.0


# ---- the batch evaluator and its serialisations ----


def small_report() -> EvaluationReport:
    return evaluate_rankings(
        [
            RankedQuery("river", ["r1", "x", "r2"], {"r1", "r2"}, "en"),  # AP (1 + 2/3)/2 = 5/6
            RankedQuery("forest", ["x", "f1"], {"f1"}, "en"),  # AP 1/2
            RankedQuery("rio", ["x", "y"], {"r1"}, "pt"),  # nothing found: 0
            RankedQuery("lake", ["l1"], {"l1"}),  # no language given: AP 1
        ]
    )


def test_evaluate_rankings_rows_and_means():
    report = small_report()
    river = report.queries[0]
    assert (river.n_relevant, river.n_ranked, river.relevant_in_top_k) == (2, 3, 2)
    assert river.average_precision == pytest.approx(5 / 6)
    assert river.recall_at_1 == pytest.approx(0.5)
    assert river.precision_at_10 == pytest.approx(0.2)
    assert report.overall.n_queries == 4
    assert report.overall.mean_average_precision == pytest.approx((5 / 6 + 1 / 2 + 0 + 1) / 4)
    assert list(report.by_lang) == ["", "en", "pt"]
    assert report.by_lang["en"].mean_average_precision == pytest.approx((5 / 6 + 1 / 2) / 2)
    assert report.by_lang["pt"].mean_average_precision == 0.0
    assert report.by_lang[""].n_queries == 1
    with pytest.raises(ValueError, match="no query"):
        evaluate_rankings([])


def test_report_serialises_to_json_and_csv(tmp_path):
    report = small_report()
    data = json.loads(report.to_json())
    assert data["k"] == 100
    assert data["overall"]["scope"] == "all"
    assert data["by_lang"]["en"]["n_queries"] == 2
    assert data["queries"][0]["query"] == "river"

    report.write_queries_csv(tmp_path / "queries.csv")
    with open(tmp_path / "queries.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["query"] for row in rows] == ["river", "forest", "rio", "lake"]
    assert float(rows[0]["average_precision"]) == pytest.approx(5 / 6)

    report.write_means_csv(tmp_path / "means.csv")
    with open(tmp_path / "means.csv", newline="", encoding="utf-8") as handle:
        means = list(csv.DictReader(handle))
    assert [(row["scope"], row["lang"]) for row in means] == [("all", ""), ("lang", ""), ("lang", "en"), ("lang", "pt")]
