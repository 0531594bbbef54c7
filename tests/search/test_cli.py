"""The query and eval commands driven end to end through the CLI runner on an index of real sample tiles."""

import csv
import io
import json

from typer.testing import CliRunner

from msearch.cli import app

runner = CliRunner()


def test_query_json_csv_geojson_and_html(eurosat_index, tmp_path):
    base = ["query", "a river", "--index", str(eurosat_index), "-k", "4"]
    data = json.loads(runner.invoke(app, base + ["--json"]).stdout)
    assert data["lang"] == "en" and len(data["results"]) == 4
    assert {"rank", "score", "path", "lat", "lon", "tile_id", "footprint"} <= set(data["results"][0])
    rows = list(csv.DictReader(io.StringIO(runner.invoke(app, base + ["--csv"]).stdout)))
    assert [r["path"] for r in rows] == [r["path"] for r in data["results"]]
    geo = json.loads(runner.invoke(app, base + ["--geojson"]).stdout)
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == 4
    ring = geo["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and -180 <= ring[0][0] <= 180
    page = tmp_path / "results.html"
    result = runner.invoke(app, base + ["--html", str(page)])
    assert result.exit_code == 0
    assert page.read_text().count("data:image/png;base64,") == 4


def test_query_errors_exit_2_with_a_message(eurosat_index):
    result = runner.invoke(app, ["query", "x", "--index", str(eurosat_index), "--bbox", "1,2,3"])
    assert result.exit_code == 2 and "four numbers" in result.output
    result = runner.invoke(app, ["query", "x", "--index", str(eurosat_index), "--date-from", "yesterday"])
    assert result.exit_code == 2 and "YYYY-MM-DD" in result.output
    result = runner.invoke(app, ["query", "x", "--index", str(eurosat_index / "missing")])
    assert result.exit_code == 2 and "no msearch index" in result.output


def test_eval_on_labels_gives_a_row_per_class_and_saves_json_and_csv(eurosat_index, shared_data, tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "eval",
            str(shared_data / "eurosat-ms" / "labels.csv"),
            "--index",
            str(eurosat_index),
            "--json",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".json").read_text())
    assert sorted(q["query"] for q in report["queries"]) == sorted(
        f"{c} [en]"
        for c in [
            "annualcrop",
            "forest",
            "herbaceousvegetation",
            "highway",
            "industrial",
            "pasture",
            "permanentcrop",
            "residential",
            "river",
            "sealake",
        ]
    )
    assert all(q["n_relevant"] == 3 for q in report["queries"])  # unknown sample tiles are warned about, not counted
    assert report["index_recall_at_k"]["mean"] == 1.0  # the flat index is exact
    assert len(list(csv.DictReader(open(out.with_suffix(".csv"))))) == 10


def test_eval_classify_reports_accuracy(eurosat_index, shared_data):
    result = runner.invoke(
        app,
        [
            "eval",
            str(shared_data / "eurosat-ms" / "labels.csv"),
            "--index",
            str(eurosat_index),
            "--task",
            "classify",
            "--json",
        ],
    )
    data = json.loads(result.stdout)
    assert data["tiles"] == 30 and 0.0 <= data["accuracy"] <= 1.0 and len(data["per_class_recall"]) == 10


def test_classify_probabilities_sum_to_one(shared_data):
    result = runner.invoke(
        app,
        [
            "classify",
            str(shared_data / "terramesh-examples" / "S2L2A"),
            "--model",
            "tiny-ms-clip",
            "--classes",
            "ocean",
            "--classes",
            "agriculture",
            "--classes",
            "snow",
            "--csv",
        ],
    )
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 5
    for row in rows:
        assert abs(sum(float(row[c]) for c in ("ocean", "agriculture", "snow")) - 1.0) < 1e-5
