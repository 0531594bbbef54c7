"""Device choice and precision of an encoder: names, what this machine has, the bf16 check at load."""

import numpy as np
import pytest
import torch

from msearch.models import encoder as encoder_module
from msearch.models import load_encoder
from msearch.models.device import (
    DeviceError,
    default_batch_size,
    describe_device,
    parse_device,
    resolve_device,
    resolve_precision,
)
from msearch.models.encoder import PrecisionCheckError

CUDA_DEVICES = torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.parametrize(
    ("name", "parsed"),
    [("auto", ("auto", None)), ("cpu", ("cpu", None)), ("cuda", ("cuda", None)), ("cuda:0", ("cuda", 0))]
    + [("cuda:12", ("cuda", 12)), (" CUDA:3 ", ("cuda", 3))],
)
def test_device_names_parse(name, parsed):
    assert parse_device(name) == parsed


@pytest.mark.parametrize("name", ["gpu", "cpu:0", "auto:1", "cuda:", "cuda:x", "cuda:-1", "mps", ""])
def test_unknown_device_names_are_refused_with_the_choices(name):
    with pytest.raises(DeviceError, match=r"--device must be auto, cpu, cuda or cuda:N, got"):
        parse_device(name)


def test_auto_takes_the_first_cuda_device_else_the_cpu():
    expected = torch.device("cuda", 0) if CUDA_DEVICES else torch.device("cpu")
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert describe_device(torch.device("cpu")) == "cpu"
    assert default_batch_size(torch.device("cpu")) == 32 and default_batch_size(torch.device("cuda", 0)) == 256


def test_cuda_where_there_is_none_is_an_error_never_the_cpu():
    if CUDA_DEVICES:
        assert resolve_device("cuda") == torch.device("cuda", 0)
    else:
        with pytest.raises(DeviceError, match=r"--device cuda: .*(no CUDA).*use --device cpu, or --device auto"):
            resolve_device("cuda")
    with pytest.raises(DeviceError, match=rf"--device cuda:{CUDA_DEVICES}: "):
        resolve_device(f"cuda:{CUDA_DEVICES}")  # one past the last device there is


def test_precision_defaults_to_bf16_on_cuda_and_fp32_on_the_cpu():
    assert resolve_precision(None, torch.device("cpu")) == "fp32"
    assert resolve_precision(None, torch.device("cuda", 1)) == "bf16"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(DeviceError, match="--precision must be one of fp32, bf16, got 'fp16'"):
        resolve_precision("fp16", torch.device("cpu"))


def test_bf16_encoder_passes_its_check_and_agrees_with_fp32(tiny_msclip, shared_data):
    import rasterio

    from msearch.schema.bands import BAND_LAYOUTS
    from msearch.schema.pixels import Pixels

    bf16 = load_encoder("tiny-ms-clip", device="cpu", precision="bf16")
    assert (bf16.precision, bf16.device, tiny_msclip.precision) == ("bf16", torch.device("cpu"), "fp32")
    assert bf16.check_bf16() >= 0.999
    paths = sorted((shared_data / "eurosat-ms").glob("*/*.tif"))[::25][:8]
    tiles = []
    for path in paths:
        with rasterio.open(path) as dataset:
            tiles.append(Pixels(dataset.read(), BAND_LAYOUTS["eurosat"]))
    reduced, exact = bf16.encode_pixels(tiles), tiny_msclip.encode_pixels(tiles)
    assert reduced.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(reduced, axis=1), 1.0, atol=1e-5)  # normalised in float32
    cosines = np.sum(reduced * exact, axis=1)
    assert cosines.min() >= 0.999
    assert np.abs(reduced - exact).max() > 0  # really computed in bf16: not the fp32 vectors
    assert float(np.min(exact @ exact.T)) < cosines.min()  # closer to fp32 than tiles are to each other


def test_bf16_is_refused_below_the_threshold(monkeypatch):
    monkeypatch.setattr(encoder_module, "BF16_MIN_COSINE", 1.01)  # no cosine reaches it
    with pytest.raises(PrecisionCheckError, match=r"tiny-ms-clip: its bf16 image embeddings differ .*--precision fp32"):
        load_encoder("tiny-ms-clip", device="cpu", precision="bf16")
    assert load_encoder("tiny-ms-clip", device="cpu", precision="fp32").precision == "fp32"  # fp32 is not checked


def test_bf16_is_refused_for_weights_bf16_cannot_represent():
    """A common 1000 on every patch-embedding weight: fp32 keeps the 0.02-sized weights beside it, bf16 (8
    significant bits, steps of 4 at 1000) rounds them away, and what is left is removed by the layer norm."""
    encoder = load_encoder("tiny-ms-clip", device="cpu", precision="bf16")
    with torch.no_grad():
        encoder.model.visual.conv1.weight += 1000.0
    assert encoder.bf16_agreement() < 0.99
    with pytest.raises(PrecisionCheckError, match=r"lowest cosine 0\.9\d+ on the probe tiles, below 0\.999"):
        encoder.check_bf16()
