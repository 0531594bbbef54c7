"""Text bridges between encoder spaces, kept in the index beside the spaces they join.

A bridge is a linear map from one space's text embeddings to another's (fitted by `msearch align`): a
Portuguese query encoded by RS-M-CLIP's text tower, mapped, searches the multispectral space. It is tied to
both encoders' identities (card + weights sha256) and is never applied to vectors of other weights.

Layout:
    <index>/bridges/<from>--<to>/bridge.json    identities, method, fit quality (held-out cosines)
    <index>/bridges/<from>--<to>/map.npy        float32 (dim_from, dim_to)
    <index>/bridges/<from>--<to>/routes.json    a stored route comparison per language (`eval --save-routes`)

Files are written under a temporary name and renamed, so a reader sees a whole bridge or none.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from msearch.schema.manifest import SpaceManifest

BRIDGES_DIR = "bridges"
BRIDGE_FILE = "bridge.json"
MAP_FILE = "map.npy"
ROUTES_FILE = "routes.json"
# How a query beyond English reaches the index: its own multilingual RGB space (rgb), carried into the
# multispectral space by the bridge (bridge), or both merged by reciprocal rank fusion (fuse).
ROUTES = ("rgb", "bridge", "fuse")
# The routes whose scores lie in one space: what a change or a timeline compares scores in (a fused ranking is
# merged by rank and has no scores to compare).
ONE_SPACE_ROUTES = ("rgb", "bridge")


class BridgeMismatchError(RuntimeError):
    """A bridge fitted for other encoder weights than the spaces it would join now hold."""


@dataclass
class Bridge:
    from_space: str
    to_space: str
    from_identity: str  # card@sha256:<full digest>
    to_identity: str
    method: str  # ridge | procrustes
    matrix: np.ndarray = field(repr=False)  # (dim_from, dim_to); a query maps as normalise(x @ matrix)
    ridge_lambda: float | None = None
    quality: dict = field(default_factory=dict)  # held-out cosines, corpus size, per-language translation cosines

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Rows mapped into the target space and L2-normalised (cosine is what the target space scores)."""
        mapped = np.asarray(vectors, dtype=np.float32) @ self.matrix
        return mapped / np.maximum(np.linalg.norm(mapped, axis=-1, keepdims=True), 1e-12)


def identity_of(manifest: SpaceManifest) -> str:
    return f"{manifest.card}@sha256:{manifest.weights_sha256}"


def bridge_dir(index_dir: Path, from_space: str, to_space: str) -> Path:
    return Path(index_dir) / BRIDGES_DIR / f"{from_space}--{to_space}"


def _write_atomically(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save_bridge(index_dir: Path, bridge: Bridge) -> Path:
    """Write a bridge (the map first, then its description, which is what makes it visible). A bridge fitted
    anew makes the stored route comparison stale, so that is removed."""
    folder = bridge_dir(index_dir, bridge.from_space, bridge.to_space)
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomically(folder / MAP_FILE, lambda h: np.save(h, np.ascontiguousarray(bridge.matrix, np.float32)))
    description = {k: v for k, v in asdict(bridge).items() if k != "matrix"}
    description["dims"] = list(bridge.matrix.shape)
    _write_atomically(
        folder / BRIDGE_FILE, lambda h: h.write(json.dumps(description, indent=2, ensure_ascii=False).encode())
    )
    (folder / ROUTES_FILE).unlink(missing_ok=True)
    return folder


def bridges(index_dir: Path) -> list[Bridge]:
    """Every bridge stored in an index (maps loaded lazily is not worth it: they are 1 MB at most)."""
    folder = Path(index_dir) / BRIDGES_DIR
    found = []
    if folder.is_dir():
        for sub in sorted(folder.iterdir()):
            if (sub / BRIDGE_FILE).exists() and (sub / MAP_FILE).exists():
                description = json.loads((sub / BRIDGE_FILE).read_text(encoding="utf-8"))
                description.pop("dims", None)
                found.append(Bridge(**description, matrix=np.load(sub / MAP_FILE)))
    return found


def check_bridge(bridge: Bridge, manifests: dict[str, SpaceManifest]) -> None:
    """Refuse a bridge whose spaces are gone or now hold vectors of other weights."""
    for space, identity in ((bridge.from_space, bridge.from_identity), (bridge.to_space, bridge.to_identity)):
        if space not in manifests:
            raise BridgeMismatchError(
                f"the bridge {bridge.from_space} -> {bridge.to_space} joins space {space!r}, "
                f"which this index no longer has"
            )
        if identity_of(manifests[space]) != identity:
            raise BridgeMismatchError(
                f"the bridge {bridge.from_space} -> {bridge.to_space} was fitted for {identity[:60]}, but space "
                f"{space!r} now holds {identity_of(manifests[space])[:60]}: run `msearch align` again"
            )


def save_routes(index_dir: Path, bridge: Bridge, comparison: dict) -> None:
    """Store a route comparison (per language: mAP of each route, the query set, the chosen route)."""
    folder = bridge_dir(index_dir, bridge.from_space, bridge.to_space)
    payload = {"from_identity": bridge.from_identity, "to_identity": bridge.to_identity, **comparison}
    _write_atomically(folder / ROUTES_FILE, lambda h: h.write(json.dumps(payload, indent=2).encode()))


def load_routes(index_dir: Path, bridge: Bridge) -> dict | None:
    """The stored route comparison of a bridge, or None (also when it was measured with another bridge)."""
    path = bridge_dir(index_dir, bridge.from_space, bridge.to_space) / ROUTES_FILE
    if not path.exists():
        return None
    routes = json.loads(path.read_text(encoding="utf-8"))
    if (routes.get("from_identity"), routes.get("to_identity")) != (bridge.from_identity, bridge.to_identity):
        return None
    return routes


def stored_route(index_dir: Path, bridge: Bridge, lang: str, among: tuple[str, ...] = ROUTES) -> tuple[str, str]:
    """(route, why) for a language the bridge carries: what the stored route comparison found best, else rgb.
    `among` narrows the choice (ONE_SPACE_ROUTES): when the comparison chose a route outside it, the best
    inside it by the stored mAP, ties going to rgb as the comparison's own choice does."""
    routes = load_routes(index_dir, bridge)
    measured = (routes or {}).get("languages", {}).get(lang)
    if not measured:
        return "rgb", "no stored route comparison for this language (`msearch eval QUERIES --routes --save-routes`)"
    scores = ", ".join(f"{route} {measured[route]:.3f}" for route in ROUTES if route in measured)
    why = f"mAP@{routes.get('k', 100)} on {routes.get('queryset', '?')}: {scores}"
    if measured["chosen"] in among:
        return measured["chosen"], why
    scored = [route for route in among if route in measured]
    if not scored:
        return "rgb", f"the stored comparison chose {measured['chosen']} and scored none of {', '.join(among)}"
    best = max(scored, key=lambda route: (measured[route], route == "rgb"))
    return best, f"{why}; {measured['chosen']} was chosen, {best} is the best of {', '.join(among)}"
