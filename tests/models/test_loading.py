"""Strict loading of both families: a full-size Llama3-MS-CLIP release file, its broken variants, the hub
cache while offline, local checkpoints, and pre-fetching."""

import dataclasses
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from msearch.models import CardError, ModelNotAvailableError, get_card, load_encoder
from msearch.models.hub import hub_file
from msearch.models.loading import download_weights, msclip_state_dict, weights_status
from tests.conftest import HF_CACHE
from tests.tiny_models import RSMCLIP_REPO, TINY_MSCLIP_REPO, XLMR_REPO, build_msclip, msclip_release_state_dict

TEN_LANGUAGES = {
    "en": "a satellite image of a forest",
    "pt": "imagem de satélite de uma floresta",
    "es": "imagen de satélite de un bosque",
    "fr": "image satellite d'une forêt",
    "de": "Satellitenbild eines Waldes",
    "nl": "satellietbeeld van een bos",
    "it": "immagine satellitare di una foresta",
    "zh": "森林的卫星图像",
    "ko": "숲의 위성 이미지",
    "ru": "спутниковый снимок леса",
}


# -- a full-size Llama3-MS-CLIP checkpoint in the release layout (random weights) --------------------------


@pytest.fixture(scope="module")
def full_release() -> dict[str, torch.Tensor]:
    """ViT-B/16 with a 10-channel conv1, stored three times under the release prefixes plus `temperature`."""
    return msclip_release_state_dict(build_msclip(open_clip.get_model_config("ViT-B-16")))


@pytest.fixture
def release_file(tmp_path):
    """Saves a state dict as the release file; deleted after the test (each is ~600 MB)."""
    path = tmp_path / "Llama3_MS_CLIP_weights.pt"
    yield lambda state: torch.save(state, path) or path
    path.unlink(missing_ok=True)


def test_full_size_release_file_loads_strictly(full_release, release_file):
    path = release_file(full_release)
    assert 550e6 < path.stat().st_size < 650e6  # the three prefixes share storage, as in the real release
    encoder = load_encoder("llama3-ms-clip-base", checkpoint=path)

    loaded = encoder.model.state_dict()
    prefix = "clip_base_model.model."
    assert set(loaded) == {key[len(prefix) :] for key in full_release if key.startswith(prefix)}
    for key, value in loaded.items():
        assert torch.equal(value, full_release[prefix + key]), key
    assert encoder.model.visual.conv1.weight.shape == (768, 10, 16, 16)
    assert encoder.dim == 512 and encoder.context_length == 77
    assert encoder.weights_path == path

    image = encoder.encode_images(torch.zeros(1, 10, 224, 224))
    text = encoder.encode_texts(["Agricultural fields in a rural area"])
    assert image.shape == text.shape == (1, 512)
    assert np.linalg.norm(image[0]) == pytest.approx(1.0, abs=1e-5)


def _without(state, key_end):
    return {k: v for k, v in state.items() if not k.endswith(key_end)}


def _conv1_with(state, channels):
    conv1 = torch.zeros(768, channels, 16, 16)
    return {k: (conv1 if k.endswith("model.visual.conv1.weight") else v) for k, v in state.items()}


@pytest.mark.parametrize(
    "variant, problem",
    [
        (lambda s: _without(s, "model.visual.proj"), "has missing keys: visual.proj"),
        (
            lambda s: {**s, "clip_base_model.model.visual.head.weight": torch.zeros(2)},
            "has unexpected keys: visual.head.weight",
        ),
        (
            lambda s: _conv1_with(s, 3),
            "wrong shapes: visual.conv1.weight is [768, 3, 16, 16] in the file, the model needs [768, 10, 16, 16]",
        ),
    ],
    ids=["missing-key", "unexpected-key", "conv1-3-channels"],
)
def test_mismatched_release_file_is_an_error_naming_problem_and_file(full_release, release_file, variant, problem):
    path = release_file(variant(full_release))
    with pytest.raises(ModelNotAvailableError) as raised:
        load_encoder("llama3-ms-clip-base", checkpoint=path)
    message = str(raised.value)
    assert problem in message
    assert f"weights file {path} does not match the card (ViT-B-16, 10 input bands)" in message


@pytest.mark.parametrize(
    "variant, unexpected",
    [
        (lambda s: {**s, "optimizer.step": torch.zeros(())}, "optimizer.step"),
        (
            lambda s: _without(s, "clip_base_model.model.visual.proj"),
            "image_encoder.model.visual.proj, text_encoder.model.visual.proj",
        ),
        (
            lambda s: {**s, "image_encoder.model.visual.conv1.weight": torch.zeros(768, 12, 16, 16)},
            "image_encoder.model.visual.conv1.weight",
        ),
    ],
    ids=["outside-the-prefixes", "only-in-the-copies", "copy-of-another-shape"],
)
def test_release_copies_must_duplicate_the_main_prefix(full_release, variant, unexpected):
    """The second and third prefixes may hold only duplicates of the first; anything else is unexpected."""
    card = get_card("llama3-ms-clip-base")
    path = Path("Llama3_MS_CLIP_weights.pt")  # only named in the message
    with pytest.raises(ModelNotAvailableError) as raised:
        msclip_state_dict(variant(full_release), path, card)
    assert f"weights file {path} does not match the card" in str(raised.value)
    assert f"it has unexpected keys: {unexpected}. " in str(raised.value)


