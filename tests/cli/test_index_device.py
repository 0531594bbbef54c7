"""`msearch index --device/--precision` through the command line: errors before anything is written, the
precision recorded in each space's manifest, and what the run summary and `msearch info` say."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from msearch.models import encoder as encoder_module
from msearch.schema.manifest import SpaceManifest
from tests.cli.test_index import cli
from tests.indexer.helpers import copy_eurosat, vectors_by_key

TINY = ["--model", "tiny-ms-clip", "--band-order", "eurosat", "--workers", "0"]


@pytest.fixture
def eurosat4(shared_data, tmp_path):
    src = tmp_path / "eurosat"
    copy_eurosat(shared_data, src)
    return src


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--device", "gpu"], "--device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        (["--device", "cuda:x"], "--device must be auto, cpu, cuda or cuda:N, got 'cuda:x'"),
        (["--precision", "fp16"], "--precision must be one of fp32, bf16, got 'fp16'"),
    ],
)
def test_bad_device_or_precision_names_exit_2(eurosat4, tmp_path, option, message):
    result = cli("index", eurosat4, "--index", tmp_path / "index", *TINY, *option)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "index").exists()


def test_cuda_where_torch_sees_none_exits_2_before_anything_is_written(eurosat4, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: --device cuda is not an error here")  # CI has none
    for device in ("cuda", "cuda:1"):
        result = cli("index", eurosat4, "--index", tmp_path / "index", *TINY, "--device", device)
        assert result.exit_code == 2, result.output
        assert f"--device {device}: torch sees no CUDA device" in " ".join(result.output.split()) or (
            "this torch build has no CUDA support" in result.output
        )
        assert "use --device cpu" in " ".join(result.output.split())
        assert not (tmp_path / "index").exists()  # no catalogue, no run row, no space


def test_bf16_run_records_its_precision_and_an_fp32_run_adds_its_own(shared_data, tmp_path, tiny_msclip):
    archive, index = tmp_path / "eurosat", tmp_path / "index"
    copy_eurosat(shared_data, archive, per_class=1, classes=["Forest", "River"])
    result = cli("index", archive, "--index", index, *TINY, "--device", "auto", "--precision", "bf16")
    assert result.exit_code == 0, result.output
    assert "encoders ran on cpu (tiny-ms-clip bf16)" in result.output
    manifest = SpaceManifest.read(index / "spaces" / "tiny-ms-clip")
    assert manifest.precisions == ["bf16"]

    # bf16 vectors, within the checked agreement of the fp32 ones
    stored = vectors_by_key(index, "tiny-ms-clip")
    from msearch.indexer.readers import discover, read_tile
    from msearch.indexer.tiles import ReadSettings
    from msearch.schema.bands import parse_band_order

    settings = ReadSettings(band_order=parse_band_order("eurosat"))
    sources = discover([archive], settings).sources
    exact = tiny_msclip.encode_pixels([read_tile(s, settings).pixels for s in sources])
    reduced = np.stack([stored[s.key] for s in sources])
    assert np.sum(exact * reduced, axis=1).min() >= 0.999 and np.abs(exact - reduced).max() > 0

    copy_eurosat(shared_data, archive, per_class=1, classes=["SeaLake"])
    result = cli("index", archive, "--index", index, *TINY, "--precision", "fp32")
    assert result.exit_code == 0, result.output
    assert "indexed 1, unchanged 2" in result.output
    assert SpaceManifest.read(index / "spaces" / "tiny-ms-clip").precisions == ["bf16", "fp32"]

    report = json.loads(cli("info", "--index", index, "--json").stdout)
    assert report["spaces"][0]["precisions"] == ["bf16", "fp32"]
    assert report["last_run"]["summary"]["device"] == "cpu"
    assert report["last_run"]["summary"]["precisions"] == {"tiny-ms-clip": "fp32"}
    text = cli("info", "--index", index).output
    assert "vectors written in: tiny-ms-clip bf16+fp32" in text
    assert "its encoders ran on cpu (tiny-ms-clip fp32)" in text


def test_manifest_written_before_precisions_were_recorded_reads_as_fp32(tmp_path):
    folder = tmp_path / "space"
    SpaceManifest(space="s", card="c", weights_sha256="0" * 64, dim=8).write(folder)
    data = json.loads((folder / "manifest.json").read_text())
    del data["precisions"]
    (folder / "manifest.json").write_text(json.dumps(data))
    assert SpaceManifest.read(folder).precisions == ["fp32"]


def test_bf16_refused_by_its_check_exits_2_and_embeds_nothing(eurosat4, tmp_path, monkeypatch):
    monkeypatch.setattr(encoder_module, "BF16_MIN_COSINE", 1.01)
    index = tmp_path / "index"
    result = cli("index", eurosat4, "--index", index, *TINY, "--precision", "bf16")
    assert result.exit_code == 2
    assert "its bf16 image embeddings differ from its fp32 ones" in " ".join(result.output.split())
    assert "--precision fp32" in " ".join(result.output.split())
    assert not (index / "spaces" / "tiny-ms-clip").exists()
