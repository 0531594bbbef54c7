import json
import os

from typer.testing import CliRunner

from msearch.cli import app
from msearch.models.hub import hub_file
from tests.conftest import CARD_DIR
from tests.tiny_models import TINY_MSCLIP_REPO

runner = CliRunner()


def test_models_json_lists_every_card_with_its_status():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    entries = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert {name: entry["status"] for name, entry in entries.items()} == {
        "llama3-ms-clip-base": "not downloaded",
        "openclip-vit-b-16-laion2b": "not downloaded",
        "rs-m-clip": "cached",
        "tiny-ms-clip": "cached",
    }
    assert entries["rs-m-clip"]["languages"] == ["en", "pt", "es", "fr", "de", "nl", "it", "zh", "ko", "ru"]
    assert entries["llama3-ms-clip-base"]["bands"][-3:] == ["B8A", "B11", "B12"]
    assert (
        entries["llama3-ms-clip-base"]["weights_source"]
        == "hf-hub:ibm-esa-geospatial/Llama3-MS-CLIP-base/Llama3_MS_CLIP_weights.pt"
    )
    assert entries["tiny-ms-clip"]["card_source"] == str(CARD_DIR / "tiny-ms-clip.json")


def test_models_table_shows_names_and_statuses():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    rows = {
        line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│ ") and line.split()[1] != "│"
    }
    assert set(rows) == {"llama3-ms-clip-base", "openclip-vit-b-16-laion2b", "rs-m-clip", "tiny-ms-clip"}
    assert rows["tiny-ms-clip"].rstrip(" │").endswith("cached")
    assert rows["llama3-ms-clip-base"].rstrip(" │").endswith("not downloaded")


def test_card_without_hub_weights_is_local_only(tmp_path, monkeypatch):
    card = json.loads((CARD_DIR / "tiny-ms-clip.json").read_text())
    card.update(name="my-finetune", weights={})
    (tmp_path / "my-finetune.json").write_text(json.dumps(card))
    monkeypatch.setenv("MSEARCH_CARDS", os.pathsep.join([str(CARD_DIR), str(tmp_path)]))
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    statuses = {entry["name"]: entry["status"] for entry in json.loads(result.stdout)}
    assert statuses["my-finetune"] == "local only"
    assert statuses["tiny-ms-clip"] == "cached"


def test_download_of_a_cached_card_names_its_files():
    result = runner.invoke(app, ["models", "--download", "tiny-ms-clip", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "model": "tiny-ms-clip",
        "files": [str(hub_file(TINY_MSCLIP_REPO, "Llama3_MS_CLIP_weights.pt", what="test"))],
    }
    result = runner.invoke(app, ["models", "--download", "rs-m-clip"])
    assert result.exit_code == 0, result.output
    assert "rs-m-clip: weights cached" in result.stdout
    assert "open_clip_model.safetensors" in result.stdout and "tokenizer.json" in result.stdout


def test_download_offline_or_unknown_is_an_error():
    result = runner.invoke(app, ["models", "--download", "llama3-ms-clip-base"])
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())  # rich wraps long lines
    assert "Llama3_MS_CLIP_weights.pt of hf-hub:ibm-esa-geospatial/Llama3-MS-CLIP-base is not in" in message
    assert "HF_HUB_OFFLINE=1 forbids downloading it" in message
    assert "`msearch models --download llama3-ms-clip-base`" in message
    # --checkpoint is one model's weights: the advice says which --model it goes with
    assert "`--model llama3-ms-clip-base --checkpoint PATH`" in message
    assert "`--checkpoint llama3-ms-clip-base=PATH`" in message
    result = runner.invoke(app, ["models", "--download", "no-such-model"])
    assert result.exit_code == 2 and "unknown model 'no-such-model'" in result.stderr  # a usage error