def test_truncated_weights_file_is_a_clear_error(tmp_path):
    cached = hub_file(TINY_MSCLIP_REPO, "Llama3_MS_CLIP_weights.pt", what="test")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(cached.read_bytes()[: cached.stat().st_size // 2])
    with pytest.raises(
        ModelNotAvailableError, match=rf"tiny-ms-clip: cannot read weights file {re.escape(str(truncated))} .*truncated"
    ):
        load_encoder("tiny-ms-clip", checkpoint=truncated)


def test_missing_checkpoint_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(
        ModelNotAvailableError, match=rf"tiny-ms-clip: weights file {re.escape(str(missing))} does not exist"
    ):
        load_encoder("tiny-ms-clip", checkpoint=missing)
    with pytest.raises(
        ModelNotAvailableError, match=rf"rs-m-clip: checkpoint {re.escape(str(missing))} does not exist"
    ):
        load_encoder("rs-m-clip", checkpoint=missing)


def test_checkpoint_folder_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(
        ModelNotAvailableError,
        match=rf"rs-m-clip: no weights \(open_clip_model.safetensors, open_clip_pytorch_model.bin\) in {re.escape(str(tmp_path))}",
    ):
        load_encoder("rs-m-clip", checkpoint=tmp_path)


# -- the hub cache while offline --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "card, repo",
    [
        ("llama3-ms-clip-base", "ibm-esa-geospatial/Llama3-MS-CLIP-base"),
        ("openclip-vit-b-16-laion2b", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K"),
    ],
)
def test_uncached_card_fails_fast_offline(card, repo):
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError) as raised:
        load_encoder(card)
    assert time.perf_counter() - start < 2.0
    message = str(raised.value)
    assert f"of hf-hub:{repo} is not in the Hugging Face cache ({HF_CACHE})" in message
    assert "HF_HUB_OFFLINE=1 forbids downloading it" in message and "--checkpoint PATH" in message


def test_rs_m_clip_loads_from_hub_cache_and_encodes_ten_languages(tiny_rsmclip):
    card = get_card("rs-m-clip")
    assert set(TEN_LANGUAGES) == set(card.languages)
    assert tiny_rsmclip.weights_path.is_relative_to(HF_CACHE / f"models--{RSMCLIP_REPO.replace('/', '--')}")

    texts = [TEN_LANGUAGES[language] for language in card.languages]
    tokens = tiny_rsmclip.tokenizer(texts)
    special_or_unknown = {0, 1, 2, 3}  # <s> <pad> </s> <unk>: every text must have real word pieces
    assert all(set(row.tolist()) - special_or_unknown for row in tokens)
    vectors = tiny_rsmclip.encode_texts(texts)
    assert vectors.shape == (10, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[~np.eye(10, dtype=bool)].max() < 1 - 1e-4  # ten different texts, ten different vectors


def test_open_clip_checkpoint_as_local_folder(tiny_rsmclip, tmp_path):
    folder = tmp_path / "rs-m-clip"
    shutil.copytree(tiny_rsmclip.weights_path.parent, folder)  # the snapshot's links become plain files
    assert (
        json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]["hf_model_name"]
        == XLMR_REPO
    )
    local = load_encoder("rs-m-clip", checkpoint=folder)
    assert local.weights_path == folder / "open_clip_model.safetensors"
    assert local.identity == tiny_rsmclip.identity  # same bytes, same digest
    texts = list(TEN_LANGUAGES.values())
    np.testing.assert_allclose(local.encode_texts(texts), tiny_rsmclip.encode_texts(texts), atol=1e-6)


# -- weights status and pre-fetching ----------------------------------------------------------------------


def test_weights_status():
    assert weights_status(get_card("tiny-ms-clip")) == "cached"
    assert weights_status(get_card("rs-m-clip")) == "cached"
    assert weights_status(get_card("llama3-ms-clip-base")) == "not downloaded"
    assert weights_status(get_card("openclip-vit-b-16-laion2b")) == "not downloaded"


def test_local_only_ms_clip_card_needs_a_checkpoint():
    card = dataclasses.replace(get_card("tiny-ms-clip"), name="local-ms-clip", weights={})
    assert card.weights_source == "local file (--checkpoint)"
    assert weights_status(card) == "local only"
    with pytest.raises(
        ModelNotAvailableError, match="local-ms-clip: the card names no hub repository; pass --checkpoint PATH"
    ):
        load_encoder(card)
    cached = hub_file(TINY_MSCLIP_REPO, "Llama3_MS_CLIP_weights.pt", what="test")
    assert load_encoder(card, checkpoint=cached).identity.weights_sha256 == cached.resolve().name


def test_download_weights_finds_every_file_a_card_needs_in_the_cache():
    (msclip,) = download_weights(get_card("tiny-ms-clip"))
    assert msclip == hub_file(TINY_MSCLIP_REPO, "Llama3_MS_CLIP_weights.pt", what="test")
    names = [path.name for path in download_weights(get_card("rs-m-clip"))]
    assert names[0] == "open_clip_model.safetensors"
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= set(names[1:])
    with pytest.raises(ModelNotAvailableError, match="HF_HUB_OFFLINE=1 forbids downloading it"):
        download_weights(get_card("llama3-ms-clip-base"))


def test_unknown_open_clip_architecture_is_a_card_error(tmp_path):
    card = dataclasses.replace(get_card("rs-m-clip"), name="bad-arch", architecture="ViT-Z-99", weights={})
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(CardError, match="bad-arch: open_clip knows no architecture 'ViT-Z-99'"):
        load_encoder(card, checkpoint=weights)
