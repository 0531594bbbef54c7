"""The shipped EuroSAT query set: it parses cleanly, covers 10 classes x 10 languages, and names real files."""

import csv
from collections import Counter

from msearch.search.querysets import EUROSAT_SAMPLE_QUERIES, load_query_set

LANGS = {"en", "pt", "es", "fr", "de", "nl", "it", "zh", "ko", "ru"}
CLASSES = {
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
}


def query_class(relevant: tuple[str, ...]) -> str:
    """The one class folder all of a query's relevant files sit in."""
    folders = {path.split("/")[0] for path in relevant}
    assert len(folders) == 1, f"relevant files from several classes: {sorted(folders)}"
    return folders.pop()


def test_shipped_query_set_parses_and_covers_every_class_and_language():
    query_set = load_query_set(EUROSAT_SAMPLE_QUERIES)
    assert query_set.warnings == ()  # no duplicate query in a language, no empty relevance list
    coverage = Counter((query.lang, query_class(query.relevant)) for query in query_set.queries)
    assert set(coverage) == {(lang, name) for lang in LANGS for name in CLASSES}
    assert set(coverage.values()) == {2}
    for query in query_set.queries:
        name = query_class(query.relevant)
        assert all(path.startswith(f"{name}/{name}_") and path.endswith(".tif") for path in query.relevant)


def test_shipped_relevant_files_are_exactly_the_sample_classes(shared_data):
    with open(shared_data / "eurosat-ms" / "labels.csv", newline="", encoding="utf-8") as handle:
        labels = list(csv.DictReader(handle))
    files_of_class: dict[str, set[str]] = {}
    for row in labels:
        files_of_class.setdefault(row["label"], set()).add(row["file"])
    for query in load_query_set(EUROSAT_SAMPLE_QUERIES).queries:
        assert set(query.relevant) == files_of_class[query_class(query.relevant)], query.query
