"""Bad arguments to every command: a clear message, exit code 2, no traceback and nothing written.

Each case names its paths with placeholders filled in per test: {dir} an empty folder, {file} a text file,
{missing} a path that does not exist, {labels} a labels file, {templates} a template file without {c}."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from msearch.cli import app

runner = CliRunner()
TWO_CLASSES = ["--classes", "forest", "--classes", "river"]

CASES = [
    # index
    (["index"], "give the folders or files to index"),
    (["index", "{missing}"], "{missing} does not exist"),
    (["index", "{dir}", "--band-order", "foo"], "'foo' is not a Sentinel-2 band name"),
    (["index", "{dir}", "--model", "nosuch"], "unknown model 'nosuch'"),
    (["index", "{dir}", "--checkpoint", "{file}"], "give exactly one --model with it"),
    (["index", "{dir}", "--model", "tiny-ms-clip", "--checkpoint", "{missing}"], "does not exist"),
    (["index", "{dir}", "--target-recall", "0.9"], "--target-recall applies to --rebuild-ann"),
    (["index", "{dir}", "--batch-size", "0"], "Invalid value for '--batch-size'"),
    (["index", "{dir}", "--max-nodata", "2"], "Invalid value for '--max-nodata'"),
    (["index", "{dir}", "--index", "{file}"], "the index folder {file} is a file"),
    # info
    (["info", "--index", "{missing}"], "no msearch index at {missing}"),
    # query
    (["query"], "give a query TEXT or --like EXAMPLE"),
    (["query", "river", "--like", "1"], "give a query TEXT or --like EXAMPLE"),
    (["query", "river", "--lang", "xx"], "--lang: unsupported language 'xx': use 'auto' or one of en, pt, es"),
    (["query", "--like", "1", "--lang", "en"], "--lang is the language of a query TEXT"),
    (["query", "river", "--html", "{missing}/r.html"], "the folder {missing} does not exist; create it"),
    (["query", "river", "--html", "{dir}"], "--html {dir} is a folder"),
    (["query", "river", "--json", "--csv"], "choose one of --json, --csv, --geojson"),
    (["query", "river", "--band-order", "l2a"], "--band-order tells how to read the file given to --like"),
    (["query", "--like", "{file}", "--band-order", "foo"], "'foo' is not a Sentinel-2 band name"),
    (["query", "river", "--bbox", "1,2,3"], "four numbers"),
    (["query", "river", "--date-to", "tomorrow"], "YYYY-MM-DD"),
    (["query", "river", "--checkpoint", "weights.pt"], "--checkpoint takes SPACE=PATH"),
    (["query", "river", "--checkpoint", "rs-m-clip={missing}"], "{missing} does not exist"),
    (["query", "river", "-k", "0"], "Invalid value for '--top-k'"),
    (["query", "river", "--index", "{missing}"], "no msearch index at {missing}"),
    (["query", "--like", "1", "--route", "rgb"], "--route is how a text query beyond English reaches the index"),
    # eval
    (["eval", "{missing}"], "does not exist"),
    (["eval", "{dir}"], "is a directory"),
    (["eval", "{labels}", "--task", "foo"], "'foo' is not one of 'retrieval', 'classify'"),
    (["eval", "{labels}", "--out", "{missing}/report"], "the folder {missing} does not exist"),
    (["eval", "{labels}", "--templates", "{missing}"], "does not exist"),
    (["eval", "{labels}", "--templates", "{templates}"], "template has no {c} placeholder"),
    (["eval", "{labels}", "--k", "0"], "Invalid value for '--k'"),
    (["eval", "{labels}", "--index", "{missing}"], "no msearch index at {missing}"),
    (["eval", "{labels}", "--save-routes"], "--save-routes stores the comparison that --routes makes"),
    (["eval", "{labels}", "--routes", "--index", "{missing}"], "no msearch index at {missing}"),
    # align
    (["align", "--texts", "{missing}"], "does not exist"),
    (["align", "--index", "{missing}"], "no msearch index at {missing}"),
    # classify
    (["classify", "{missing}", *TWO_CLASSES], "does not exist"),
    (["classify", "{dir}", "--classes-file", "{missing}"], "does not exist"),
    (["classify", "{dir}", "--classes", "forest"], "give at least two classes to choose between"),
    (["classify", "{dir}", *TWO_CLASSES, "--classes", "forest"], "class 'forest' is given twice"),
    (["classify", "{dir}", *TWO_CLASSES, "--band-order", "foo"], "'foo' is not a Sentinel-2 band name"),
    (["classify", "{dir}", *TWO_CLASSES, "--model", "nosuch"], "unknown model 'nosuch'"),
    (["classify", "{dir}", *TWO_CLASSES, "--templates", "{templates}"], "template has no {c} placeholder"),
    (["classify", "{dir}", *TWO_CLASSES, "--model", "tiny-ms-clip"], "found no rasters to classify under {dir}"),
    # models
    (["models", "--download", "nosuch"], "unknown model 'nosuch'"),
    # export
    (["export", "{missing}/tiles.parquet"], "the folder {missing} does not exist; create it (mkdir -p {missing})"),
    (["export", "{dir}"], "export to {dir} is a folder"),
    (["export", "{dir}/tiles.parquet", "--index", "{missing}"], "no msearch index at {missing}"),
    # collection, detect
    (["collection", "add", "c"], "give examples: --positive ID, --negative ID or --from-query TEXT"),
    (["collection", "show", "c", "--index", "{missing}"], "no msearch index at {missing}"),
    (["collection", "list", "--index", "{missing}"], "no msearch index at {missing}"),
    (["detect", "c", "--threshold", "1.5"], "--threshold is a probability between 0 and 1"),
    (["detect", "c", "--json", "--csv"], "choose one of --json, --csv, --geojson"),
    (["detect", "c", "--out", "{dir}/d.shp"], "--out writes FILE.parquet (GeoParquet) or FILE.geojson"),
    (["detect", "c", "--out", "{missing}/d.parquet"], "the folder {missing} does not exist"),
    (["detect", "c", "--suggest", "3", "--top-k", "5"], "--suggest lists the tiles to label next"),
    (["detect", "c", "--index", "{missing}"], "no msearch index at {missing}"),
    # timeline
    (["timeline"], "give a PLACE (a place id, or tile:ID) or --at LON,LAT"),
    (["timeline", "3"], "give a TEXT or --like EXAMPLE (one of them)"),
    (["timeline", "3", "river", "--like", "1"], "give a TEXT or --like EXAMPLE (one of them)"),
    (["timeline", "3", "a", "river"], "too many arguments: 'a river'"),
    (["timeline", "--at", "1,2,3", "river"], "--at takes LON,LAT (two numbers)"),
    (["timeline", "3", "river", "--json", "--csv"], "choose one of --json, --csv"),
    (["timeline", "3", "river", "--plot", "{missing}/t.png"], "the folder {missing} does not exist"),
    (["timeline", "3", "river", "--index", "{missing}"], "no msearch index at {missing}"),
    # change
    (["change", "--any"], "Missing option '--after'"),
    (["change", "--after", "spring", "--any"], "--after must be a date as YYYY-MM-DD"),
    (["change", "--after", "2020-05-01"], "one of --to TEXT, --to-like EXAMPLE or --any"),
    (["change", "--after", "2020-05-01", "--to", "a", "--any"], "one of --to TEXT, --to-like EXAMPLE or --any"),
    (["change", "--after", "2020-05-01", "--from", "a", "--any"], "--from TEXT goes with --to TEXT"),
    (["change", "--after", "2020-05-01", "--any", "--before", "May"], "--before must be a date as YYYY-MM-DD"),
    (["change", "--after", "2020-05-01", "--any", "--bbox", "1,2"], "four numbers"),
    (["change", "--after", "2020-05-01", "--any", "--json", "--csv"], "choose one of --json, --csv, --geojson"),
    (["change", "--after", "2020-05-01", "--any", "--index", "{missing}"], "no msearch index at {missing}"),
    # the group itself
    (["nosuch"], "No such command 'nosuch'"),
]


def plain(output: str) -> str:
    """The output as one line of words: rich wraps long lines and typer draws a box round its errors."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(args) for args, _ in CASES])
