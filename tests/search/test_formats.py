"""SearchResult checks and each output format, parsed back and compared with what went in."""

import csv
import io
import json

import numpy as np
import pytest
import rasterio
import shapely.geometry
from rasterio.warp import transform_geom
from rich.console import Console

from msearch.search.formats import CSV_COLUMNS, results_table, to_csv, to_geojson, to_json
from msearch.search.results import SearchResult

# Clockwise on purpose and without the closing corner: SearchResult must close and re-orient it.
MUNICH_FOOTPRINT = {
    "type": "Polygon",
    "coordinates": [[[11.50, 48.20], [11.60, 48.20], [11.60, 48.10], [11.50, 48.10]]],
}
QUERY_INFO = {"query": "überflutetes Ackerland", "lang": "de", "space": "rs-m-clip", "k": 3}


def make_results() -> list[SearchResult]:
    return [
        SearchResult(
            rank=1,
            score=np.float32(0.3125),
            tile_id=np.int64(42),
            path="2021/S2A_32UPU_chip_07.tif",
            root="/archive/bavaria",
            space="rs-m-clip",
            lon=11.55,
            lat=48.15,
            date="2021-06-14",
            tile="32UPU",
            cloud=3.5,
            footprint=MUNICH_FOOTPRINT,
            place_id=5,  # a place's best acquisition, as a search per place gives it
            acquisitions=2,
            dates=["2021-06-14", "2021-05-10"],
            date_tile_ids=[42, 43],
        ),
        SearchResult(
            rank=2,
            score=0.25,
            tile_id=7,
            path="eurosat/River_3.tif",
            root="/archive/eurosat",
            space="rs-m-clip",
            lon=-47.25,
            lat=-25.5,
        ),
        SearchResult(rank=3, score=0.125, tile_id=9, path='odd, name "quoted".tif', root="/a", space="rs-m-clip"),
    ]


def test_numpy_scalars_become_plain_numbers():
    first = make_results()[0]
    assert type(first.score) is float and type(first.tile_id) is int
    assert first.score == 0.3125 and first.tile_id == 42


def test_footprint_is_closed_and_counter_clockwise():
    ring = make_results()[0].footprint["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 5
    signed_area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:])) / 2
    assert signed_area > 0


@pytest.mark.parametrize(
    "footprint",
    [
        {"type": "Polygon", "coordinates": [[[790236.0, 7195799.2], [792476.0, 7195799.2], [792476.0, 7198039.2]]]},
        {"type": "Point", "coordinates": [11.5, 48.1]},
        {"type": "Polygon", "coordinates": [[[11.5, 48.1], [11.6, 48.1], [11.5, 48.1]]]},
    ],
    ids=["projected-metres", "not-a-polygon", "degenerate-ring"],
)
def test_bad_footprints_are_refused(footprint):
    with pytest.raises(ValueError, match="tile 5"):
        SearchResult(rank=1, score=0.1, tile_id=5, path="a.tif", root="/r", space="s", footprint=footprint)


def test_centre_needs_both_coordinates_in_range():
    with pytest.raises(ValueError, match="both"):
        SearchResult(rank=1, score=0.1, tile_id=5, path="a.tif", root="/r", space="s", lon=11.0)
    with pytest.raises(ValueError, match="WGS84"):
        SearchResult(rank=1, score=0.1, tile_id=5, path="a.tif", root="/r", space="s", lon=11.0, lat=148.0)


def test_json_round_trip():
    document = json.loads(to_json(make_results(), QUERY_INFO))
    assert {key: document[key] for key in QUERY_INFO} == QUERY_INFO
    first, second, third = document["results"]
    assert first["rank"] == 1 and first["score"] == 0.3125 and first["tile_id"] == 42
    assert first["path"] == "2021/S2A_32UPU_chip_07.tif" and first["root"] == "/archive/bavaria"
    assert (first["lon"], first["lat"], first["date"]) == (11.55, 48.15, "2021-06-14")
    assert (first["tile"], first["cloud"]) == ("32UPU", 3.5)
    assert first["footprint"]["type"] == "Polygon"
    assert second["footprint"] is None and second["date"] is None
    assert third["path"] == 'odd, name "quoted".tif' and third["lat"] is None


