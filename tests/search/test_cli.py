"""The query and eval commands driven end to end through the CLI runner on an index of real sample tiles."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from msearch.cli import app

WORKTREE = Path(__file__).resolve().parents[2]

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


def plain(output: str) -> str:
    return " ".join(output.split())  # rich wraps long lines


def test_like_a_file_the_index_never_saw_takes_band_order(eurosat_index, shared_data):
    unseen = shared_data / "eurosat-ms" / "River" / "River_5.tif"  # 13 bands, no descriptions; not indexed
    base = ["query", "--like", str(unseen), "--index", str(eurosat_index), "-k", "3", "--json"]
    result = runner.invoke(app, base)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)  # an error, not a traceback
    assert f"{unseen}:" in plain(result.output) and "--band-order" in result.output
    result = runner.invoke(app, [*base, "--band-order", "eurosat"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["results"]) == 3


def test_like_a_file_catalogued_in_chips_reads_it_with_its_catalogued_band_order(shared_data, tmp_path):
    from msearch.indexer.pipeline import index_archive
    from msearch.indexer.tiles import ReadSettings
    from msearch.schema.bands import BAND_LAYOUTS

    scene = tmp_path / "archive" / "River_5.tif"
    scene.parent.mkdir()
    shutil.copy(shared_data / "eurosat-ms" / "River" / "River_5.tif", scene)
    index = tmp_path / "index"
    settings = ReadSettings(band_order=BAND_LAYOUTS["eurosat"], chip_size=16)
    summary = index_archive([scene.parent], index=index, models=["tiny-ms-clip"], settings=settings, workers=0)
    assert summary.indexed == 16  # 64 x 64 pixels in chips of 16: the file is no tile of its own
    result = runner.invoke(app, ["query", "--like", str(scene), "--index", str(index), "-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["results"]) == 2


def test_queries_in_scripts_no_encoder_learnt_are_refused_unless_lang_is_given(eurosat_index):
    for text, script in (("もり", "Japanese"), ("غابة", "Arabic")):
        result = runner.invoke(app, ["query", text, "--index", str(eurosat_index)])
        assert result.exit_code == 2, result.output
        message = plain(result.output)
        assert f"written in {script}" in message and "pass --lang CODE" in message
        assert "en (English)" in message and "ru (Russian)" in message
    result = runner.invoke(app, ["query", "もり", "--lang", "zh", "--index", str(eurosat_index), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["lang"] == "zh"


def test_html_into_a_missing_folder_fails_before_searching(eurosat_index, tmp_path):
    page = tmp_path / "nodir" / "r.html"
    result = runner.invoke(app, ["query", "river", "--index", str(eurosat_index), "--html", str(page)])
    assert result.exit_code == 2
    assert f"the folder {page.parent} does not exist" in plain(result.output)
    assert "river" not in result.stdout  # no results printed before the error
    assert not page.parent.exists()


def test_eval_of_a_partly_indexed_set_gives_one_summary_line(eurosat_index, shared_data):
    labels = shared_data / "eurosat-ms" / "labels.csv"
    result = runner.invoke(app, ["eval", str(labels), "--index", str(eurosat_index), "--json"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    # 202 labelled tiles, 3 of each of the 10 classes indexed
    assert "172 relevant tiles of 10 of the 10 queries are not in the index" in plain(result.stderr)


def test_an_empty_space_says_so(shared_data, tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    tile = Path(shutil.copy(shared_data / "eurosat-ms" / "Forest" / "Forest_1.tif", archive))
    index = tmp_path / "index"
    args = ["--index", str(index), "--model", "tiny-ms-clip", "--band-order", "eurosat", "--workers", "0"]
    assert runner.invoke(app, ["index", str(archive), *args]).exit_code == 0
    tile.unlink()
    assert runner.invoke(app, ["index", str(archive), *args, "--prune"]).exit_code in (0, 1)
    for command in (
        ["query", "forest", "--index", str(index)],
        ["query", "forest", "--index", str(index), "--max-cloud", "10"],
        ["eval", str(shared_data / "eurosat-ms" / "labels.csv"), "--index", str(index)],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        assert "space 'tiny-ms-clip'" in plain(result.output) and "is empty" in result.output


def test_classify_of_a_folder_without_rasters_exits_2(tmp_path):
    (tmp_path / "notes.txt").write_text("no rasters here")
    result = runner.invoke(app, ["classify", str(tmp_path), "--classes", "a", "--classes", "b", "-m", "tiny-ms-clip"])
    assert result.exit_code == 2
    assert f"found no rasters to classify under {tmp_path}" in plain(result.output)


def test_models_info_and_argument_errors_do_not_import_torch(eurosat_index, tmp_path):
    script = (
        "import sys\n"
        "from msearch.cli import app\n"
        "try:\n"
        "    app(sys.argv[1:], prog_name='msearch')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('heavy:', *sorted(m for m in ('torch', 'open_clip', 'faiss', 'rasterio') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(WORKTREE)}
    runs = {
        "models": (["models"], set()),
        "info": (["info", "--index", str(eurosat_index)], {"faiss"}),  # info reads the FAISS files' kinds
        "band order": (["index", str(tmp_path), "--band-order", "foo"], set()),
        "one class": (["classify", str(tmp_path), "--classes", "forest"], set()),
        "language": (["query", "river", "--lang", "xx"], set()),
    }
    for name, (args, allowed) in runs.items():
        done = subprocess.run(
            [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=120
        )
        heavy = set(done.stdout.rsplit("heavy:", 1)[1].split())
        assert heavy <= allowed, f"{name}: imported {heavy - allowed}"


def test_eval_reports_progress_after_each_query(eurosat_index, shared_data):
    from msearch.search.evaluate import evaluate_retrieval
    from msearch.search.searcher import Searcher

    calls = []
    evaluate_retrieval(
        Searcher(eurosat_index),
        shared_data / "eurosat-ms" / "labels.csv",
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(n, 10) for n in range(0, 11)]