def test_bad_arguments_are_a_clear_error_with_exit_2(args, message, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a raster\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\nForest/Forest_1.tif,Forest\n")
    templates = tmp_path / "templates.txt"
    templates.write_text("a satellite photo\n")
    names = {
        "{dir}": str(empty),
        "{file}": str(text_file),
        "{missing}": str(tmp_path / "missing"),
        "{labels}": str(labels),
        "{templates}": str(templates),
    }

    def fill(text: str) -> str:
        for placeholder, value in names.items():
            text = text.replace(placeholder, value)
        return text

    before = sorted(tmp_path.rglob("*"))
    result = runner.invoke(app, [fill(a) for a in args])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert plain(fill(message)) in plain(result.output)
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, not even a temporary file


COMMANDS = [command.name or command.callback.__name__ for command in app.registered_commands]


def test_top_level_help_is_a_users_summary_of_the_main_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    text = plain(result.output)
    assert "Search archives of Sentinel-2 imagery by text, in ten languages." in text
    for line in ("msearch index ./tiles", 'msearch query "flooded farmland"', "msearch eval queries.csv"):
        assert line in text
    assert "typer" not in text  # no developer notes
    assert "<bool>" not in text


@pytest.mark.parametrize("command", COMMANDS)
def test_flags_show_no_value_type_in_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
