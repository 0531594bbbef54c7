"""Query sets from query files (CSV, JSON Lines) and from labels files, and resolution of relevant entries."""

import json

import pytest

from msearch.models.prompts import eurosat_class_name
from msearch.search.querysets import (
    Query,
    QuerySetError,
    load_query_set,
    query_set_from_labels,
    resolve,
    split_relevant,
)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_query_set(tmp_path):
    path = write(
        tmp_path / "q.csv",
        "\ufeffquery,lang,relevant\n"
        "a river,en,River/River_3.tif; River/River_4.tif;\n"
        "\n"
        "um rio,,River/River_3.tif\n"
        '"forest, dense",de,"Forest/Forest_1.tif;17"\n',
    )
    query_set = load_query_set(path)
    assert query_set.warnings == ()
    assert query_set.queries == (
        Query("a river", "en", ("River/River_3.tif", "River/River_4.tif"), f"{path}:2"),
        Query("um rio", "", ("River/River_3.tif",), f"{path}:4"),
        Query("forest, dense", "de", ("Forest/Forest_1.tif", "17"), f"{path}:5"),
    )


def test_csv_without_lang_column(tmp_path):
    query_set = load_query_set(write(tmp_path / "q.csv", "relevant,query\nx.tif,water\n"))
    assert query_set.queries[0].query == "water"
    assert query_set.queries[0].lang == ""


