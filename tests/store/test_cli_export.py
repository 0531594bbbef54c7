"""`msearch export` end to end: index real tiles with the tiny encoders, export, read the file back (with the
catalogue in SQLite and in PostgreSQL)."""

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from msearch.cli import app

runner = CliRunner()


def test_export_command(shared_data, tmp_path, catalogue):
    index = tmp_path / "index"
    catalogue_args = ["--catalogue", catalogue] if catalogue else []
    result = runner.invoke(
        app,
        [
            "index",
            str(shared_data / "terramesh-examples" / "S2L2A"),
            "--index",
            str(index),
            "--model",
            "tiny-ms-clip",
            "--model",
            "rs-m-clip",
            "--band-order",
            "l2a",
            "--workers",
            "0",
            *catalogue_args,
        ],
    )
    assert result.exit_code == 0, result.output

    out = tmp_path / "tiles.parquet"
    result = runner.invoke(app, ["export", str(out), "--index", str(index), "--space", "rs-m-clip", *catalogue_args])
    assert result.exit_code == 0, result.output
    assert f"wrote 5 rows to {out}" in result.output.replace("\n", "")
    table = pq.read_table(out)
    assert table.num_rows == 5
    assert json.loads(table.schema.metadata[b"geo"])["primary_column"] == "geometry"
    assert [n for n in table.column_names if n.startswith("embedding_")] == ["embedding_rs-m-clip"]


def test_export_command_without_an_index(tmp_path):
    result = runner.invoke(app, ["export", str(tmp_path / "x.parquet"), "--index", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "no msearch index" in result.output


def test_export_into_a_missing_folder_names_the_folder_not_a_temporary_file(tmp_path):
    from msearch.store.export import export_geoparquet

    out = tmp_path / "nodir" / "tiles.parquet"
    with pytest.raises(FileNotFoundError) as error:
        export_geoparquet(tmp_path / "index", out)
    message = str(error.value)
    assert f"the folder {out.parent} does not exist; create it first (mkdir -p {out.parent})" in message
    assert ".tmp" not in message
    result = runner.invoke(app, ["export", str(out), "--index", str(tmp_path / "index")])
    assert result.exit_code == 2 and ".tmp" not in result.output
    assert not out.parent.exists()