def test_json_needs_the_query_description():
    with pytest.raises(ValueError, match="lang"):
        to_json(make_results(), {"query": "forest", "space": "ms-clip"})


def test_json_refuses_nan_scores():
    nan_result = SearchResult(rank=1, score=float("nan"), tile_id=1, path="a.tif", root="/r", space="s")
    with pytest.raises(ValueError):
        to_json([nan_result], QUERY_INFO)


def test_csv_round_trip():
    text = to_csv(make_results())
    rows = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
    assert len(rows) == 3
    first, second, third = rows
    assert first == {
        "rank": "1",
        "score": "0.3125",
        "path": "2021/S2A_32UPU_chip_07.tif",
        "lat": "48.15",
        "lon": "11.55",
        "date": "2021-06-14",
        "tile": "32UPU",
        "cloud": "3.5",
        "space": "rs-m-clip",
        "tile_id": "42",
        "root": "/archive/bavaria",
        "place_id": "5",
        "acquisitions": "2",
        "dates": "2021-06-14;2021-05-10",
    }
    assert (second["lat"], second["lon"], second["date"], second["cloud"]) == ("-25.5", "-47.25", "", "")
    assert (second["place_id"], second["acquisitions"], second["dates"]) == ("", "", "")
    assert third["path"] == 'odd, name "quoted".tif'


def test_geojson_is_a_feature_collection_with_lon_lat_geometries():
    collection = json.loads(to_geojson(make_results(), QUERY_INFO))
    assert collection["type"] == "FeatureCollection" and collection["query"] == "überflutetes Ackerland"
    polygon_feature, point_feature, unplaced_feature = collection["features"]
    assert all(feature["type"] == "Feature" for feature in collection["features"])

    ring = polygon_feature["geometry"]["coordinates"][0]
    polygon = shapely.geometry.shape(polygon_feature["geometry"])
    assert polygon_feature["geometry"]["type"] == "Polygon"
    assert polygon.is_valid and polygon.exterior.is_ccw
    assert ring[0] == ring[-1]
    assert all(11.5 <= lon <= 11.6 and 48.1 <= lat <= 48.2 for lon, lat in ring)
    assert polygon_feature["properties"]["rank"] == 1 and "footprint" not in polygon_feature["properties"]
    assert polygon_feature["properties"]["tile"] == "32UPU"

    assert point_feature["geometry"] == {"type": "Point", "coordinates": [-47.25, -25.5]}
    assert unplaced_feature["geometry"] is None
    assert unplaced_feature["properties"]["path"] == 'odd, name "quoted".tif'


def test_geojson_footprint_of_a_real_tile(shared_data):
    with rasterio.open(shared_data / "terramesh-examples" / "S2L2A" / "282D_485L_3_3.tif") as source:
        left, bottom, right, top = source.bounds
        corners = [[left, bottom], [right, bottom], [right, top], [left, top], [left, bottom]]
        projected = {"type": "Polygon", "coordinates": [corners]}
        footprint = transform_geom(source.crs, "EPSG:4326", projected)
    result = SearchResult(
        rank=1,
        score=0.5,
        tile_id=1,
        path="S2L2A/282D_485L_3_3.tif",
        root=str(shared_data),
        space="llama3-ms-clip-base",
        footprint=footprint,
    )
    geometry = json.loads(to_geojson([result], QUERY_INFO))["features"][0]["geometry"]
    ring = geometry["coordinates"][0]
    assert ring[0] == ring[-1] and shapely.geometry.shape(geometry).is_valid
    # UTM zone 22S is southern Brazil: longitudes -54..-48, latitudes south of the equator.
    assert all(-54 <= lon <= -48 and -35 < lat < 0 for lon, lat in ring)


def test_terminal_table_shows_each_result():
    console = Console(width=160, record=True)
    console.print(results_table(make_results()))
    text = console.export_text()
    assert "0.312" in text and "0.250" in text and "0.125" in text
    assert "2021/S2A_32UPU_chip_07.tif" in text
    assert "48.1500, 11.5500" in text and "-25.5000, -47.2500" in text
    assert "2021-06-14" in text and "32UPU" in text and "42" in text
