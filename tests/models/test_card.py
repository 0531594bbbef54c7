import json
from importlib import resources

import pytest

from msearch.models.card import CardError, ModelCard, available_cards, get_card
from tests.conftest import CARD_DIR

BUILT_IN = ("llama3-ms-clip-base", "openclip-vit-b-16-laion2b", "rs-m-clip")


def test_built_in_cards_load_with_their_recipes():
    cards = available_cards()
    assert set(BUILT_IN) <= set(cards)
    msclip = cards["llama3-ms-clip-base"]
    assert msclip.family == "ms-clip" and msclip.source == "built-in"
    assert msclip.input.bands == ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
    assert msclip.input.mean[0] == pytest.approx(925.161) and msclip.input.std[-1] == pytest.approx(1365.08)
    assert msclip.input.scale == {"kind": "dn"} and msclip.input.remove_offset
    assert msclip.weights_source == "hf-hub:ibm-esa-geospatial/Llama3-MS-CLIP-base/Llama3_MS_CLIP_weights.pt"
    rsm = cards["rs-m-clip"]
    assert rsm.family == "open_clip" and rsm.input.bands == ("B04", "B03", "B02")
    assert rsm.languages == ("en", "pt", "es", "fr", "de", "nl", "it", "zh", "ko", "ru")
    assert rsm.weights_source == "hf-hub:joaodaniel/RS-M-CLIP"
    assert cards["openclip-vit-b-16-laion2b"].weights_source == "open_clip:ViT-B-16/laion2b_s34b_b88k"


def test_user_card_in_card_folder_is_found_by_name():
    card = get_card("tiny-ms-clip")
    assert card.source == str(CARD_DIR / "tiny-ms-clip.json")
    assert card.family == "ms-clip" and card.embed_dim == 64
    assert card.architecture_name == "tiny-ViT"


def test_user_card_replaces_built_in_card_of_same_name(tmp_path, monkeypatch):
    data = _card_data()
    data["description"] = "my own weights"
    (tmp_path / "mine.json").write_text(json.dumps(data))
    monkeypatch.setenv("MSEARCH_CARDS", str(tmp_path))
    card = get_card("llama3-ms-clip-base")
    assert card.description == "my own weights" and card.source == str(tmp_path / "mine.json")


def test_card_given_by_path(tmp_path):
    data = _card_data()
    data["name"] = "from-a-path"
    path = tmp_path / "somewhere.json"
    path.write_text(json.dumps(data))
    card = get_card(str(path))
    assert card.name == "from-a-path" and card.source == str(path)
    assert get_card(path).name == "from-a-path"


def test_unknown_card_name_lists_known_ones():
    with pytest.raises(CardError, match=r"unknown model 'no-such-model'; known: .*llama3-ms-clip-base.*rs-m-clip"):
        get_card("no-such-model")


def test_card_missing_keys_is_named():
    data = _card_data()
    del data["weights"], data["input"]
    with pytest.raises(CardError, match=r"model card test\.json lacks weights, input"):
        ModelCard.from_dict(data, "test.json")


def test_card_mean_std_length_mismatch():
    data = _card_data()
    data["input"]["std"] = data["input"]["std"][:-1]
    with pytest.raises(CardError, match=r"test\.json: 'input' has 10 bands but 10 means and 9 stds"):
        ModelCard.from_dict(data, "test.json")


def test_card_unknown_family():
    data = _card_data()
    data["family"] = "timm"
    with pytest.raises(CardError, match=r"test\.json: family must be one of \('ms-clip', 'open_clip'\), got 'timm'"):
        ModelCard.from_dict(data, "test.json")


def test_card_unknown_band_and_scale():
    data = _card_data()
    data["input"]["bands"][0] = "B13"
    with pytest.raises(CardError, match=r"test\.json: bad 'input' section: 'B13' is not a Sentinel-2 band name"):
        ModelCard.from_dict(data, "test.json")
    data = _card_data()
    data["input"]["scale"] = {"kind": "log"}
    with pytest.raises(CardError, match=r"input scale kind must be one of \('dn', 'linear'\)"):
        ModelCard.from_dict(data, "test.json")


def test_unreadable_card_file_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(CardError, match=rf"cannot read model card {path}"):
        get_card(path)


def _card_data() -> dict:
    """The built-in Llama3-MS-CLIP card file's contents, to vary."""
    return json.loads(resources.files("msearch.models").joinpath("cards", "llama3-ms-clip-base.json").read_text())
