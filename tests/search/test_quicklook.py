"""Quicklooks of real Sentinel-2 tiles and the self-contained HTML page."""

import base64
import io
import re

import numpy as np
import pytest
import rasterio
from PIL import Image

from msearch.schema.bands import BAND_LAYOUTS, RADIOMETRIC_OFFSET
from msearch.schema.pixels import Pixels
from msearch.search.quicklook import html_page, png_bytes, true_colour
from msearch.search.results import SearchResult

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
QUERY_INFO = {"query": "flooded <farmland>", "lang": "en", "space": "llama3-ms-clip-base"}


def read_pixels(path, layout: str, offset: float) -> Pixels:
    with rasterio.open(path) as source:
        return Pixels(source.read(), BAND_LAYOUTS[layout], offset)


@pytest.fixture(scope="module")
def l2a_tiles(shared_data):
    return sorted((shared_data / "terramesh-examples" / "S2L2A").glob("*.tif"))


def test_true_colour_of_real_l2a_tiles_spans_the_range(l2a_tiles):
    assert l2a_tiles
    for path in l2a_tiles:
        rgb = true_colour(read_pixels(path, "l2a", 0.0))
        assert rgb.shape == (224, 224, 3) and rgb.dtype == np.uint8
        low, high = np.percentile(rgb, (2, 98))
        assert low < 30 and high > 220, path.name


def test_true_colour_agrees_with_terramesh_rgb_previews(shared_data, l2a_tiles):
    for path in l2a_tiles:
        rgb = true_colour(read_pixels(path, "l2a", 0.0)).reshape(-1).astype(float)
        with rasterio.open(shared_data / "terramesh-examples" / "S2RGB" / path.name) as source:
            preview = source.read().transpose(1, 2, 0).reshape(-1).astype(float)
        assert np.corrcoef(rgb, preview)[0, 1] > 0.95, path.name


def test_the_radiometric_offset_does_not_change_the_quicklook(l2a_tiles):
    pixels = read_pixels(l2a_tiles[0], "l2a", 0.0)
    shifted = Pixels(pixels.data.astype(np.int32) + int(RADIOMETRIC_OFFSET), pixels.bands, RADIOMETRIC_OFFSET)
    assert np.array_equal(true_colour(shifted), true_colour(pixels))


def test_nodata_is_black_and_left_out_of_the_stretch(l2a_tiles):
    pixels = read_pixels(l2a_tiles[0], "l2a", 0.0)
    holed = pixels.data.copy()
    holed[:, :100, :] = 0
    rgb = true_colour(Pixels(holed, pixels.bands, pixels.offset))
    assert not rgb[:100].any()
    low, high = np.percentile(rgb[100:], (2, 98))
    assert low < 30 and high > 220


def test_a_tile_of_nodata_has_no_quicklook():
    empty = Pixels(np.zeros((3, 8, 8), dtype=np.uint16), ("B02", "B03", "B04"))
    with pytest.raises(ValueError, match="no valid pixels"):
        true_colour(empty)


def test_png_bytes_decode_to_the_same_image(l2a_tiles):
    rgb = true_colour(read_pixels(l2a_tiles[0], "l2a", 0.0))
    png = png_bytes(rgb)
    assert png.startswith(PNG_SIGNATURE)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), rgb)


def page_results(tiles) -> list[SearchResult]:
    return [
        SearchResult(
            rank=i + 1,
            score=0.5 - i / 100,
            tile_id=i,
            path=f"S2L2A/{path.name}",
            root=str(path.parents[1]),
            space="llama3-ms-clip-base",
            lon=-50.1 + i,
            lat=-25.2,
            date="2019-07-03",
            tile="22JDQ",
        )
        for i, path in enumerate(tiles)
    ]


def test_html_page_embeds_one_png_per_result(l2a_tiles):
    images = [png_bytes(true_colour(read_pixels(path, "l2a", 0.0))) for path in l2a_tiles]
    page = html_page(page_results(l2a_tiles), images, QUERY_INFO)
    img_tags = re.findall(r"<img\b[^>]*>", page)
    assert len(img_tags) == len(l2a_tiles) == page.count("<img")
    for tag in img_tags:
        source = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', tag)
        assert source, tag[:80]
        assert base64.b64decode(source.group(1)).startswith(PNG_SIGNATURE)
    assert "0.500" in page and "-25.2000, -50.1000" in page and "2019-07-03" in page and "22JDQ" in page
    assert f"S2L2A/{l2a_tiles[0].name}" in page
    # Self-contained: nothing fetched from elsewhere.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)


def test_html_page_shows_a_placeholder_and_escapes_names():
    results = [
        SearchResult(rank=1, score=0.4, tile_id=1, path="<script>alert(1)</script>.tif", root="/r", space="s"),
        SearchResult(rank=2, score=0.3, tile_id=2, path="a & b.tif", root="/r", space="s"),
    ]
    image = png_bytes(np.full((4, 4, 3), 128, dtype=np.uint8))
    page = html_page(results, [None, image], QUERY_INFO)
    assert page.count("<img") == 1
    assert "no quicklook" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;.tif" in page
    assert "a &amp; b.tif" in page
    assert "flooded &lt;farmland&gt;" in page


def test_html_page_needs_one_image_slot_per_result():
    result = SearchResult(rank=1, score=0.4, tile_id=1, path="a.tif", root="/r", space="s")
    with pytest.raises(ValueError, match="1 results but 0 quicklooks"):
        html_page([result], [], QUERY_INFO)
