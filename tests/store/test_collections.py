"""Collections of labelled examples on both catalogue backends: create, add, relabel, remove, show, list,
delete; labels follow a tile's identity (root and key) through index runs, a pruned tile's labels are reported
and come back when it is indexed again; and `catalogue copy` carries them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import rasterio
from sqlalchemy import select
from typer.testing import CliRunner

from msearch.cli import app
from msearch.schema import catalog
from msearch.store.collections import (
    CollectionError,
    add_labels,
    create_collection,
    delete_collection,
    example_vectors,
    get_collection,
    list_collections,
    remove_labels,
)
from msearch.store.copy import catalogue_checksum
from msearch.store.index_store import IndexStore
from tests.indexer.helpers import copy_eurosat
from tests.store.test_catalogue import small_index
from tests.store.test_index_store import SPACE

runner = CliRunner()


def flat(output: str) -> str:
    return " ".join(output.split())


def tile_ids_by_key(index, catalogue) -> dict[str, int]:
    store = IndexStore(index, catalogue=catalogue)
    with store.engine.connect() as conn:
        return dict(conn.execute(select(catalog.tiles.c.key, catalog.tiles.c.id)).all())


def test_create_add_relabel_remove_show_list_delete(tmp_path, catalogue):
    store = small_index(tmp_path / "index", catalogue, n=30)
    created = create_collection(store, "farms", SPACE, note="poultry farms", by="ana")
    assert (created.name, created.space, created.note, created.created_by) == ("farms", SPACE, "poultry farms", "ana")
    assert add_labels(store, "farms", positive=[1, 2, 3], negative=[10], by="ana") == {"added": 4, "changed": 0}
    assert add_labels(store, "farms", negative=[3], note="not a farm") == {"added": 0, "changed": 1}
    file_vector = np.zeros(64, np.float32)
    file_vector[0] = 1
    add_labels(store, "farms", files=[("positive", "/data/example.tif", file_vector)])

    collection = get_collection(store, "farms")
    assert collection.counts() == {"positives": 3, "negatives": 2, "missing": 0}
    assert collection.labelled_tiles() == {1: "positive", 2: "positive", 3: "negative", 10: "negative"}
    relabelled = next(item for item in collection.labels if item.tile_id == 3)
    assert (relabelled.root, relabelled.key, relabelled.note) == ("/archive", "t2.tif", "not a farm")
    positives = example_vectors(store, collection, "positive")
    assert positives.shape == (3, 64)
    np.testing.assert_allclose(positives[:2], store.vectors_of(SPACE, [1, 2]))
    np.testing.assert_allclose(positives[2], file_vector, atol=1 / 127)  # the file's embedding, kept

    create_collection(store, "alpha", SPACE)
    assert [(c["name"], c["positives"], c["negatives"]) for c in list_collections(store)] == [
        ("alpha", 0, 0),
        ("farms", 3, 2),
    ]
    assert remove_labels(store, "farms", tile_ids=[1], files=["/data/example.tif"]) == 2
    assert get_collection(store, "farms").counts() == {"positives": 1, "negatives": 2, "missing": 0}
    with pytest.raises(CollectionError, match="not labelled in collection 'farms': 1"):
        remove_labels(store, "farms", tile_ids=[1])
    with pytest.raises(CollectionError, match="no tile with id 999 in this index"):
        add_labels(store, "farms", positive=[999])
    with pytest.raises(CollectionError, match="given as both positive and negative"):
        add_labels(store, "farms", positive=[4], negative=[4])
    with pytest.raises(CollectionError, match="exists already"):
        create_collection(store, "farms", SPACE)
    with pytest.raises(CollectionError, match="no space 'other'"):
        create_collection(store, "x", "other")
    assert delete_collection(store, "farms") == 3
    with pytest.raises(CollectionError, match="no collection named 'farms' in this index \\(it has: alpha\\)"):
        get_collection(store, "farms")
    reopened = IndexStore(tmp_path / "index", catalogue=catalogue)  # a restart keeps them
    assert [c["name"] for c in list_collections(reopened)] == ["alpha"]


def test_labels_follow_the_tile_identity_and_a_removed_tile_is_reported(tmp_path, catalogue):
    store = small_index(tmp_path / "index", catalogue, n=10)
    create_collection(store, "c", SPACE)
    add_labels(store, "c", positive=[4, 5])
    row = dict(store.tiles_by_id([5])[5])
    with store.engine.begin() as conn:  # tile 5 pruned: its row and vectors go
        conn.execute(catalog.vectors.delete().where(catalog.vectors.c.tile_id == 5))
        conn.execute(catalog.tiles.delete().where(catalog.tiles.c.id == 5))
    collection = get_collection(store, "c")
    assert [item.tile_id for item in collection.labels] == [4]
    assert [(item.key, item.tile_id) for item in collection.missing] == [("t4.tif", None)]
    with store.engine.begin() as conn:  # ...and indexed again: a new row of the same root and key
        conn.execute(catalog.tiles.insert().values(dict(row, id=77)))
    again = get_collection(store, "c")
    assert again.labelled_tiles() == {4: "positive", 77: "positive"} and not again.missing


def test_catalogue_copy_carries_the_collections(tmp_path, pg_catalogue):
    store = small_index(tmp_path / "index", None, n=20)
    create_collection(store, "c", SPACE, note="n", by="ana")
    add_labels(store, "c", positive=[1, 2], negative=[3], by="ana")
    source = str(tmp_path / "index" / catalog.CATALOGUE_FILE)
    counts, checksum = catalogue_checksum(source)
    assert counts["collections"] == 1 and counts["collection_labels"] == 3
    result = runner.invoke(app, ["catalogue", "copy", source, pg_catalogue, "--index", str(tmp_path / "index")])
    assert result.exit_code == 0, result.output
    assert catalogue_checksum(pg_catalogue) == (counts, checksum)
    copied = get_collection(IndexStore(tmp_path / "index", catalogue=pg_catalogue), "c")
    assert copied.labelled_tiles() == {1: "positive", 2: "positive", 3: "negative"}
    assert {item.added_by for item in copied.labels} == {"ana"} and copied.note == "n"


def test_labels_survive_index_runs_and_a_pruned_tile_comes_back(shared_data, tmp_path, catalogue):
    archive = tmp_path / "archive"
    files = copy_eurosat(shared_data, archive)  # Forest_1, Forest_10, River_1, River_10
    index = tmp_path / "index"
    where = ["--index", str(index)] + (["--catalogue", catalogue] if catalogue else [])
    model = ["--model", "tiny-ms-clip", "--band-order", "eurosat", "--workers", "0"]

    def cli(*args):
        result = runner.invoke(app, [*map(str, args), *where])
        assert result.exit_code == 0, result.output
        return result

    cli("index", archive, *model)
    ids = tile_ids_by_key(index, catalogue)
    cli("collection", "create", "forest", "--note", "forests")
    outside = shared_data / "eurosat-ms" / "Forest" / "Forest_2.tif"  # not indexed: embedded as an example
    cli(
        "collection", "add", "forest",
        "--positive", ids["Forest/Forest_1.tif"], "--positive", "Forest/Forest_10.tif", "--positive", outside,
        "--negative", ids["River/River_1.tif"], "--band-order", "eurosat",
    )  # fmt: skip
    shown = json.loads(cli("collection", "show", "forest", "--json").stdout)
    assert (shown["positives"], shown["negatives"], shown["missing"]) == (3, 1, 0)
    assert [item["file"] for item in shown["labels"] if item["file"]] == [str(outside.resolve())]

    with rasterio.open(files[0], "r+") as raster:  # Forest_1 changes: re-embedded into the same row
        raster.write(raster.read() // 2 + 1)
    assert "indexed 1" in flat(cli("index", archive, *model).output)
    shown = json.loads(cli("collection", "show", "forest", "--json").stdout)
    assert {item["tile_id"] for item in shown["labels"]} >= {ids["Forest/Forest_1.tif"], ids["Forest/Forest_10.tif"]}

    kept = tmp_path / "kept.tif"
    shutil.move(files[1], kept)  # Forest_10 is removed from the archive and pruned
    cli("index", archive, *model, "--prune")
    result = cli("collection", "show", "forest")
    unwrapped = "".join(result.output.split())  # rich wraps long paths anywhere
    assert "1labelledtilenolongerintheindex" in unwrapped and "Forest/Forest_10.tif" in unwrapped
    shown = json.loads(cli("collection", "show", "forest", "--json").stdout)
    assert (shown["positives"], shown["missing"]) == (2, 1)

    shutil.move(kept, files[1])  # back again: a new row, and the label follows it
    cli("index", archive, *model)
    new_id = tile_ids_by_key(index, catalogue)["Forest/Forest_10.tif"]
    assert new_id != ids["Forest/Forest_10.tif"]
    shown = json.loads(cli("collection", "show", "forest", "--json").stdout)
    assert (shown["positives"], shown["missing"]) == (3, 0) and new_id in {i["tile_id"] for i in shown["labels"]}
    cli("collection", "create", "by-text")
    assert "2 added" in cli("collection", "add", "by-text", "--from-query", "a forest", "--top", "2").output
    listed = json.loads(cli("collection", "list", "--json").stdout)
    assert [(c["name"], c["positives"], c["negatives"]) for c in listed] == [("by-text", 2, 0), ("forest", 3, 1)]
    result = cli("collection", "remove", "forest", outside, "Forest/Forest_1.tif")
    assert "2 removed" in result.output
    assert "deleted collection forest and its 2 labels" in flat(cli("collection", "delete", "forest").output)
