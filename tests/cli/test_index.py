"""`msearch index` and `msearch info` through the command line (typer's CliRunner), with the tiny models."""

from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from msearch.cli import app
from tests import tiny_models
from tests.indexer.helpers import (
    copy_eurosat,
    make_bad_archive,
    problems_by_key,
    tiles_by_key,
    vector_seqs,
    vectors_by_key,
)

runner = CliRunner()
MODEL_ARGS = ["--model", "tiny-ms-clip", "--model", "rs-m-clip", "--band-order", "eurosat", "--workers", "0"]


@pytest.fixture
def eurosat4(shared_data, tmp_path):
    src = tmp_path / "eurosat"
    copy_eurosat(shared_data, src)
    return src


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_index_then_info_json(eurosat4, tmp_path):
    index = tmp_path / "index"
    result = cli("index", eurosat4, "--index", index, *MODEL_ARGS, "--batch-size", 3)
    assert result.exit_code == 0, result.output
    assert "indexed 4, unchanged 0, skipped 0, failed 0" in result.output

    result = cli("info", "--index", index, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tiles"] == 4
    spaces = {s["space"]: s for s in report["spaces"]}
    assert set(spaces) == {"tiny-ms-clip", "rs-m-clip"}
    assert (spaces["tiny-ms-clip"]["dim"], spaces["rs-m-clip"]["dim"]) == (64, 512)
    assert all(s["vectors"] == 4 and s["faiss_file"] for s in spaces.values())
    assert spaces["tiny-ms-clip"]["identity"].startswith("tiny-ms-clip@sha256:")
    assert report["last_run"]["status"] == "finished"
    assert report["last_run"]["summary"]["indexed"] == 4
    assert report["problem_counts"] == {}
    assert all(s["text_tower"] == "numpy" for s in spaces.values())  # indexing exported both text towers

    again = cli("index", eurosat4, "--index", index, *MODEL_ARGS)
    assert again.exit_code == 0, again.output
    assert "indexed 0, unchanged 4" in again.output


def test_info_says_when_queries_would_load_torch(eurosat4, tmp_path, monkeypatch):
    index = tmp_path / "index"
    assert cli("index", eurosat4, "--index", index, *MODEL_ARGS).exit_code == 0
    monkeypatch.setenv("MSEARCH_CACHE", str(tmp_path / "another-machines-cache"))  # no export there
    report = json.loads(cli("info", "--index", index, "--json").stdout)
    assert [s["text_tower"] for s in report["spaces"]] == ["torch", "torch"]
    table = " ".join(cli("info", "--index", index).output.split())
    assert (
        "tiny-ms-clip: its text tower is not exported to numpy on this machine, so the next query loads torch" in table
    )


def test_another_encoder_into_an_existing_space_is_refused(shared_data, eurosat4, tmp_path):
    index = tmp_path / "index"
    assert cli("index", eurosat4, "--index", index, *MODEL_ARGS).exit_code == 0
    seqs = vector_seqs(index)
    other = tmp_path / "other-weights.pt"  # same card and architecture, other weights
    torch.save(
        tiny_models.msclip_release_state_dict(tiny_models.build_msclip(tiny_models.TINY_MSCLIP_CFG, seed=1)), other
    )

    def assert_refused() -> None:
        result = cli(
            "index",
            eurosat4,
            "--index",
            index,
            "--model",
            "tiny-ms-clip",
            "--checkpoint",
            other,
            "--band-order",
            "eurosat",
            "--workers",
            "0",
        )
        assert result.exit_code == 2, result.output
        message = " ".join(result.stderr.split())
        assert "error:" in message and "space 'tiny-ms-clip'" in message
        assert "Vectors of different encoders cannot share an index" in message
        assert vector_seqs(index) == seqs  # nothing written

    assert_refused()  # the unchanged archive: nothing to embed, so no model is loaded
    copy_eurosat(shared_data, eurosat4, classes=("Pasture",), per_class=1)
    assert_refused()  # a new tile: something to embed
    assert "Pasture/Pasture_1.tif" not in tiles_by_key(index)


def test_checkpoint_names_one_model(eurosat4, tmp_path):
    index, weights = tmp_path / "index", tmp_path / "w.pt"
    weights.write_bytes(b"weights")  # it exists: what is wrong is two models for one file
    result = cli("index", eurosat4, "--index", index, *MODEL_ARGS, "--checkpoint", weights)
    assert result.exit_code == 2
    assert "give exactly one --model" in " ".join(result.stderr.split())
    assert not index.exists()


def test_bad_files_exit_codes(shared_data, tmp_path):
    src, index = tmp_path / "src", tmp_path / "index"
    make_bad_archive(shared_data, src)

    result = cli("index", src, "--index", index, *MODEL_ARGS)
    assert result.exit_code == 0, result.output
    assert "indexed 2, unchanged 0, skipped 1, failed 4" in result.output
    assert "1 file is not a raster of a known layout, ignored: " in result.output
    assert len(problems_by_key(index)) == 5 and len(tiles_by_key(index)) == 2

    strict = cli("index", src, "--index", index, *MODEL_ARGS, "--strict")
    assert strict.exit_code == 1, strict.output
    assert "indexed 0, unchanged 2, skipped 1, failed 4" in strict.output

    info = cli("info", "--index", index, "--json", "--problems")
    report = json.loads(info.stdout)
    assert report["problem_counts"] == {"error": 4, "skipped": 1}
    assert {p["key"] for p in report["problems"]} == set(problems_by_key(index))


def test_nothing_indexable_exits_1(shared_data, tmp_path):
    src, index = tmp_path / "src", tmp_path / "index"
    make_bad_archive(shared_data, src)
    for path in (src / "Forest").glob("*.tif"):
        path.unlink()
    result = cli("index", src, "--index", index, *MODEL_ARGS)
    assert result.exit_code == 1, result.output
    assert re.search(r"indexed 0, unchanged 0, skipped 1, failed 4", result.output)
    assert tiles_by_key(index) == {} and vectors_by_key(index, "tiny-ms-clip") == {}


def test_missing_folder_is_a_clear_error(tmp_path):
    result = cli("index", tmp_path / "nope", "--index", tmp_path / "index", *MODEL_ARGS)
    assert result.exit_code == 2
    assert "nope does not exist" in " ".join(result.stderr.split())


def test_rebuild_ann_retrains_with_the_target_recall_and_info_shows_it(shared_data, tmp_path, caplog):
    from msearch.store.index_store import IndexStore

    src, index = tmp_path / "src", tmp_path / "index"
    copy_eurosat(shared_data, src, classes=("Forest", "River", "SeaLake"), per_class=3)
    assert cli("index", src, "--index", index, *MODEL_ARGS).exit_code == 0
    store = IndexStore(index)
    view = store.open_space("tiny-ms-clip")
    store.rebuild_ann(view, exact_threshold=4)  # this index: inverted files from 4 vectors on
    store.save_space(view)
    assert store.manifest("tiny-ms-clip").index["kind"] == "ivf-flat"

    result = cli("index", "--rebuild-ann", "--index", index, "--model", "tiny-ms-clip", "--target-recall", 0.99)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "tiny-ms-clip: 9 vectors, searched with ivf-flat (nlist 1, nprobe 1; recall@100 1.000" in output
    report = json.loads(cli("info", "--index", index, "--json").stdout)
    spaces = {s["space"]: s for s in report["spaces"]}
    assert spaces["tiny-ms-clip"]["index"]["target_recall"] == 0.99
    assert spaces["tiny-ms-clip"]["index"]["trained_on"] == 9
    assert spaces["tiny-ms-clip"]["search"].startswith("ivf-flat")
    assert spaces["rs-m-clip"]["search"] == "exact search"  # --model chose one space
    assert spaces["tiny-ms-clip"]["retrain_advised"] is False

    # Its FAISS file lost: --rebuild-ann builds it once (the space is opened empty, not built on opening too).
    (store.space_dir("tiny-ms-clip") / store.manifest("tiny-ms-clip").faiss_file).unlink()
    with caplog.at_level("WARNING", logger="msearch.store.index_store"):
        again = cli("index", "--rebuild-ann", "--index", index, "--model", "tiny-ms-clip")
    assert again.exit_code == 0, again.output
    assert "tiny-ms-clip: 9 vectors, searched with ivf-flat" in " ".join(again.output.split())
    assert "no usable FAISS file" not in caplog.text
    assert (store.space_dir("tiny-ms-clip") / store.manifest("tiny-ms-clip").faiss_file).exists()
    table = " ".join(cli("info", "--index", index).output.split())
    assert re.search(
        r"last run #1 \(finished\), started \S+: indexed 9, unchanged 0, skipped 0, failed 0, "
        r"removed 0 in \d+\.\d s",
        table,
    )
    assert "ivf-flat" in table and "exact search" in table


def test_index_without_paths_or_rebuild_is_an_error(tmp_path):
    result = cli("index", "--index", tmp_path / "index")
    assert result.exit_code == 2
    assert "give the folders or files to index" in result.output
