"""`msearch index` over an odd folder, as a careless first user has one: the same file reached through two
roots and through symbolic links, a symlinked folder, an empty folder, JPEGs, text, `.npy` arrays, a 1-band
class map, an 8-bit RGB file and unicode names. Every tile is catalogued once, every problem is named by its
path, and the exit codes and messages say what happened."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from msearch.cli import app
from tests.indexer.helpers import assert_view_matches_catalogue, problems_by_key, tiles_by_key

runner = CliRunner()
MODEL_ARGS = ["--model", "tiny-ms-clip", "--model", "rs-m-clip", "--band-order", "eurosat", "--workers", "0"]


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


def table_row(text: str) -> tuple[str, str]:
    """The (tile, reason) of a one-row problem table, each cell whole: rich folds a long path over lines
    and wraps the reason at spaces."""
    lines = [[p.strip() for p in line.strip("│").split("│")] for line in text.splitlines() if line.startswith("│")]
    return "".join(line[0] for line in lines), " ".join(line[1] for line in lines if line[1])


@pytest.fixture
def odd(shared_data, tmp_path) -> Path:
    """tmp/archive/tiles: the folder indexed; tmp/archive/elsewhere: reached only through a symlinked folder."""
    eurosat, terramesh = shared_data / "eurosat-ms", shared_data / "terramesh-examples"
    tiles, elsewhere = tmp_path / "archive" / "tiles", tmp_path / "archive" / "elsewhere"
    for folder in ("Forest", "Ünïcode rivers ✓", "rgb", "lulc", "photos", "empty", "arrays"):
        (tiles / folder).mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy2(sorted((eurosat / "Forest").glob("*.tif"))[0], tiles / "Forest" / "Forest_1.tif")
    shutil.copy2(sorted((eurosat / "River").glob("*.tif"))[0], tiles / "Ünïcode rivers ✓" / "Rivière_1.tif")
    shutil.copy2(sorted((eurosat / "Pasture").glob("*.tif"))[0], elsewhere / "Pasture_1.tif")
    shutil.copy2(terramesh / "S2RGB" / "282D_485L_3_3.tif", tiles / "rgb" / "282D_485L_3_3.tif")
    shutil.copy2(terramesh / "LULC" / "282D_485L_3_3.tif", tiles / "lulc" / "282D_485L_3_3.tif")
    (tiles / "photos" / "holiday.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    (tiles / "photos" / "notes.txt").write_text("not imagery\n")
    np.save(tiles / "arrays" / "patch.npy", np.zeros((13, 8, 8), np.int16))
    (tiles / "linked").symlink_to(elsewhere, target_is_directory=True)  # a symlinked folder: followed
    (tiles / "Forest again").symlink_to(tiles / "Forest", target_is_directory=True)  # the same files twice
    (tiles / "Forest" / "up").symlink_to(tiles, target_is_directory=True)  # a loop
    (tiles / "rgb" / "same.tif").symlink_to(tiles / "Forest" / "Forest_1.tif")  # a symlinked file: one tile
    return tiles


def test_odd_folder_every_tile_once_every_problem_named(odd, tmp_path):
    index = tmp_path / "index"
    result = cli("index", odd, "--index", index, *MODEL_ARGS)
    out = flat(result.output)
    assert result.exit_code == 0, result.output
    assert "indexed 4, unchanged 0, skipped 1, failed 0" in out

    tiles = tiles_by_key(index)
    assert sorted(tiles) == [
        "Forest/Forest_1.tif",  # not again through 'Forest again/', 'Forest/up/Forest/' or 'rgb/same.tif'
        "linked/Pasture_1.tif",  # a folder outside the tree, through the link inside it
        "rgb/282D_485L_3_3.tif",
        "Ünïcode rivers ✓/Rivière_1.tif",
    ]
    # Each tile once in each space it can feed: the RGB file in the RGB space only.
    assert_view_matches_catalogue(index, "tiny-ms-clip")
    assert_view_matches_catalogue(index, "rs-m-clip")
    assert "1 tile lacks the bands tiny-ms-clip needs (RGB-only files): indexed into rs-m-clip only" in out
    # 'Forest again/' and 'Forest/up/' lead to folders already walked, which are not walked again; the
    # symlinked file is found, and counted as the same tile.
    assert "1 tile reached a second time (through another path or a symbolic link): indexed once" in out

    # The class map is not imagery, named by its path; the JPEG, the text and the array are named as ignored.
    assert problems_by_key(index) == {
        "lulc/282D_485L_3_3.tif": ("skipped", "not imagery: 1 band (a class map or mask?)")
    }
    assert table_row(result.output) == (
        str(odd / "lulc" / "282D_485L_3_3.tif"),
        "not imagery: 1 band (a class map or mask?)",
    )
    assert "3 files are not rasters of a known layout, ignored:" in out
    for name in ("arrays/patch.npy", "photos/holiday.jpg", "photos/notes.txt"):
        assert str(odd / name) in "".join(result.output.split())  # named by path (wrapped at any character)
    assert "NotGeoreferencedWarning" not in result.output and "Traceback" not in result.output

    # The same file through another root: one tile, found unchanged under the catalogued row.
    again = cli("index", odd / "Forest", odd / "Forest again", odd, "--index", index, *MODEL_ARGS)
    assert again.exit_code == 0, again.output
    assert "indexed 0, unchanged 4, skipped 1, failed 0" in flat(again.output)
    assert tiles_by_key(index) == tiles

    # The RGB file as an example: the RGB space finds it, the multispectral space says why it cannot.
    rgb = odd / "rgb" / "282D_485L_3_3.tif"
    like = cli("query", "--like", rgb, "--index", index, "--space", "rs-m-clip", "--csv")
    assert like.exit_code == 0, like.output
    found = [line.split(",")[2] for line in like.stdout.splitlines()[1:]]
    assert sorted(found) == sorted(key for key in tiles if key != "rgb/282D_485L_3_3.tif")  # all but itself
    refused = cli("query", "--like", rgb, "--index", index, "--space", "tiny-ms-clip")
    assert refused.exit_code == 2
    message = flat(refused.stderr)
    assert "cannot be searched in space 'tiny-ms-clip': it was indexed without a vector there" in message
    assert "search another space with --space rs-m-clip" in message
    never_indexed = Path(shutil.copy2(rgb, tmp_path / "elsewhere_rgb.tif"))
    refused = cli("query", "--like", never_indexed, "--index", index, "--space", "tiny-ms-clip")
    assert refused.exit_code == 2
    assert "cannot be searched in space 'tiny-ms-clip': missing bands B05" in flat(refused.stderr)


def test_nothing_to_index_is_an_error_that_says_what_was_there(odd, tmp_path):
    index = tmp_path / "index"
    for folder, there in (("empty", "The folder holds no files"), ("photos", "2 files there: holiday.jpg, notes.txt")):
        result = cli("index", odd / folder, "--index", index, *MODEL_ARGS)
        assert result.exit_code == 1, result.output
        message = "".join(result.stderr.split())  # wrapped at any character
        assert "".join(f"found no rasters under {odd / folder}; layouts read: SAFE products".split()) in message
        assert "multibandGeoTIFFs" in message and "".join(there.split()) in message
        assert "indexing" not in result.output  # no progress bar was drawn
        assert not index.exists()  # nothing half-written

    missing = cli("index", tmp_path / "nonexistent", "--index", index, *MODEL_ARGS)
    assert missing.exit_code == 2
    assert f"{tmp_path / 'nonexistent'}doesnotexist" in "".join(missing.stderr.split())
    assert "indexing" not in missing.output and not index.exists()


def test_an_empty_space_says_so_when_queried(odd, tmp_path):
    """Only the RGB file: the multispectral space exists but holds nothing."""
    index = tmp_path / "index"
    result = cli("index", odd / "rgb" / "282D_485L_3_3.tif", "--index", index, *MODEL_ARGS)
    assert result.exit_code == 0, result.output
    query = cli("query", "forest", "--index", index, "--space", "tiny-ms-clip", "--lang", "en")
    assert query.exit_code == 2
    assert "space 'tiny-ms-clip' of the index at" in flat(query.stderr)
    assert "is empty: no tile has been indexed into it" in flat(query.stderr)


def test_duplicates_of_an_old_index_are_repaired(odd, tmp_path):
    """An index written before tiles were identified by their resolved file holds the same file twice (under
    two roots): the next run keeps one row and its vectors, drops the other, and the FAISS views follow."""
    from sqlalchemy import insert, select

    from msearch.schema import catalog
    from msearch.store.index_store import IndexStore

    index = tmp_path / "index"
    (odd / "Forest" / "up").unlink()  # followed from Forest, the link up would bring in the whole tree
    assert cli("index", odd / "Forest", "--index", index, *MODEL_ARGS).exit_code == 0
    # What the old code wrote for `msearch index odd` afterwards: a second row (and vectors) for the file.
    store = IndexStore(index)
    with store.engine.begin() as conn:
        row = dict(conn.execute(select(catalog.tiles)).mappings().one())
        first_id = row.pop("id")
        row.update(root=str(odd.resolve()), key="Forest/Forest_1.tif", path="Forest/Forest_1.tif")
        copy_id = conn.execute(insert(catalog.tiles).values(row)).inserted_primary_key[0]
        for vector in conn.execute(select(catalog.vectors).where(catalog.vectors.c.tile_id == first_id)).mappings():
            conn.execute(
                insert(catalog.vectors).values(tile_id=copy_id, space=vector["space"], vector=vector["vector"])
            )
    assert len(tiles_by_key(index)) == 2

    result = cli("index", odd / "Forest", "--index", index, *MODEL_ARGS)
    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert "indexed 0, unchanged 1" in out
    assert "1 duplicate catalogue row of the same file under another path: dropped" in out
    assert [row["id"] for row in tiles_by_key(index).values()] == [first_id]
    for space in ("tiny-ms-clip", "rs-m-clip"):
        assert_view_matches_catalogue(index, space)
