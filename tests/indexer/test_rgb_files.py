"""RGB-only files (TerraMesh S2RGB: 8-bit true colour, colour interpretations red/green/blue): their bands come
from the colour interpretations, their values are scaled as brightness (value / 255), they feed the RGB
space only, and their embeddings agree with those of the same places' 16-bit L2A bands."""

from __future__ import annotations

import numpy as np
import pytest

from msearch.indexer.readers import discover, read_tile
from msearch.indexer.readers.geotiff import band_names
from msearch.indexer.tiles import ReadSettings, SkipTile
from msearch.models.recipe import prepare, scaled_bands, tile_scale
from msearch.schema.bands import BAND_LAYOUTS
from msearch.schema.pixels import CannotFeed, MissingBandsError, Pixels

PLACES = ("282D_485L_3_3", "38D_378R_2_3", "433D_629L_3_1", "609U_541L_3_0", "637U_59R_1_3")


def read(path):
    settings = ReadSettings()
    return read_tile(discover([path], settings).sources[0], settings).pixels


def test_band_names_from_colour_interpretation_and_too_few_bands():
    colours = ("red", "green", "blue")
    assert band_names(("bands",) * 3, 3, None, colours) == ("B04", "B03", "B02")
    # A file's own colours win over a --band-order given for the 13-band files beside it.
    assert band_names((None,) * 3, 3, BAND_LAYOUTS["eurosat"], colours) == ("B04", "B03", "B02")
    assert band_names(("Red", "Green", "Blue"), 3, None) == ("B04", "B03", "B02")  # common names as descriptions
    with pytest.raises(SkipTile, match=r"^not imagery: 1 band \(a class map or mask\?\)$"):
        band_names(("bands",), 1, None, ("gray",))
    with pytest.raises(SkipTile, match=r"^not imagery: 2 bands"):
        band_names((None, None), 2, BAND_LAYOUTS["l1c"])
    assert band_names((None,), 1, ("B08",)) == ("B08",)  # declared: the user knows it is a band
    with pytest.raises(ValueError, match="3 bands without band descriptions"):
        band_names((None,) * 3, 3, None, ("gray", "undefined", "undefined"))


def test_s2rgb_is_read_as_true_colour_brightness(shared_data):
    pixels = read(shared_data / "terramesh-examples" / "S2RGB" / f"{PLACES[0]}.tif")
    assert pixels.bands == ("B04", "B03", "B02") and pixels.data.dtype == np.uint8
    assert (pixels.full_scale, pixels.offset) == (255.0, 0.0)


def test_tile_scale_is_the_one_rule_for_brightness(tiny_rsmclip, tiny_msclip):
    rgb = tiny_rsmclip.card.input
    data = np.full((3, 4, 4), 255, np.uint8)
    brightness = Pixels(data, ("B04", "B03", "B02"), 0.0, full_scale=255.0)
    digital_numbers = Pixels(data.astype(np.int16) * 10, ("B04", "B03", "B02"))
    assert tile_scale(rgb, brightness) == (255.0, (0.0, 1.0))
    assert tile_scale(rgb, digital_numbers) == (3000.0, (0.0, 1.0))
    np.testing.assert_allclose(scaled_bands(rgb, brightness), 1.0)
    np.testing.assert_allclose(scaled_bands(rgb, digital_numbers), 2550 / 3000, rtol=1e-6)
    # A recipe on digital numbers cannot take brightness: missing bands say so first, then the scale.
    with pytest.raises(MissingBandsError):
        scaled_bands(tiny_msclip.card.input, brightness)
    dn_recipe = type(rgb)(bands=rgb.bands, mean=rgb.mean, std=rgb.std, scale={"kind": "dn"})
    with pytest.raises(CannotFeed, match="255-scale true-colour brightness, not the Sentinel-2 digital numbers"):
        scaled_bands(dn_recipe, brightness)


def test_s2rgb_embeddings_agree_with_the_l2a_bands_of_the_same_places(shared_data, tiny_rsmclip):
    """Measured with the tiny RS-M-CLIP (2026-11-30): cosine 0.964-0.999, mean 0.991, against a mean of 0.81
    between different places; scaling the 8-bit values as digital numbers (DN / 3000, the old rule) gave
    0.44-0.999, mean 0.79."""
    folder = shared_data / "terramesh-examples"

    def embed(pixels):
        vector = tiny_rsmclip.encode_images(prepare(tiny_rsmclip.card.input, [pixels]))[0]
        vector = np.asarray(vector, dtype=np.float64)
        return vector / np.linalg.norm(vector)

    rgb = np.array([embed(read(folder / "S2RGB" / f"{place}.tif")) for place in PLACES])
    l2a = np.array([embed(read(folder / "S2L2A" / f"{place}.tif")) for place in PLACES])
    as_dn = np.array(
        [embed(Pixels(p.data, p.bands)) for p in (read(folder / "S2RGB" / f"{place}.tif") for place in PLACES)]
    )
    cosine = rgb @ l2a.T
    same = np.diag(cosine)
    other = cosine[~np.eye(len(PLACES), dtype=bool)]
    assert same.min() > 0.95 and same.mean() > 0.985
    assert same.mean() > other.mean() + 0.1
    assert same.mean() > np.mean(np.sum(as_dn * l2a, axis=1)) + 0.1  # the old rule agreed far less
