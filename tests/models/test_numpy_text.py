"""The torch-free text path: tokenizers that give open_clip's ids, numpy towers that give the torch towers'
embeddings, and exports that are written only when they do, and used only while whole."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from msearch.models import load_encoder, load_text_encoder
from msearch.models.loading import _hf_text_folder
from msearch.models.numpy_text import (
    EXPORTED_WEIGHTS,
    TOWER_FILE,
    erf,
    load_numpy_text_encoder,
    tower_dir,
)
from msearch.models.numpy_text_export import TowerExportError, export_numpy_text
from msearch.models.text_tokenizers import ClipBpeTokenizer, JsonTokenizer
from tests.models.test_loading import TEN_LANGUAGES

TEXTS = [
    "a satellite image of flooded farmland.",
    "Flooded   FARMLAND\tnear the river's delta; it's 2 km wide",
    "",
    "   ",
    "42",
    "NDVI > 0.8 & cloud < 10%",
    "Ships &amp; boats in a harbour &lt;port&gt;",
    "cafÃ© by the seaside",  # mojibake that ftfy repairs
    "“quoted” — dashes… and emoji 🌊🛰️",
    "don't we'll they've I'm she'd",
    "ÆØÅ ß ŒUVRE ﬁne",
    *TEN_LANGUAGES.values(),
    "dense forest " * 40,  # cut at 77 tokens
    "x" * 400,
]


def test_erf_is_within_a_float32_rounding_step_of_the_exact_function():
    x = np.linspace(-6, 6, 24_001)
    exact = np.array([math.erf(v) for v in x])
    assert np.abs(erf(x) - exact).max() < 1.5e-7
    assert erf(np.array([0.0]))[0] == pytest.approx(0, abs=1e-9)


def test_the_clip_bpe_tokenizer_gives_open_clip_ids_and_truncation():
    reference = open_clip.SimpleTokenizer()
    ours = ClipBpeTokenizer(open_clip.tokenizer.default_bpe())
    want = reference(TEXTS).tolist()
    got = ours(TEXTS)
    assert [row + [0] * (77 - len(row)) for row in got] == want
    assert [ours.truncates(t) for t in TEXTS] == [len(reference.encode(t)) + 2 > 77 for t in TEXTS]
    assert ours.truncates("dense forest " * 40) and not ours.truncates(TEXTS[0])
    assert got[-2][-1] == ours.eot and len(got[-2]) == 77


def test_the_json_tokenizer_gives_open_clip_hf_tokenizer_ids(tiny_rsmclip):
    folder = _hf_text_folder("xlm-roberta-base", tiny_rsmclip.card)
    reference = open_clip.tokenizer.HFTokenizer(str(folder), context_length=77)
    ours = JsonTokenizer(folder / "tokenizer.json", 77)
    want = reference(TEXTS).tolist()
    got = ours(TEXTS)
    pad = reference.tokenizer.pad_token_id
    assert [row + [pad] * (77 - len(row)) for row in got] == want
    assert [ours.truncates(t) for t in TEXTS] == [tiny_rsmclip.truncates(t) for t in TEXTS]
    assert sum(ours.truncates(t) for t in TEXTS) >= 1


@pytest.fixture
def exported(monkeypatch, tmp_path):
    """Exports go to a fresh cache: each test sees its own."""
    monkeypatch.setenv("MSEARCH_CACHE", str(tmp_path / "cache"))

    def export(model, loader=load_text_encoder):
        encoder = loader(model)
        folder = export_numpy_text(encoder)
        return encoder, folder, load_numpy_text_encoder(encoder.identity.card, encoder.identity.weights_sha256)

    return export


@pytest.mark.parametrize("model", ["tiny-ms-clip", "rs-m-clip"])
@pytest.mark.parametrize("loader", [load_text_encoder, load_encoder])
def test_the_numpy_tower_embeds_as_the_torch_tower(exported, model, loader):
    torch_encoder, folder, numpy_encoder = exported(model, loader)
    want, got = torch_encoder.encode_texts(TEXTS), numpy_encoder.encode_texts(TEXTS)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)
    # the same order of texts by similarity to any vector, here each text's own torch embedding
    assert (np.argsort(-(got @ want.T), axis=1)[:, 0] == np.argsort(-(want @ want.T), axis=1)[:, 0]).all()
    assert [numpy_encoder.truncates(t) for t in TEXTS] == [torch_encoder.truncates(t) for t in TEXTS]
    assert (
        numpy_encoder.identity == torch_encoder.identity
        and numpy_encoder.dim == torch_encoder.dim
        and numpy_encoder.context_length == 77
    )
    check = json.loads((folder / TOWER_FILE).read_text())["check"]
    assert check["texts"] >= 7 and check["max_difference"] < 1e-5
    # one text at a time and in one batch give the same vectors: padding within a batch changes nothing
    np.testing.assert_allclose(np.concatenate([numpy_encoder.encode_texts([t]) for t in TEXTS]), got, atol=1e-6)


def test_a_safetensors_release_is_used_in_place_and_a_pickle_is_exported(exported):
    torch_encoder, folder, _ = exported("rs-m-clip")
    description = json.loads((folder / TOWER_FILE).read_text())
    assert not (folder / EXPORTED_WEIGHTS).exists()
    assert Path(description["weights"]["file"]).samefile(torch_encoder.weights_path)
    assert description["weights"]["prefix"] == "text."
    assert description["architecture"] == "hf-xlm-roberta" and description["config"]["projection"] == "mlp"
    _, folder, _ = exported("tiny-ms-clip")
    description = json.loads((folder / TOWER_FILE).read_text())
    assert description["weights"] == {
        "file": EXPORTED_WEIGHTS,
        "prefix": "",
        "bytes": (folder / EXPORTED_WEIGHTS).stat().st_size,
    }
    assert description["architecture"] == "clip-text" and description["config"]["layers"] == 2


def test_an_export_is_written_once_and_not_used_once_broken(exported):
    encoder, folder, _ = exported("tiny-ms-clip")
    written = (folder / TOWER_FILE).stat().st_mtime_ns
    assert export_numpy_text(encoder) == folder and (folder / TOWER_FILE).stat().st_mtime_ns == written
    card, sha = encoder.identity.card, encoder.identity.weights_sha256
    assert load_numpy_text_encoder(card, "0" * 64) is None  # other weights: nothing exported for them

    with open(folder / EXPORTED_WEIGHTS, "ab") as handle:  # a changed weights file
        handle.write(b"\0")
    assert load_numpy_text_encoder(card, sha) is None
    export_numpy_text(encoder)  # a broken export is replaced
    assert load_numpy_text_encoder(card, sha) is not None

    (folder / "bpe_simple_vocab_16e6.txt.gz").unlink()
    assert load_numpy_text_encoder(card, sha) is None
    shutil.rmtree(folder)
    description = json.loads(json.dumps({"format": 0}))
    folder.mkdir(parents=True)
    (folder / TOWER_FILE).write_text(json.dumps(description))
    assert load_numpy_text_encoder(card, sha) is None  # an older format


def test_a_tower_numpy_cannot_run_is_refused_and_nothing_is_written(exported, monkeypatch, tmp_path):
    encoder = load_text_encoder("tiny-ms-clip")
    encoder.model.transformer.resblocks[0].mlp.gelu = torch.nn.GELU(approximate="tanh")
    with pytest.raises(TowerExportError, match="activation"):
        export_numpy_text(encoder)

    # a difference the description does not see (a layer scale numpy does not apply) fails the check
    encoder = load_text_encoder("tiny-ms-clip")
    encoder.model.transformer.resblocks[1].ls_2 = open_clip.transformer.LayerScale(32, init_values=0.5)
    with pytest.raises(TowerExportError, match="differ"):
        export_numpy_text(encoder)
    folder = tower_dir(encoder.identity.card, encoder.identity.weights_sha256)
    assert not folder.exists() and list(folder.parent.iterdir()) == []  # no scratch folder left either
