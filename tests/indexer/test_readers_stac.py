"""STAC items, item collections and catalogues whose assets are local files (real Major TOM bands)."""

import json

import pytest

from msearch.indexer.readers import discover, read_tile
from msearch.indexer.tiles import ReadSettings

SETTINGS = ReadSettings()
PRODUCT = "S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419"
ASSET_KEYS = {  # Earth Search names assets by common name, the Planetary Computer by band id
    "coastal": "B01",
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "B05": "B05",
    "B06": "B06",
    "B07": "B07",
    "nir": "B08",
    "nir08": "B8A",
    "B09": "B09",
    "swir16": "B11",
    "swir22": "B12",
}


def item_dict(shared_data, item_id: str = PRODUCT, with_offset_metadata: bool = True) -> dict:
    folder = shared_data / "majortom-core-s2l2a" / "0U" / "0U_199R" / PRODUCT
    assets = {}
    for key, band in ASSET_KEYS.items():
        asset = {"href": str(folder / f"{band}.tif"), "type": "image/tiff; application=geotiff", "roles": ["data"]}
        if with_offset_metadata:
            asset["raster:bands"] = [{"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": -0.1}]
        assets[key] = asset
    assets["thumbnail"] = {"href": str(folder / "thumbnail.png"), "type": "image/png", "roles": ["thumbnail"]}
    assets["cloud-mask"] = {"href": str(folder / "cloud_mask.tif"), "type": "image/tiff", "roles": ["cloud"]}
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[15.0, 0.0], [15.1, 0.0], [15.1, 0.1], [15.0, 0.1], [15.0, 0.0]]],
        },
        "bbox": [15.0, 0.0, 15.1, 0.1],
        "properties": {
            "datetime": "2022-07-06T08:56:11.024000Z",
            "eo:cloud_cover": 23.5,
            "s2:mgrs_tile": "33NZA",
            "s2:processing_baseline": "04.00",
            "s2:product_type": "S2MSI2A",
        },
        "links": [],
        "assets": assets,
    }


def test_item_with_local_assets_is_chipped_and_read_with_its_properties(shared_data, tmp_path):
    (tmp_path / "item.json").write_text(json.dumps(item_dict(shared_data)))
    found = discover([tmp_path], SETTINGS)
    assert len(found.sources) == 25 and {s.reader for s in found.sources} == {"stac"}
    assert found.ignored == []
    tile = read_tile(found.sources[0], SETTINGS)
    assert found.sources[0].key == "item.json#0,0,224,224"
    assert set(tile.pixels.bands) == set(ASSET_KEYS.values())
    assert tile.acquired.startswith("2022-07-06T08:56:11") and tile.cloud_cover == pytest.approx(23.5)
    assert tile.mgrs_tile == "33NZA" and tile.processing_baseline == "04.00" and tile.level == "L2A"
    assert tile.pixels.offset == 1000  # raster:bands offset -0.1 at scale 0.0001


def test_offset_from_processing_baseline_when_no_raster_metadata(shared_data, tmp_path):
    (tmp_path / "item.json").write_text(json.dumps(item_dict(shared_data, with_offset_metadata=False)))
    tile = read_tile(discover([tmp_path], SETTINGS).sources[0], SETTINGS)
    assert tile.pixels.offset == 1000


def test_eo_bands_and_mgrs_extension_name_bands_and_tile(shared_data, tmp_path):
    item = item_dict(shared_data)
    item["assets"] = {
        f"asset-{i}": dict(asset, **{"eo:bands": [{"name": band}]})
        for i, (band, asset) in enumerate(zip(ASSET_KEYS.values(), item["assets"].values()))
    }
    del item["properties"]["s2:mgrs_tile"]
    item["properties"].update({"mgrs:utm_zone": 33, "mgrs:latitude_band": "N", "mgrs:grid_square": "ZA"})
    (tmp_path / "item.json").write_text(json.dumps(item))
    tile = read_tile(discover([tmp_path], SETTINGS).sources[0], SETTINGS)
    assert set(tile.pixels.bands) == set(ASSET_KEYS.values()) and tile.mgrs_tile == "33NZA"


def test_item_collection_and_catalogue(shared_data, tmp_path):
    collection = {
        "type": "FeatureCollection",
        "features": [item_dict(shared_data, "first"), item_dict(shared_data, "second")],
    }
    (tmp_path / "items.json").write_text(json.dumps(collection))
    found = discover([tmp_path / "items.json"], SETTINGS)
    assert {s.path for s in found.sources} == {"items.json/first", "items.json/second"}

    catalogue = tmp_path / "catalogue"
    (catalogue / "one").mkdir(parents=True)
    item = item_dict(shared_data, "one")
    item["links"] = [{"rel": "root", "href": "../catalog.json"}, {"rel": "parent", "href": "../catalog.json"}]
    (catalogue / "one" / "one.json").write_text(json.dumps(item))
    (catalogue / "catalog.json").write_text(
        json.dumps(
            {
                "type": "Catalog",
                "stac_version": "1.0.0",
                "id": "sample",
                "description": "local tiles",
                "links": [{"rel": "root", "href": "./catalog.json"}, {"rel": "item", "href": "./one/one.json"}],
            }
        )
    )
    found = discover([catalogue], SETTINGS)
    assert {s.path for s in found.sources} == {"one/one.json"} and found.ignored == []
    assert read_tile(found.sources[0], SETTINGS).mgrs_tile == "33NZA"
