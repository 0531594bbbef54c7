"""Discovery over a folder mixing layouts: each file goes to one reader, sidecars are not reported."""

import json
import pickle
import shutil

import rasterio

from msearch.indexer.readers import READERS, discover
from msearch.indexer.tiles import ReadSettings
from tests.indexer.safe_products import build_safe
from tests.indexer.test_readers_stac import item_dict

SETTINGS = ReadSettings()


def test_readers_are_ordered_most_specific_first():
    assert [reader.name for reader in READERS] == ["safe", "stac", "per-band", "geotiff"]


def test_mixed_folder_is_split_between_readers_with_no_file_read_twice(shared_data, tmp_path):
    shutil.copytree(shared_data / "bigearthnet-s2" / "S2A_MSIL2A_20170613T101031_87_48", tmp_path / "ben" / "patch")
    shutil.copytree(shared_data / "ssl4eo-s12" / "s2a", tmp_path / "ssl4eo")
    shutil.copy(shared_data / "terramesh-examples" / "S2L2A" / "637U_59R_1_3.tif", tmp_path / "terramesh.tif")
    (tmp_path / "stac").mkdir()
    (tmp_path / "stac" / "item.json").write_text(json.dumps(item_dict(shared_data)))
    (tmp_path / "notes.txt").write_text("not imagery")
    with rasterio.Env() as env:
        has_jp2 = "JP2OpenJPEG" in env.drivers()
    if has_jp2:
        build_safe(shared_data, tmp_path / "safe", "L2A")

    found = discover([tmp_path], SETTINGS)
    readers_by_scene = {}
    files_by_scene = {}
    for source in found.sources:
        readers_by_scene[source.path] = source.reader
        files_by_scene.setdefault(source.path, set(source.files))
    assert readers_by_scene["ben/patch"] == "per-band"
    assert readers_by_scene["terramesh.tif"] == "geotiff"
    assert readers_by_scene["stac/item.json"] == "stac"
    assert sum(1 for scene in readers_by_scene if scene.startswith("ssl4eo/")) == 2
    if has_jp2:
        assert [reader for scene, reader in readers_by_scene.items() if scene.startswith("safe/")] == ["safe"]
    # every file belongs to one scene only
    all_files = [f for files in files_by_scene.values() for f in files if tmp_path in f.parents]
    assert len(all_files) == len(set(all_files))
    # json and png sidecars are claimed; only the unrelated text file is reported
    assert [p.name for p in found.ignored] == ["notes.txt"]
    # sources travel to worker processes
    for source in found.sources:
        assert pickle.loads(pickle.dumps(source)) == source