def test_csv_warnings(tmp_path):
    path = write(
        tmp_path / "q.csv",
        "query,lang,relevant,note\nriver,en,a.tif;a.tif;b.tif,x\nlake,en,,y\nriver,en,c.tif,z\nriver,pt,c.tif,z\n",
    )
    query_set = load_query_set(path)
    assert [(q.query, q.lang, q.relevant) for q in query_set.queries] == [
        ("river", "en", ("a.tif", "b.tif")),
        ("lake", "en", ()),
        ("river", "pt", ("c.tif",)),
    ]
    assert query_set.warnings == (
        f"{path}:1: unknown column(s) ignored: note",
        f"{path}:2: 1 repeated relevant entries dropped",
        f"{path}:3: query 'lake' has no relevant tile (it will score 0)",
        f"{path}:4: query 'river' (lang 'en') repeats {path}:2; dropped",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("query,lang\nriver,en\n", r"q.csv:1: missing column\(s\) relevant"),
        ("query,relevant,query\nriver,a.tif,x\n", r"q.csv:1: repeated column\(s\) query"),
        ("query,lang,relevant\nriver,en,a.tif\nlake,en\n", "q.csv:3: 2 fields where the header has 3"),
        ("query,lang,relevant\n ,en,a.tif\n", "q.csv:2: empty query"),
        ("query,lang,relevant\n", "q.csv: no queries"),
        ("", "q.csv: empty file"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, text, message):
    with pytest.raises(QuerySetError, match=message):
        load_query_set(write(tmp_path / "q.csv", text))


def test_jsonl_query_set(tmp_path):
    lines = [
        {"query": "river", "lang": "en", "relevant": ["River/River_3.tif", " 12 "]},
        {"query": "rio", "relevant": "River/River_3.tif;River/River_4.tif", "comment": "x"},
        {"query": "lake", "lang": None, "relevant": []},
    ]
    path = write(tmp_path / "q.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n\n")
    query_set = load_query_set(path)
    assert [(q.query, q.lang, q.relevant) for q in query_set.queries] == [
        ("river", "en", ("River/River_3.tif", "12")),
        ("rio", "", ("River/River_3.tif", "River/River_4.tif")),
        ("lake", "", ()),
    ]
    assert query_set.warnings == (
        f"{path}:2: unknown key(s) ignored: comment",
        f"{path}:3: query 'lake' has no relevant tile (it will score 0)",
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"query": "river", "relevant": "a.tif"', "q.jsonl:2: not valid JSON"),
        ('["river", "a.tif"]', "q.jsonl:2: expected a JSON object, got list"),
        ('{"query": "river"}', r"q.jsonl:2: missing key\(s\) relevant"),
        ('{"query": "river", "relevant": [1, 2]}', "q.jsonl:2: relevant must be"),
        ('{"query": 5, "relevant": "a.tif"}', "q.jsonl:2: query must be a string"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, line, message):
    path = write(tmp_path / "q.jsonl", '{"query": "lake", "relevant": "l.tif"}\n' + line + "\n")
    with pytest.raises(QuerySetError, match=message):
        load_query_set(path)


def test_unknown_query_file_type(tmp_path):
    with pytest.raises(QuerySetError, match="must end in .csv or .jsonl"):
        load_query_set(write(tmp_path / "q.txt", "query,relevant\n"))


def test_split_relevant():
    assert split_relevant(" a.tif ;b.tif;; ") == ["a.tif", "b.tif"]
    assert split_relevant("") == []


def test_labels_file_multi_label(tmp_path):
    path = write(
        tmp_path / "labels.csv",
        "file,labels,source_repo\np1/,Pastures;Water bodies,r\np2/,Pastures,r\np3/,,r\np1/,Mixed forest,r\n",
    )
    query_set = query_set_from_labels(path, query_for_label=str.lower, lang="en")
    assert [(q.query, q.lang, q.relevant) for q in query_set.queries] == [
        ("pastures", "en", ("p1/", "p2/")),
        ("water bodies", "en", ("p1/",)),
        ("mixed forest", "en", ("p1/",)),
    ]
    assert query_set.queries[0].source == f"{path} (label 'Pastures')"
    assert query_set.warnings == (
        f"{path}:4: file 'p3/' has no label; it is relevant to no query",
        f"{path}:5: file 'p1/' repeats line 2; its labels are added",
    )


def test_labels_that_give_the_same_query_are_merged(tmp_path):
    path = write(tmp_path / "labels.csv", "file,label\na.tif,SeaLake\nb.tif,Sea_Lake\n")
    query_set = query_set_from_labels(path, query_for_label=eurosat_class_name)
    assert [(q.query, q.relevant) for q in query_set.queries] == [("sea lake", ("a.tif", "b.tif"))]
    assert query_set.warnings == (f"{path}:3: labels 'SeaLake' and 'Sea_Lake' both give the query 'sea lake'; merged",)


def test_labels_file_errors(tmp_path):
    with pytest.raises(QuerySetError, match="labels.csv:1: expected one of the columns label / labels"):
        query_set_from_labels(write(tmp_path / "labels.csv", "file,label,labels\na,b,c\n"))
    with pytest.raises(QuerySetError, match="labels.csv:1: no `file` column"):
        query_set_from_labels(write(tmp_path / "labels.csv", "path,label\na,b\n"))
    with pytest.raises(QuerySetError, match="labels.csv:1: no column 'kind'"):
        query_set_from_labels(write(tmp_path / "labels.csv", "file,label\na,b\n"), label_column="kind")
    with pytest.raises(QuerySetError, match="labels.csv:2: empty file entry"):
        query_set_from_labels(write(tmp_path / "labels.csv", "file,label\n ,b\n"))
    with pytest.raises(QuerySetError, match="no labelled files"):
        query_set_from_labels(write(tmp_path / "labels.csv", "file,label\na,\n"))


def test_eurosat_sample_labels(shared_data):
    query_set = query_set_from_labels(shared_data / "eurosat-ms" / "labels.csv", query_for_label=eurosat_class_name)
    assert query_set.warnings == ()
    assert [q.query for q in query_set.queries] == [
        "annual crop",
        "forest",
        "herbaceous vegetation",
        "highway",
        "industrial",
        "pasture",
        "permanent crop",
        "residential",
        "river",
        "sea lake",
    ]
    assert all(20 <= len(q.relevant) <= 21 for q in query_set.queries)
    assert sum(len(q.relevant) for q in query_set.queries) == 202
    river = next(q for q in query_set.queries if q.query == "river")
    assert "River/River_3.tif" in river.relevant
    assert all(path.startswith("River/") for path in river.relevant)


def test_bigearthnet_sample_labels(shared_data):
    path = shared_data / "bigearthnet-s2" / "labels.csv"
    query_set = query_set_from_labels(path)
    pastures = next(q for q in query_set.queries if q.query == "Pastures")
    assert pastures.relevant == ("S2A_MSIL2A_20170617T113321_36_85/", "S2A_MSIL2A_20170617T113321_4_55/")
    # The unlabelled v2 patch is reported, not silently taken as a query or a relevant item.
    assert len(query_set.warnings) == 1 and "v2-unlabelled" in query_set.warnings[0]
    # A label with a comma inside its quoted field stays one label.
    assert any(q.query.startswith("Land principally occupied by agriculture, with") for q in query_set.queries)


def test_terramesh_labels_need_a_named_column(shared_data):
    path = shared_data / "terramesh-examples" / "labels.csv"
    with pytest.raises(QuerySetError, match="name the column"):
        query_set_from_labels(path)
    query_set = query_set_from_labels(path, label_column="labels_lulc_ge5pct")
    assert "water" in [q.query for q in query_set.queries]


def test_resolve_reports_unknown_tiles_and_counts_each_tile_once():
    catalogue = {"River/River_3.tif": 3, "River/River_4.tif": 4, "3": 3}
    resolution = resolve(["River/River_3.tif", "missing.tif", "3", "River/River_4.tif", "gone"], catalogue.get)
    assert resolution.ids == (3, 4)
    assert resolution.unknown == ("missing.tif", "gone")
