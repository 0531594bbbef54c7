"""The input recipe on real Sentinel-2 tiles (../shared/data)."""

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from msearch.schema.bands import BAND_LAYOUTS
from msearch.schema.pixels import MissingBandsError, Pixels

# Of the five TerraMesh places, this one's L1C file carries the +1000 offset and its L2A file does not
# (its darkest L1C value is above 1000, half its L2A values are below). The other four pairs are on one
# scale (both offset-free, or both with the offset), so they say nothing about offset removal.
OFFSET_PAIR = "282D_485L_3_3.tif"
# Red edge, NIR and SWIR: where top-of-atmosphere (L1C) and surface (L2A) reflectance differ least.
RED_EDGE_TO_SWIR = slice(3, 10)


def read(path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read()


def test_offset_removal_puts_l1c_on_the_l2a_scale(shared_data, tiny_msclip):
    folder = shared_data / "terramesh-examples"
    l1c = read(folder / "S2L1C" / OFFSET_PAIR)
    l2a = read(folder / "S2L2A" / OFFSET_PAIR)
    assert l1c.shape[0] == 13 and l2a.shape[0] == 12
    assert l1c.min() > 1000 and (l2a < 1000).mean() > 0.4
    reference = tiny_msclip.prepare([Pixels(l2a, BAND_LAYOUTS["l2a"], offset=0)])
    removed = tiny_msclip.prepare([Pixels(l1c, BAND_LAYOUTS["l1c"], offset=1000)])
    kept = tiny_msclip.prepare([Pixels(l1c, BAND_LAYOUTS["l1c"], offset=0)])

    def difference(a, b, bands=slice(None)):
        return float((a - b)[:, bands].abs().mean())

    # In normalised units (one unit is one band std, ~1400 DN): the offset alone is ~0.7.
    assert difference(removed, reference) < 0.2  # blue differs most: L1C includes the atmosphere's haze
    assert difference(removed, reference, RED_EDGE_TO_SWIR) < 0.15
    assert difference(kept, reference) > 0.6
    assert difference(kept, reference, RED_EDGE_TO_SWIR) > 0.6


def test_eurosat_b8a_last_is_selected_by_name_and_resized_to_224(shared_data, tiny_msclip):
    path = shared_data / "eurosat-ms" / "Forest" / "Forest_1.tif"
    raw = read(path)
    assert raw.shape == (13, 64, 64)
    prepared = tiny_msclip.prepare([Pixels(raw, BAND_LAYOUTS["eurosat"])])
    assert prepared.shape == (1, 10, 224, 224) and prepared.dtype == torch.float32

    recipe = tiny_msclip.card.input
    b8a = recipe.bands.index("B8A")

    def expected(plane: int) -> torch.Tensor:
        values = torch.from_numpy(raw[plane].astype(np.float32))[None, None]
        resized = F.interpolate(values, size=(224, 224), mode="bicubic", antialias=True, align_corners=False)
        return (resized[0, 0] - recipe.mean[b8a]) / recipe.std[b8a]

    torch.testing.assert_close(prepared[0, b8a], expected(12), atol=1e-4, rtol=1e-5)  # B8A, the last plane
    assert (prepared[0, b8a] - expected(8)).abs().mean() > 0.5  # plane 8 is B09 (water vapour) in EuroSAT


def test_rgb_linear_scale_is_dn_over_3000_clipped_then_clip_normalised(shared_data, tiny_rsmclip):
    recipe = tiny_rsmclip.card.input
    assert recipe.scale == {"kind": "linear", "divide": 3000.0, "clip": [0.0, 1.0]}
    mean = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)[:, None, None]
    std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)[:, None, None]
    folder = shared_data / "terramesh-examples"
    # Water and forest, a few bright pixels above DN 3000; snow, mostly above it (clipped to full brightness).
    for name, saturated in (("282D_485L_3_3.tif", 0.01), ("609U_541L_3_0.tif", 0.5)):
        raw = read(folder / "S2L2A" / name)
        assert raw.shape[1:] == (224, 224)  # no resize: the values are the recipe's own
        prepared = tiny_rsmclip.prepare([Pixels(raw, BAND_LAYOUTS["l2a"])])[0].numpy()
        rgb = raw[[3, 2, 1]].astype(np.float32)  # B04, B03, B02 in the L2A stack
        assert (rgb > 3000).mean() >= saturated
        expected = (np.clip(rgb / 3000, 0, 1) - mean) / std
        np.testing.assert_allclose(prepared, expected, atol=1e-5)


def test_tiles_of_mixed_sizes_keep_their_order(shared_data, tiny_msclip):
    small = Pixels(read(shared_data / "eurosat-ms" / "River" / "River_1.tif"), BAND_LAYOUTS["eurosat"])
    large = Pixels(read(shared_data / "terramesh-examples" / "S2L2A" / OFFSET_PAIR), BAND_LAYOUTS["l2a"])
    wide = Pixels(np.full((12, 100, 300), 1500, dtype=np.uint16), BAND_LAYOUTS["l2a"])
    batch = tiny_msclip.prepare([small, large, wide, small])
    assert batch.shape == (4, 10, 224, 224)
    for i, tile in enumerate([small, large, wide, small]):
        torch.testing.assert_close(batch[i], tiny_msclip.prepare([tile])[0])
    assert not torch.equal(batch[0], batch[1])
    mean, std = np.array(tiny_msclip.card.input.mean), np.array(tiny_msclip.card.input.std)
    torch.testing.assert_close(
        batch[2].mean(dim=(1, 2)).double(), torch.from_numpy((1500 - mean) / std), atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_pixels_are_an_error(tiny_msclip, tiny_rsmclip, bad):
    data = np.full((12, 64, 64), 1200, dtype=np.float32)
    data[3, 10, 10] = bad  # B04, which both recipes use
    for encoder in (tiny_msclip, tiny_rsmclip):
        with pytest.raises(ValueError, match="pixel values contain NaN or infinity"):
            encoder.prepare([Pixels(data, BAND_LAYOUTS["l2a"])])


def test_missing_bands_are_named(tiny_msclip, tiny_rsmclip):
    no_b8a = tuple(b for b in BAND_LAYOUTS["l2a"] if b != "B8A")
    with pytest.raises(MissingBandsError, match=r"missing bands B8A \(the tile has B01, B02, .*B12\)") as raised:
        tiny_msclip.prepare([Pixels(np.zeros((11, 64, 64), dtype=np.uint16), no_b8a)])
    assert raised.value.missing == ["B8A"]
    with pytest.raises(MissingBandsError, match="missing bands B04, B02"):
        tiny_rsmclip.prepare([Pixels(np.zeros((1, 64, 64), dtype=np.uint16), ("B03",))])
