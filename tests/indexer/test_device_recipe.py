"""The input recipe on the encoder's device against today's recipe on the host, on one tile or chip of every
sample layout in ../shared/data: readers hand over each band at its own resolution (uint16 digital numbers;
the 20 m and 60 m bands at their own size) and the device resamples, converts, scales, resizes, crops and
normalises; the reference is the host recipe on the bands as GDAL resamples them onto the 10 m grid."""

from pathlib import Path

import numpy as np
import pytest
import torch

from msearch.indexer.readers import discover, read_scene, read_tile
from msearch.indexer.tiles import ReadSettings
from msearch.models.recipe import prepare_stored, stored_bands
from msearch.schema.bands import BANDS_BY_NAME, parse_band_order
from msearch.schema.pixels import Pixels
from msearch.store.vector_codec import VECTOR_ATOL
from tests.indexer.helpers import gdal_on_grid
from tests.indexer.safe_products import build_safe, build_scene_safe

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
# Major TOM's bands, is added below, and a chip of a JP2 scene whose 60 m bands start mid-pixel.


@pytest.fixture(scope="module")
def layout_tiles(shared_data, tmp_path_factory) -> dict[str, tuple[Pixels, Pixels]]:
    """One tile (the first found) of every layout: name -> (Pixels as read, the same tile with its bands on
    the grid as GDAL resamples them: the reference)."""
    roots = {name: (shared_data / folder, order) for name, (folder, order) in SAMPLE_LAYOUTS.items()}
    roots["SAFE L2A (JPEG 2000, +1000 offset)"] = (build_safe(shared_data, tmp_path_factory.mktemp("safe")), None)
    scene = build_scene_safe(shared_data, tmp_path_factory.mktemp("scene"), 1120, 1024)
    tiles = {}
    for name, (root, order) in roots.items():
        settings = ReadSettings(band_order=parse_band_order(order) if order else None)
        sources = discover([Path(root)], settings).sources
        assert sources, f"{name}: no tiles under {root}"
        tiles[name] = _with_reference(read_tile(sources[0], settings).pixels, sources[0], settings)
    # The scene reader's chip 2 of row 1 (col 224, row 224): its 60 m pixels begin 224 / 6 = 37.3 pixels in.
    settings = ReadSettings()
    sources = discover([scene], settings).sources
    chips = dict(read_scene(sources, settings))
    chip = next(source for source in sources if source.window[:2] == (224, 224))
    tiles["JP2 scene chip at (224, 224) (60 m bands mid-pixel)"] = _with_reference(chips[chip].pixels, chip, settings)
    return tiles


def _with_reference(pixels: Pixels, source, settings) -> tuple[Pixels, Pixels]:
    return pixels, Pixels(gdal_on_grid(source, settings), pixels.bands, pixels.offset, pixels.full_scale)


def _on_device(encoder, tiles):
    recipe = encoder.card.input
    stored = [stored_bands(recipe, tile).map(torch.from_numpy) for tile in tiles]
    return stored, [tile.offset for tile in tiles], [tile.full_scale for tile in tiles]


def test_readers_hand_over_what_gdal_resamples_onto_the_grid(layout_tiles):
    """Pixel for pixel, every layout: resampling the native bands gives GDAL's grid, and the coarser bands
    travel at their own size."""
    coarser = []
    for name, (pixels, reference) in layout_tiles.items():
        assert pixels.data.dtype == reference.data.dtype, name
        np.testing.assert_array_equal(pixels.data, reference.data, err_msg=name)
        if any(not group.on_grid for group in pixels.native.groups):
            coarser.append(name)
            stored = sum(plane.size for plane in pixels.native.planes)
            assert stored < 0.8 * pixels.data.size, name  # 20 m bands a quarter, 60 m a 36th of the pixels
    assert len(coarser) >= 5, coarser  # per-band, SAFE and chipped layouts keep their 20 m and 60 m bands


@pytest.mark.parametrize("encoder_name", ["tiny_msclip", "tiny_rsmclip"])
def test_device_recipe_embeds_every_sample_layout_as_the_host_recipe(request, encoder_name, layout_tiles):
    encoder = request.getfixturevalue(encoder_name)
    brightness = encoder.card.input.scale["kind"] == "linear"
    names = [name for name, (tile, _) in layout_tiles.items() if brightness or tile.full_scale is None]
    tiles = [layout_tiles[name][0] for name in names]
    references = [layout_tiles[name][1] for name in names]
    assert any(tile.full_scale == 255.0 for tile in tiles) == brightness
    assert len({tile.shape[1:] for tile in tiles}) >= 5  # many sizes, resized in groups of one size
    assert {tile.offset for tile in tiles} == {0.0, 1000.0}  # offset-free and offset tiles in one batch
    assert any(tile.dtype == np.uint16 for tile in tiles) and any(tile.dtype == np.int16 for tile in tiles)

    stored, offsets, full_scales = _on_device(encoder, tiles)
    # what travels: digital numbers (or 8-bit brightness) as stored, coarser bands at their own size
    assert all(p.dtype in (torch.uint16, torch.int16, torch.uint8) for s in stored for p in s.planes)
    if any(BANDS_BY_NAME[band].resolution_m > 10 for band in encoder.card.input.bands):
        assert any(p.shape[1:] != s.size for s in stored for p in s.planes)
    host = encoder.prepare(references)
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
    tile, _ = layout_tiles["majortom N0400 (1068 px cell, +1000 offset)"]
    stored, offsets, _ = _on_device(tiny_msclip, [tile, tile])
    assert offsets == [1000.0, 1000.0]
    prepared = prepare_stored(tiny_msclip.card.input, stored, [1000.0, 0.0])
    shift = (prepared[1] - prepared[0]).mean(dim=(1, 2))
    torch.testing.assert_close(shift, 1000.0 / torch.tensor(tiny_msclip.card.input.std), atol=1e-3, rtol=1e-4)


def test_non_finite_stored_values_are_refused_per_tile(tiny_msclip):
    from msearch.schema.bands import BAND_LAYOUTS

    data = np.full((12, 64, 64), 1200, dtype=np.float32)
    data[3, 10, 10] = np.nan
    with pytest.raises(ValueError, match="pixel values contain NaN or infinity"):
        stored_bands(tiny_msclip.card.input, Pixels(data, BAND_LAYOUTS["l2a"]))


def test_reader_processes_hand_stored_bands_to_the_encoder(shared_data, tmp_path, tiny_msclip):
    """Through a worker process (uint16 planes in shared memory, 20 m and 60 m bands at their own size) and the
    staged path, the vectors of a run are the host recipe's."""
    import shutil

    from msearch.indexer.pipeline import index_archive
    from tests.indexer.helpers import copy_eurosat, vectors_by_key

    archive = tmp_path / "eurosat"
    copy_eurosat(shared_data, archive, classes=("Forest", "River"), per_class=2)
    bigearthnet = shared_data / SAMPLE_LAYOUTS["bigearthnet (band per file, 120/60/20 px)"][0]
    for patch in sorted(bigearthnet.parent.iterdir())[:2]:
        shutil.copytree(patch, archive / "bigearthnet" / patch.name)
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
