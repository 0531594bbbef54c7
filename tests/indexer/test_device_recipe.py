"""The input recipe on the encoder's device (stored digital numbers in, torch ops) against the host recipe,
on one tile or chip of every sample layout in ../shared/data, read as indexing reads them."""

from pathlib import Path

import numpy as np
import pytest
import torch

from msearch.indexer.readers import discover, read_tile
from msearch.indexer.tiles import ReadSettings
from msearch.models.recipe import prepare_stored, stored_bands
from msearch.schema.bands import parse_band_order
from msearch.store.vector_codec import VECTOR_ATOL
from tests.indexer.safe_products import build_safe

# (sample folder, band order of files without band descriptions); each is a layout or a case of one: tiles of
# 64, 120, 224, 256 and 264 px; 13-, 12- and per-band files; 20 m and 60 m bands on their own grids; int16 and
# uint16; offset-free and +1000 offset products; a whole 1068 px cell cut into chips.
SAMPLE_LAYOUTS = {
    "eurosat-ms (13-band GeoTIFF, B8A last)": ("eurosat-ms/Forest", "eurosat"),
    "terramesh L2A (12-band int16 GeoTIFF)": ("terramesh-examples/S2L2A", None),
    "terramesh L1C (13-band, +1000 offset)": ("terramesh-examples/S2L1C", "l1c"),
    "hydro (12-band GeoTIFF, 256 px)": ("hydro", None),
    "bigearthnet (band per file, 120/60/20 px)": ("bigearthnet-s2/S2A_MSIL2A_20170613T101031_87_48", None),
    "ssl4eo L2A (band per file, 264/132/44 px)": ("ssl4eo-s12/s2a", None),
    "ssl4eo L1C (band per file, +1000 offset)": ("ssl4eo-s12/s2c", None),
    "majortom N9999 (1068 px cell, chips)": ("majortom-core-s2l2a/199U", None),
    "majortom N0400 (1068 px cell, +1000 offset)": ("majortom-core-s2l2a/0U", None),
    "terramesh S2RGB (8-bit true colour, brightness)": ("terramesh-examples/S2RGB", None),
}
# Brightness tiles (S2RGB) feed only recipes that scale to brightness (the RGB models), by their full scale.
# Not a layout of the recipe: the eo-learn NumPy patch (no reader). A JPEG 2000 SAFE product, built from
# Major TOM's bands, is added below.


@pytest.fixture(scope="module")
def layout_tiles(shared_data, tmp_path_factory) -> dict[str, object]:
    """One tile (the first found) of every layout: name -> Pixels."""
    roots = {name: (shared_data / folder, order) for name, (folder, order) in SAMPLE_LAYOUTS.items()}
    roots["SAFE L2A (JPEG 2000, +1000 offset)"] = (build_safe(shared_data, tmp_path_factory.mktemp("safe")), None)
    tiles = {}
    for name, (root, order) in roots.items():
        settings = ReadSettings(band_order=parse_band_order(order) if order else None)
        sources = discover([Path(root)], settings).sources
        assert sources, f"{name}: no tiles under {root}"
        tiles[name] = read_tile(sources[0], settings).pixels
    return tiles


def _on_device(encoder, tiles):
    recipe = encoder.card.input
    stored = [torch.from_numpy(stored_bands(recipe, tile)) for tile in tiles]
    return stored, [tile.offset for tile in tiles], [tile.full_scale for tile in tiles]


