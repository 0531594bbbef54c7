import numpy as np
import pytest

from msearch.models.encoder import EncoderIdentity
from msearch.schema.bands import BAND_LAYOUTS
from msearch.schema.pixels import Pixels


@pytest.fixture(scope="module")
def eurosat_tiles(shared_data) -> list[Pixels]:
    """32 real EuroSAT tiles, three or four of each class."""
    import rasterio

    paths = sorted((shared_data / "eurosat-ms").glob("*/*.tif"))[::6][:32]
    tiles = []
    for path in paths:
        with rasterio.open(path) as dataset:
            tiles.append(Pixels(dataset.read(), BAND_LAYOUTS["eurosat"]))
    assert len(tiles) == 32
    return tiles


@pytest.mark.parametrize("encoder_name", ["tiny_msclip", "tiny_rsmclip"])
def test_image_alone_and_in_a_batch_of_32_gives_the_same_vector(request, encoder_name, eurosat_tiles):
    encoder = request.getfixturevalue(encoder_name)
    batch = encoder.prepare(eurosat_tiles)
    together = encoder.encode_images(batch)
    assert together.shape == (32, encoder.dim) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    for i in (0, 13, 31):
        alone = encoder.encode_images(batch[i : i + 1])
        assert np.abs(alone[0] - together[i]).max() <= 1e-5
    assert np.abs(together[0] - together[31]).max() > 1e-3  # different tiles, different vectors


@pytest.mark.parametrize("encoder_name", ["tiny_msclip", "tiny_rsmclip"])
def test_text_vectors_are_normalised_float32(request, encoder_name):
    encoder = request.getfixturevalue(encoder_name)
    vectors = encoder.encode_texts(["a satellite image of a river", "a satellite image of a forest"])
    assert vectors.shape == (2, encoder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_encode_pixels_is_prepare_then_encode_images(tiny_msclip, eurosat_tiles):
    np.testing.assert_array_equal(
        tiny_msclip.encode_pixels(eurosat_tiles[:4]), tiny_msclip.encode_images(tiny_msclip.prepare(eurosat_tiles[:4]))
    )


def test_identity_names_card_and_weights(tiny_msclip, tiny_rsmclip):
    assert tiny_msclip.identity.card == "tiny-ms-clip"
    assert tiny_msclip.identity.weights_sha256 == tiny_msclip.weights_path.resolve().name
    assert str(tiny_msclip.identity) == f"tiny-ms-clip@sha256:{tiny_msclip.identity.weights_sha256[:12]}"
    assert tiny_rsmclip.identity != tiny_msclip.identity
    assert EncoderIdentity("tiny-ms-clip", tiny_msclip.identity.weights_sha256) == tiny_msclip.identity
