"""Remote archives: STAC API searches and COGs read in place over HTTP (a loopback server that honours range
requests), S3 (moto's server) and GCS (the same loopback server behind /vsigs/), compared with indexing the same files locally; ranged reads, retries,
failures recorded with their URL and HTTP status, credentials kept out of logs and the catalogue, and re-runs
that fetch no pixels."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pystac
import pytest
from typer.testing import CliRunner

import msearch.indexer.stac_search as stac_search
from msearch.cli import app
from msearch.indexer.pipeline import index_archive
from msearch.indexer.readers import STAC_READER, ArchivePixels, discover, discover_urls, read_tile
from msearch.indexer.readers.remote import redact
from msearch.indexer.readers.stac import item_assets
from msearch.indexer.stac_search import StacSearch, parse_bbox, search_sources
from msearch.indexer.tiles import ReadSettings
from msearch.schema.bands import asset_band
from tests.indexer.helpers import problems_by_key, tiles_by_key, vectors_by_key
from tests.indexer.remote_servers import BANDS_10M, BANDS_20M, RangeServer, S3Server, stac_item, write_cogs

SPACE = "tiny-ms-clip"
COLLECTION = "sentinel-2-l2a"
UPDATED = "2024-03-01T10:00:00Z"
runner = CliRunner()


@pytest.fixture(scope="module")
def cogs(shared_data, tmp_path_factory) -> dict[str, Path]:
    """512 px COGs of the Major TOM scene (four 224 px chips, the last row and column widened to 288)."""
    return write_cogs(shared_data, tmp_path_factory.mktemp("cogs512"))


@pytest.fixture(scope="module")
def small_cogs(shared_data, tmp_path_factory) -> dict[str, Path]:
    """224 px COGs: one tile, for items that are meant to fail (each fails once, not once per chip)."""
    return write_cogs(shared_data, tmp_path_factory.mktemp("cogs224"), size=224)


@pytest.fixture(scope="module")
def local_index(cogs, tmp_path_factory, tiny_msclip) -> Path:
    """The same COGs indexed locally, through a STAC item with relative hrefs beside them."""
    folder = tmp_path_factory.mktemp("local")
    for path in cogs.values():
        shutil.copy2(path, folder / path.name)
    item = stac_item("S2B_48QUD_20200115_0_L2A", {b: f"./{b}.tif" for b in cogs}, None, updated=UPDATED)
    (folder / "item.json").write_text(json.dumps(item))
    index = tmp_path_factory.mktemp("local-index")
    summary = index_archive([folder], index=index, encoders={SPACE: tiny_msclip})
    assert summary.indexed == 4 and not summary.failed
    return index


@pytest.fixture
def server():
    with RangeServer() as running:
        yield running


@pytest.fixture
def quick_gdal(monkeypatch):
    """Short timeouts and retry delays, so that failing reads end in seconds."""
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "2")
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.1")
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "1")


def serve_item(server: RangeServer, cogs: dict[str, Path], item_id: str, prefix: str, **properties) -> dict:
    """The COGs under /<prefix>/ and an item of them (absolute hrefs) among the /search results."""
    hrefs = {band: server.add_file(f"/{prefix}/{band}.tif", path) for band, path in cogs.items()}
    side = _side(cogs)
    item = stac_item(item_id, hrefs, (side, side), **properties)
    server.items.append(item)
    return item


def _side(cogs) -> int:
    import rasterio

    with rasterio.open(cogs["B02"]) as raster:
        return raster.width


def by_window(index: Path) -> dict[str, dict]:
    return {row["window"]: row for row in tiles_by_key(index).values()}


def vectors_by_window(index: Path) -> dict[str, np.ndarray]:
    tiles = tiles_by_key(index)
    return {tiles[key]["window"]: vector for key, vector in vectors_by_key(index, SPACE).items()}


def search(server: RangeServer, **options) -> StacSearch:
    return StacSearch(
        server.url, COLLECTION, bbox=(101.5, 14.5, 103.5, 16.5), datetime="2020-01-01/2020-02-01", **options
    )


# -- a STAC API search over HTTP ------------------------------------------------------------------------------


def test_search_indexes_what_local_indexing_does_and_a_rerun_fetches_no_pixels(
    server, cogs, local_index, tmp_path, tiny_msclip, monkeypatch
):
    monkeypatch.setattr(stac_search, "PAGE_SIZE", 1)  # one item per page: the second is on the next page
    serve_item(server, cogs, "S2B_48QUD_20200115_0_L2A", "a", updated=UPDATED)
    serve_item(server, cogs, "S2A_48QUD_20200118_0_L2A", "b", updated=UPDATED)
    serve_item(server, cogs, "S2A_48QUD_20200120_0_L2A", "cloudy", updated=UPDATED, **{"eo:cloud_cover": 60.0})
    other = serve_item(server, cogs, "elsewhere", "c", updated=UPDATED)
    other["bbox"] = [0, 0, 1, 1]
    index = tmp_path / "index"

    summary = index_archive([], index=index, encoders={SPACE: tiny_msclip}, stac_search=search(server, max_cloud=20))

    assert (summary.indexed, summary.failed, summary.skipped) == (8, [], [])
    assert len([r for r in server.requests["/search"] if r[0] == "POST"]) == 2  # paged
    tiles = tiles_by_key(index)
    assert sorted({t["path"] for t in tiles.values()}) == [
        f"collections/{COLLECTION}/items/S2A_48QUD_20200118_0_L2A",
        f"collections/{COLLECTION}/items/S2B_48QUD_20200115_0_L2A",
    ]
    assert {t["root"] for t in tiles.values()} == {server.url}
    # The same tiles as indexing the files locally: windows, footprints, facts and (to float precision) vectors.
    local, local_vectors = by_window(local_index), vectors_by_window(local_index)
    remote_rows = [r for r in tiles.values() if r["path"].endswith("S2B_48QUD_20200115_0_L2A")]
    assert sorted(r["window"] for r in remote_rows) == sorted(local)
    for row in remote_rows:
        twin = local[row["window"]]
        for column in ("width", "height", "crs", "bands", "offset", "footprint", "acquired", "mgrs_tile", "level"):
            assert row[column] == twin[column], column
        assert row["cloud_cover"] == twin["cloud_cover"] == 5.0
        assert row["offset"] == 0.0 and row["size"] == 0 and row["mtime"] is None
    remote_vectors = vectors_by_key(index, SPACE)
    for row in remote_rows:
        vector, twin = remote_vectors[row["key"]], local_vectors[row["window"]]
        cosine = float(vector @ twin / np.linalg.norm(vector) / np.linalg.norm(twin))
        assert cosine > 0.99999, (row["window"], cosine)

    # A quicklook re-reads a searched tile through the item's own URL (root/path).
    assert ArchivePixels().of_tile(remote_rows[0]).data.shape[0] == 10

    server.reset_counts()
    again = index_archive([], index=index, encoders={SPACE: tiny_msclip}, stac_search=search(server, max_cloud=20))
    assert (again.indexed, again.unchanged) == (0, 8)
    assert server.tif_bytes() == 0 and not [p for p in server.requests if p.endswith(".tif")]

    # An item whose `updated` changed is read again; the other is not.
    server.items[0]["properties"]["updated"] = "2024-04-01T00:00:00Z"
    server.reset_counts()
    changed = index_archive([], index=index, encoders={SPACE: tiny_msclip}, stac_search=search(server, max_cloud=20))
    assert (changed.indexed, changed.unchanged) == (4, 4)
    # (its blocks may come from GDAL's cache of this process's earlier reads; the other item is not touched)
    assert not [p for p in server.requests if p.startswith("/b/")]


def test_item_without_updated_is_recognised_by_the_etags_of_its_assets(server, cogs, tmp_path, tiny_msclip):
    serve_item(server, cogs, "S2B_48QUD_20200115_0_L2A", "a")
    index = tmp_path / "index"
    assert index_archive([], index=index, encoders={SPACE: tiny_msclip}, stac_search=search(server)).indexed == 4
    server.reset_counts()
    again = index_archive([], index=index, encoders={SPACE: tiny_msclip}, stac_search=search(server))
    assert (again.indexed, again.unchanged, server.tif_bytes()) == (0, 4, 0)
    assert {method for path, calls in server.requests.items() if path.endswith(".tif") for method, *_ in calls} == {
        "HEAD"
    }
    before = {source.remote_identity for source in search_sources(search(server), ReadSettings())}
    server.files["/a/B02.tif"] = cogs["B03"].read_bytes()  # new content, so a new ETag: the tiles change
    after = {source.remote_identity for source in search_sources(search(server), ReadSettings())}
    assert len(before) == len(after) == 1 and before != after


def test_item_without_proj_shape_is_chipped_from_its_header_and_read_in_worker_processes(
    server, cogs, tmp_path, tiny_msclip
):
    item = serve_item(server, cogs, "S2B_48QUD_20200115_0_L2A", "a", updated=UPDATED)
    for asset in item["assets"].values():
        del asset["proj:shape"]
    summary = index_archive(
        [], index=tmp_path / "index", encoders={SPACE: tiny_msclip}, stac_search=search(server), workers=1
    )
    assert (summary.discovered, summary.indexed, summary.failed) == (4, 4, [])


def test_reads_are_ranged_block_by_block(server, shared_data, tmp_path):
    """A 224 px chip of the whole 1068 px scene (256 px COG blocks) fetches a small part of its files."""
    cogs = write_cogs(shared_data, tmp_path / "cogs", size=None)
    item = serve_item(server, cogs, "S2B_48QUD_20200115_0_L2A", "whole", updated=UPDATED)
    sources = STAC_READER.item_sources(server.url, "item", pystac.Item.from_dict(item), ReadSettings())
    assert len(sources) == 25 and server.tif_bytes() == 0  # chipped from proj:shape, no request
    tile = read_tile(sources[0], ReadSettings())
    assert tile.pixels.data.shape == (10, 224, 224)
    total = sum(path.stat().st_size for path in cogs.values())
    assert 0 < server.tif_bytes() < 0.15 * total, (server.tif_bytes(), total)
    gets = [(p, r) for p, calls in server.requests.items() for method, r, _ in calls if method == "GET"]
    assert gets and all(r and r.startswith("bytes=") for _, r in gets)  # never a whole-file GET


# -- failures -------------------------------------------------------------------------------------------


def test_failures_are_recorded_with_url_and_status_and_the_run_goes_on(
    server, cogs, small_cogs, tmp_path, tiny_msclip, quick_gdal
):
    serve_item(server, cogs, "S2B_48QUD_20200115_0_L2A", "flaky", updated=UPDATED)
    server.faults.once["/flaky/B05.tif"] = [503, 503]  # answered after two retries
    serve_item(server, small_cogs, "S2B_48QUD_20200116_0_L2A", "down", updated=UPDATED)
    server.faults.always["/down/B11.tif"] = 503
    serve_item(server, small_cogs, "S2B_48QUD_20200117_0_L2A", "private", updated=UPDATED)
    server.faults.always["/private/B02.tif"] = 403
    serve_item(server, small_cogs, "S2B_48QUD_20200118_0_L2A", "gone", updated=UPDATED)
    del server.files["/gone/B08.tif"]
    serve_item(server, small_cogs, "S2B_48QUD_20200119_0_L2A", "slow", updated=UPDATED)
    server.faults.stall["/slow/B03.tif"] = 2.5

    summary = index_archive([], index=tmp_path / "index", encoders={SPACE: tiny_msclip}, stac_search=search(server))

    assert summary.indexed == 4 and len(summary.failed) == 4 and summary.ok
    problems = {key.rsplit("/", 1)[1]: reason for key, (kind, reason) in problems_by_key(tmp_path / "index").items()}
    url = server.url
    assert problems == {
        "S2B_48QUD_20200116_0_L2A": f"remote asset {url}/down/B11.tif: HTTP 503 (server error, still failing after retries)",
        "S2B_48QUD_20200117_0_L2A": problems["S2B_48QUD_20200117_0_L2A"],
        "S2B_48QUD_20200118_0_L2A": f"remote asset {url}/gone/B08.tif: HTTP 404 (not found)",
        "S2B_48QUD_20200119_0_L2A": f"remote asset {url}/slow/B03.tif: timed out (no answer within GDAL_HTTP_TIMEOUT=1 s, after retries)",
    }
    assert problems["S2B_48QUD_20200117_0_L2A"].startswith(
        f"remote asset {url}/private/B02.tif: HTTP 403 (access denied"
    )
    assert len(server.requests["/down/B11.tif"]) >= 3  # retried before giving up
    assert [status for *_, status in server.requests["/flaky/B05.tif"]][:3] == [503, 503, 200]


def test_a_failed_search_is_a_clear_error_and_leaves_no_run(server, tmp_path, tiny_msclip):
    missing = StacSearch(f"{server.url}/nothing-here", COLLECTION)
    with pytest.raises(ValueError, match="the STAC search at .* failed"):
        index_archive([], index=tmp_path / "index", encoders={SPACE: tiny_msclip}, stac_search=missing)
    assert not (tmp_path / "index").exists()


# -- S3 (moto's server) and credentials ---------------------------------------------------------------------


def write_bucket_items(folder: Path, prefix: str, cogs: dict[str, Path]) -> Path:
    """Two STAC items whose assets are objects under `prefix` (s3://bucket/... or gs://bucket/...): item.json
    with every band of `cogs`, and missing.json whose B12 names an object that does not exist."""
    hrefs = {band: f"{prefix}/{band}.tif" for band in cogs}
    folder.mkdir()
    (folder / "item.json").write_text(json.dumps(stac_item("S2B_48QUD_20200115_0_L2A", hrefs, (512, 512))))
    missing = dict(hrefs, B12=f"{prefix}/nothing.tif")
    (folder / "missing.json").write_text(json.dumps(stac_item("S2B_48QUD_20200116_0_L2A", missing, (224, 224))))
    return folder


def assert_same_chips(index: Path, local_index: Path) -> None:
    """Every chip of `index` has the footprint and (within cosine 0.99999) the vector of the local index's."""
    local, local_vectors = by_window(local_index), vectors_by_window(local_index)
    for window, row in by_window(index).items():
        vector, twin = vectors_by_window(index)[window], local_vectors[window]
        assert row["footprint"] == local[window]["footprint"]
        assert float(vector @ twin / np.linalg.norm(vector) / np.linalg.norm(twin)) > 0.99999


@pytest.fixture
def s3(monkeypatch):
    server = S3Server(secret_key="s3cr3t-never-stored-Zq9").start()
    try:
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        yield server
    finally:
        server.stop()


def test_s3_assets_index_like_local_files_and_credentials_stay_out(
    s3, cogs, local_index, tmp_path, tiny_msclip, caplog, capfd
):
    client = s3.client()
    client.create_bucket(Bucket="sentinel-cogs")
    for band, path in cogs.items():
        client.upload_file(str(path), "sentinel-cogs", f"tiles/48/Q/UD/{band}.tif")
    folder = write_bucket_items(tmp_path / "items", "s3://sentinel-cogs/tiles/48/Q/UD", cogs)
    index = tmp_path / "index"
    caplog.set_level(logging.DEBUG)

    summary = index_archive([folder], index=index, encoders={SPACE: tiny_msclip})
    result = runner.invoke(app, ["info", "--index", str(index), "--problems"])

    assert summary.indexed == 4 and len(summary.failed) == 1
    assert result.exit_code == 0 and "nothing.tif" in result.output, result.output
    reason = problems_by_key(index)["missing.json"][1]
    assert reason == "remote asset s3://sentinel-cogs/tiles/48/Q/UD/nothing.tif: HTTP 404 (not found)"
    assert_same_chips(index, local_index)
    secrets = (s3.secret_key, "dummy-key-id")
    stored = b"".join(p.read_bytes() for p in index.rglob("*") if p.is_file())
    out, err = capfd.readouterr()
    for secret in secrets:
        assert secret.encode() not in stored
        assert secret not in caplog.text and secret not in out + err and secret not in result.output


def test_gs_assets_index_like_local_files(server, cogs, local_index, tmp_path, tiny_msclip, monkeypatch):
    """gs:// hrefs through GDAL's /vsigs/, pointed at the loopback range server (which answers GCS's plain
    GET /<bucket>/<object> with ranges) and reading without credentials, as for a public bucket."""
    monkeypatch.setenv("CPL_GS_ENDPOINT", server.url + "/")
    monkeypatch.setenv("GS_NO_SIGN_REQUEST", "YES")
    for band, path in cogs.items():
        server.add_file(f"/gcp-public-data-sentinel-2/tiles/48/Q/UD/{band}.tif", path)
    folder = write_bucket_items(tmp_path / "items", "gs://gcp-public-data-sentinel-2/tiles/48/Q/UD", cogs)
    index = tmp_path / "index"

    summary = index_archive([folder], index=index, encoders={SPACE: tiny_msclip})

    assert summary.indexed == 4 and len(summary.failed) == 1
    reason = problems_by_key(index)["missing.json"][1]
    assert reason == "remote asset gs://gcp-public-data-sentinel-2/tiles/48/Q/UD/nothing.tif: HTTP 404 (not found)"
    assert any(path.startswith("/gcp-public-data-sentinel-2/") for path in server.requests)
    assert_same_chips(index, local_index)


# -- the command line ------------------------------------------------------------------------------------


def test_cli_stac_search(server, cogs, tmp_path):
    serve_item(server, cogs, "S2B_48QUD_20200115_0_L2A", "a", updated=UPDATED)
    serve_item(server, cogs, "S2B_48QUD_20200116_0_L2A", "b", updated=UPDATED)
    index = tmp_path / "index"
    args = ["index", "--index", str(index), "--model", SPACE, "--stac-search", server.url, "--collection", COLLECTION]
    result = runner.invoke(
        app,
        args
        + [
            "--bbox",
            "101.5,14.5,103.5,16.5",
            "--datetime",
            "2020-01-01/2020-02-01",
            "--max-cloud",
            "20",
            "--limit",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert {row["path"].rsplit("/", 1)[1] for row in tiles_by_key(index).values()} == {"S2B_48QUD_20200115_0_L2A"}

    for bad, message in (
        (["--collection", COLLECTION], "--collection applies to --stac-search URL"),
        (["--stac-search", server.url], "--stac-search needs --collection"),
        (
            ["--stac-search", server.url, "--collection", COLLECTION, "--bbox", "3,2,1"],
            "must be minlon,minlat,maxlon,maxlat",
        ),
    ):
        result = runner.invoke(app, ["index", "--index", str(tmp_path / "other"), *bad])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output


def test_cli_indexes_a_static_catalogue_by_url_and_quicklooks_reread_it(server, cogs, tmp_path):
    item = stac_item("S2B_48QUD_20200115_0_L2A", {b: f"{server.url}/cogs/{b}.tif" for b in cogs}, (512, 512))
    for band, path in cogs.items():
        server.add_file(f"/cogs/{band}.tif", path)
    item["links"] = [{"rel": "root", "href": "../catalog.json"}, {"rel": "parent", "href": "../catalog.json"}]
    server.add_json("/stac/items/one.json", item)
    catalog = {
        "type": "Catalog",
        "stac_version": "1.0.0",
        "id": "static",
        "description": "a static catalogue",
        "links": [{"rel": "item", "href": "./items/one.json", "type": "application/geo+json"}],
    }
    url = server.add_json("/stac/catalog.json", catalog)
    index = tmp_path / "index"
    result = runner.invoke(app, ["index", url, "--index", str(index), "--model", SPACE])
    assert result.exit_code == 0, result.output
    rows = tiles_by_key(index)
    assert sorted(rows) == [
        f"items/one.json#{w}" for w in ("0,0,224,224", "0,224,224,288", "224,0,288,224", "224,224,288,288")
    ]
    row = next(iter(rows.values()))
    assert row["root"] == f"{server.url}/stac"
    pixels = ArchivePixels().of_tile(row)
    assert pixels.data.shape == (10, 224, 224)


def test_an_item_collection_by_url_is_keyed_below_its_file(server, small_cogs):
    hrefs = {band: server.add_file(f"/cogs/{band}.tif", path) for band, path in small_cogs.items()}
    features = [stac_item(f"S2B_48QUD_2020011{day}_0_L2A", hrefs, (224, 224)) for day in (5, 6)]
    url = server.add_json("/results/found.json", {"type": "FeatureCollection", "features": features})
    sources = discover_urls([url], ReadSettings())
    assert [s.key for s in sources] == ["found.json/S2B_48QUD_20200115_0_L2A", "found.json/S2B_48QUD_20200116_0_L2A"]
    assert {str(s.root) for s in sources} == {f"{server.url}/results"}
    with pytest.raises(ValueError, match=f"cannot read the STAC document {server.url}/results/none.json"):
        discover_urls([f"{server.url}/results/none.json?token=abc"], ReadSettings())
    server.add_json("/results/other.json", {"type": "Feature", "properties": {}})
    with pytest.raises(ValueError, match="other.json: it is not a STAC item, item collection, catalogue"):
        discover_urls([f"{server.url}/results/other.json"], ReadSettings())


# -- mapping STAC metadata -------------------------------------------------------------------------------


def test_asset_keys_of_earth_search_and_other_catalogues_name_bands():
    assert [asset_band(k) for k in ("blue", "green", "red", "nir", "rededge1", "rededge2", "rededge3")] == [
        "B02",
        "B03",
        "B04",
        "B08",
        "B05",
        "B06",
        "B07",
    ]
    assert [asset_band(k) for k in ("nir08", "swir16", "swir22", "B02", "B8A", "B02_20m", "red-jp2")] == [
        "B8A",
        "B11",
        "B12",
        "B02",
        "B8A",
        "B02",
        "B04",
    ]
    assert [asset_band(k) for k in ("scl", "visual", "aot", "wvp")] == [None] * 4


def test_geotiff_assets_win_over_their_jp2_copies_and_scl_is_found():
    hrefs = {band: f"https://example.com/{band}.tif" for band in BANDS_10M + BANDS_20M}
    document = stac_item("S2B_48QUD_20200115_0_L2A", hrefs, (512, 512))
    document["assets"] = {
        **{
            f"{k}-jp2": {"href": v["href"].replace(".tif", ".jp2"), "roles": ["data"]}
            for k, v in document["assets"].items()
        },
        **document["assets"],
        "scl": {"href": "https://example.com/SCL.tif", "roles": ["data"]},
        "visual": {"href": "https://example.com/TCI.tif", "roles": ["visual"]},
    }
    bands, scl, local = item_assets(pystac.Item.from_dict(document), None)
    assert [b.band for b in bands] == ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
    assert all(b.path.endswith(".tif") for b in bands) and scl == "https://example.com/SCL.tif" and not local


@pytest.mark.parametrize(
    "properties, raster_offset, expected",
    [
        ({"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": True}, -0.1, 0.0),
        ({"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": False}, -0.1, 1000.0),
        ({"s2:processing_baseline": "04.00"}, None, 1000.0),
        ({"s2:processing_baseline": "02.12"}, None, 0.0),
    ],
)
def test_offset_from_earth_search_properties_baseline_or_raster_bands(properties, raster_offset, expected, cogs):
    hrefs = {band: f"https://example.com/{band}.tif" for band in cogs}
    document = stac_item("S2B_48QUD_20220715_0_L2A", hrefs, (512, 512), **properties)
    document["properties"]["datetime"] = "2022-07-15T03:40:00Z"
    if raster_offset is not None:
        for asset in document["assets"].values():
            asset["raster:bands"] = [{"scale": 0.0001, "offset": raster_offset}]
    source = STAC_READER.item_sources("https://example.com", "x", pystac.Item.from_dict(document), ReadSettings())[0]
    facts = source.option("facts")
    names_offset = 1000.0 if facts.names.carries_offset() else 0.0
    assert (facts.offset if facts.offset is not None else names_offset) == expected
    assert facts.cloud_cover == 5.0  # eo:cloud_cover


def test_urls_are_shown_without_credentials_or_query():
    assert (
        redact("https://user:pw@host.example:8443/a/B02.tif?X-Amz-Signature=abc")
        == "https://host.example:8443/a/B02.tif"
    )
    assert redact("s3://bucket/key.tif") == "s3://bucket/key.tif"


def test_bbox_is_checked():
    assert parse_bbox("1,2,3,4") == (1.0, 2.0, 3.0, 4.0)
    for bad in ("1,2,3", "3,2,1,4", "a,b,c,d"):
        with pytest.raises(ValueError, match="minlon,minlat,maxlon,maxlat"):
            parse_bbox(bad)


def test_local_item_with_remote_assets_is_no_longer_skipped(tmp_path):
    hrefs = {band: f"https://example.com/{band}.tif" for band in BANDS_10M}
    (tmp_path / "item.json").write_text(json.dumps(stac_item("S2B_48QUD_20200115_0_L2A", hrefs, (512, 512))))
    found = discover([tmp_path], ReadSettings())
    assert len(found.sources) == 4 and all(s.remote_identity for s in found.sources)
    assert found.sources[0].files == (tmp_path.resolve() / "item.json",)