@pytest.mark.parametrize("encoder_name", ["tiny_msclip", "tiny_rsmclip"])
def test_device_recipe_embeds_every_sample_layout_as_the_host_recipe(request, encoder_name, layout_tiles):
    encoder = request.getfixturevalue(encoder_name)
    brightness = encoder.card.input.scale["kind"] == "linear"
    names = [name for name, tile in layout_tiles.items() if brightness or tile.full_scale is None]
    tiles = [layout_tiles[name] for name in names]
    assert any(tile.full_scale == 255.0 for tile in tiles) == brightness
    assert len({tile.data.shape[1:] for tile in tiles}) >= 5  # many sizes, resized in groups of one size
    assert {tile.offset for tile in tiles} == {0.0, 1000.0}  # offset-free and offset tiles in one batch
    assert any(tile.data.dtype == np.uint16 for tile in tiles) and any(tile.data.dtype == np.int16 for tile in tiles)

    stored, offsets, full_scales = _on_device(encoder, tiles)
    # what travels: digital numbers (or 8-bit brightness) as stored
    assert all(s.dtype in (torch.uint16, torch.int16, torch.uint8) for s in stored)
    host = encoder.prepare(tiles)
    device = prepare_stored(encoder.card.input, stored, offsets, full_scales)
    assert device.shape == host.shape == (len(tiles), len(encoder.card.input.bands), 224, 224)
    torch.testing.assert_close(device, host, atol=1e-5, rtol=1e-5)

    expected = encoder.encode_images(host)
    got = encoder.encode_stored(stored, offsets, full_scales)
    cosines = np.sum(expected.astype(np.float64) * got, axis=1)
    for name, cosine in zip(names, cosines):
        assert cosine >= 0.99999, f"{name}: cosine {cosine}"
    # Different layouts are different places: the check compares vectors that differ between tiles.
    assert float(np.min(expected @ expected.T)) < 0.999


def test_device_recipe_keeps_the_offset_of_each_tile(tiny_msclip, layout_tiles):
    """An offset product read as offset-free (or the other way) prepares differently: the per-tile offsets
    are applied, not one offset for the batch."""
    tile = layout_tiles["majortom N0400 (1068 px cell, +1000 offset)"]
    stored, offsets, _ = _on_device(tiny_msclip, [tile, tile])
    assert offsets == [1000.0, 1000.0]
    prepared = prepare_stored(tiny_msclip.card.input, stored, [1000.0, 0.0])
    shift = (prepared[1] - prepared[0]).mean(dim=(1, 2))
    torch.testing.assert_close(shift, 1000.0 / torch.tensor(tiny_msclip.card.input.std), atol=1e-3, rtol=1e-4)


def test_non_finite_stored_values_are_refused_per_tile(tiny_msclip):
    from msearch.schema.bands import BAND_LAYOUTS
    from msearch.schema.pixels import Pixels

    data = np.full((12, 64, 64), 1200, dtype=np.float32)
    data[3, 10, 10] = np.nan
    with pytest.raises(ValueError, match="pixel values contain NaN or infinity"):
        stored_bands(tiny_msclip.card.input, Pixels(data, BAND_LAYOUTS["l2a"]))


def test_reader_processes_hand_stored_bands_to_the_encoder(shared_data, tmp_path, tiny_msclip):
    """Through a worker process (uint16 tensors in shared memory) and the staged path, the vectors of a run
    are the host recipe's."""
    from msearch.indexer.pipeline import index_archive
    from tests.indexer.helpers import copy_eurosat, vectors_by_key

    archive = tmp_path / "eurosat"
    copy_eurosat(shared_data, archive, classes=("Forest", "River", "SeaLake"), per_class=2)
    settings = ReadSettings(band_order=parse_band_order("eurosat"))
    summary = index_archive(
        [archive],
        tmp_path / "index",
        encoders={"tiny-ms-clip": tiny_msclip},
        settings=settings,
        workers=1,
        batch_size=4,
    )
    assert (summary.indexed, summary.device, summary.precisions) == (6, "cpu", {"tiny-ms-clip": "fp32"})
    stored = vectors_by_key(tmp_path / "index", "tiny-ms-clip")
    sources = discover([archive], settings).sources
    expected = tiny_msclip.encode_pixels([read_tile(s, settings).pixels for s in sources])
    got = np.stack([stored[s.key] for s in sources])
    # stored vectors are int8 codes with a scale (msearch.store.vector_codec): equal within one code step
    np.testing.assert_allclose(got, expected, atol=VECTOR_ATOL)
