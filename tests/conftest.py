"""Test setup: no network, state in temporary folders, tiny models of both families in a Hugging Face cache.

The environment is set before anything imports huggingface_hub (it reads these variables at import)."""

import os
import shutil
import tempfile
from pathlib import Path

_STATE = Path(tempfile.mkdtemp(prefix="msearch-tests-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = str(_STATE / "hf")
os.environ["HF_HUB_CACHE"] = str(_STATE / "hf" / "hub")
os.environ["MSEARCH_CACHE"] = str(_STATE / "msearch-cache")
os.environ["MSEARCH_CARDS"] = str(_STATE / "cards")
os.environ.pop("MSEARCH_INDEX", None)

import pytest  # noqa: E402

from tests import tiny_models  # noqa: E402

# ../shared/data beside the repository; from a git worktree nested deeper, the nearest ancestor that has it.
_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = next(
    (p / "shared" / "data" for p in _ROOT.parents if (p / "shared" / "data").is_dir()), _ROOT.parent / "shared" / "data"
)
HF_CACHE = Path(os.environ["HF_HUB_CACHE"])
CARD_DIR = Path(os.environ["MSEARCH_CARDS"])


def pytest_configure(config):
    """Tiny models are cheap (well under a second each): build them once for the whole session."""
    HF_CACHE.mkdir(parents=True, exist_ok=True)
    CARD_DIR.mkdir(parents=True, exist_ok=True)
    tiny_models.tiny_msclip_card(CARD_DIR)
    tiny_models.save_tiny_msclip(HF_CACHE)
    tiny_models.save_tiny_rsmclip(HF_CACHE)


def pytest_unconfigure(config):
    shutil.rmtree(_STATE, ignore_errors=True)  # the tiny models, caches and text-tower exports of this run


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the sample tiles are not here ({SHARED_DATA}); they sit beside the repository in CI")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_msclip():
    from msearch.models import load_encoder

    return load_encoder("tiny-ms-clip")


@pytest.fixture(scope="session")
def tiny_rsmclip():
    from msearch.models import load_encoder

    return load_encoder("rs-m-clip")
