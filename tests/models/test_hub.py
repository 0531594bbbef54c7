import hashlib
import json

from msearch.models.hub import hub_file, is_cached, weights_digest
from tests.conftest import HF_CACHE
from tests.tiny_models import RSMCLIP_REPO, TINY_MSCLIP_REPO


def test_cached_hub_file_digest_is_its_blob_sha256():
    path = hub_file(RSMCLIP_REPO, "open_clip_model.safetensors", what="test")
    assert path.is_symlink() and path.is_relative_to(HF_CACHE)
    blob_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.resolve().name == blob_sha
    assert weights_digest(path) == blob_sha


def test_local_file_digest_is_sha256_of_its_bytes_and_is_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("MSEARCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "weights.pt"
    path.write_bytes(b"not really weights" * 1000)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert weights_digest(path) == expected
    memo = json.loads((tmp_path / "cache" / "digests.json").read_text())
    assert list(memo.values()) == [expected]
    path.write_bytes(b"other bytes")  # a new size and mtime: hashed again, not taken from the memo
    assert weights_digest(path) == hashlib.sha256(b"other bytes").hexdigest()


def test_optional_file_missing_offline_is_none():
    assert hub_file(TINY_MSCLIP_REPO, "no-such-file.json", what="test", required=False) is None
    assert is_cached(TINY_MSCLIP_REPO, "Llama3_MS_CLIP_weights.pt")
    assert not is_cached("ibm-esa-geospatial/Llama3-MS-CLIP-base", "Llama3_MS_CLIP_weights.pt")


def test_an_unreachable_hub_fails_at_once_with_a_network_message(monkeypatch):
    """Not offline by setting, but with no route to the hub (a closed port on loopback)."""
    import time

    import pytest
    from huggingface_hub import constants

    from msearch.models.hub import ModelNotAvailableError, hub_file

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    started = time.perf_counter()
    with pytest.raises(ModelNotAvailableError, match="could not download .*Check the network"):
        hub_file("nobody/nothing", "weights.pt", what="test")
    assert time.perf_counter() - started < 5
