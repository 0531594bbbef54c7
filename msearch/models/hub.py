"""Finding model files: the Hugging Face cache first (no network at all when a file is there), the hub
on first use (with huggingface_hub's progress bars), or local files; and a digest that names the weights."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from msearch.config import cache_dir


class ModelNotAvailableError(RuntimeError):
    """Weights or files that cannot be had: not cached while offline, not on the hub, unreadable, mismatched."""


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_file(
    repo_id: str, filename: str, *, what: str, required: bool = True, model: str | None = None, local: str | None = None
) -> Path | None:
    """A file of a hub repository, from the local cache when it is there, else downloaded and cached.
    `model` (the card's name) and `local` (how to do without the hub) make the advice of errors exact."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    cached = try_to_load_from_cache(repo_id, filename)
    if isinstance(cached, str) and os.path.exists(cached):
        return Path(cached)
    if offline():
        if not required:
            return None
        raise ModelNotAvailableError(
            f"{what}: {filename} of hf-hub:{repo_id} is not in the Hugging Face cache "
            f"({_cache_location()}) and HF_HUB_OFFLINE=1 forbids downloading it. Run once with network access "
            f"(`msearch models --download {model or 'NAME'}`), copy the cache from a machine that has it, or "
            f"{local or _local_weights_advice(model)}."
        )
    unreachable = hub_unreachable()
    try:
        if unreachable:
            raise LocalEntryNotFoundError(unreachable)
        return Path(hf_hub_download(repo_id, filename))
    # LocalEntryNotFoundError subclasses EntryNotFoundError: it must be told apart first
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        if isinstance(exc, EntryNotFoundError) and not isinstance(exc, LocalEntryNotFoundError):
            if not required:
                return None
            raise ModelNotAvailableError(f"{what}: hf-hub:{repo_id} has no file {filename}") from None
        raise ModelNotAvailableError(
            f"{what}: could not download {filename} from hf-hub:{repo_id} ({exc}). Check the network, or set "
            f"HF_HUB_OFFLINE=1 and use cached weights, or {local or _local_weights_advice(model)}."
        ) from exc


def _local_weights_advice(model: str | None) -> str:
    # --checkpoint names the weights of one model, so it goes with --model (a query names the space instead).
    card = model or "NAME"
    return (
        f"use local weights: `--model {card} --checkpoint PATH` (`msearch query`: `--checkpoint {card}=PATH`; "
        f"README, Offline)"
    )


HUB_PROBE_SECONDS = 3.0


def hub_unreachable() -> str | None:
    """Why the hub cannot be reached, or None. One quick connection attempt: huggingface_hub itself retries
    an unreachable host for about 23 s before giving up, far too long for a machine that is simply offline."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=HUB_PROBE_SECONDS).close()
    except OSError as exc:
        return f"cannot connect to {url.hostname}:{port}: {exc}"
    return None


def is_cached(repo_id: str, filename: str) -> bool:
    """Whether the cache holds the file at the revision `main` points to. Read from the cache's documented
    layout (models--ORG--NAME/refs/main, snapshots/REVISION/FILE) rather than with huggingface_hub's
    try_to_load_from_cache, whose import (its HTTP client) costs `msearch models` 0.4 s."""
    from huggingface_hub import constants  # cheap: the package itself loads lazily

    repo = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    try:
        revision = (repo / "refs" / "main").read_text().strip()
    except OSError:
        revision = "main"  # a snapshot saved under the branch name itself
    return (repo / "snapshots" / revision / filename).is_file()


def _cache_location() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def weights_digest(path: Path) -> str:
    """sha256 of a weights file. Hub blobs are named by their sha256, so cached hub weights cost nothing;
    local files are hashed once and remembered by (path, size, mtime) in msearch's cache."""
    blob = Path(os.path.realpath(path))
    if _SHA256_RE.match(blob.name):
        return blob.name
    stat = blob.stat()
    key = f"{blob}|{stat.st_size}|{stat.st_mtime_ns}"
    memo_path = cache_dir() / "digests.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return memo[key]
    sha = hashlib.sha256()
    with open(blob, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            sha.update(chunk)
    memo[key] = sha.hexdigest()
    try:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, memo_path)
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return memo[key]
