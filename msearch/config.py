"""Where msearch keeps state outside the source tree, each with an environment override."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_INDEX_DIR = "msearch-index"


def index_dir(override: str | os.PathLike | None = None) -> Path:
    """The index directory: the argument, else $MSEARCH_INDEX, else ./msearch-index."""
    return Path(override or os.environ.get("MSEARCH_INDEX") or DEFAULT_INDEX_DIR)


def cache_dir() -> Path:
    """msearch's own cache (weight digests, query embeddings): $MSEARCH_CACHE, else ~/.cache/msearch.
    Model weights live in the Hugging Face cache ($HF_HOME / $HF_HUB_CACHE), shared with other tools."""
    root = os.environ.get("MSEARCH_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "msearch"
    return Path(root)


def user_card_dirs() -> list[Path]:
    """Folders of user model cards: $MSEARCH_CARDS (os.pathsep-separated), else ~/.config/msearch/cards."""
    if os.environ.get("MSEARCH_CARDS"):
        return [Path(p) for p in os.environ["MSEARCH_CARDS"].split(os.pathsep) if p]
    config_home = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return [config_home / "msearch" / "cards"]
