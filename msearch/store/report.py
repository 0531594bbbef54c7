"""`msearch info` as a library call: what an index directory holds."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from msearch.models import get_card
from msearch.models.numpy_text import exported_tower
from msearch.schema import catalog
from msearch.store import ann
from msearch.store.bridges import BridgeMismatchError, bridges, check_bridge, stored_route
from msearch.store.catalogue import display_url
from msearch.store.index_store import IndexStore, ann_info


def index_report(index=None, with_problems: bool = False, catalogue: str | None = None) -> dict:
    store = IndexStore(index, create=False, catalogue=catalogue)
    size = sum(f.stat().st_size for f in store.directory.rglob("*") if f.is_file())
    with store.engine.connect() as conn:
        counts = {
            space: n
            for space, n in conn.execute(
                select(catalog.vectors.c.space, func.count()).group_by(catalog.vectors.c.space)
            )
        }
        last = conn.execute(select(catalog.runs).order_by(catalog.runs.c.id.desc()).limit(1)).mappings().first()
        problem_counts = dict(
            conn.execute(select(catalog.problems.c.kind, func.count()).group_by(catalog.problems.c.kind)).all()
        )
        problem_rows = (
            conn.execute(select(catalog.problems).order_by(catalog.problems.c.key)).mappings().all()
            if with_problems
            else []
        )
    places, acquisitions = store.place_counts()
    report = {
        "directory": str(store.directory),
        "catalogue": display_url(store.url),
        "catalogue_id": store.catalogue_id,
        "tiles": store.tile_count(),
        "places": places,  # msearch.store.places: ground seen on one grid
        "acquisitions": acquisitions,  # tiles, each an acquisition of its place
        "size_mb": size / 1e6,
        "spaces": [_space_report(m, counts.get(m.space, 0)) for m in store.manifests().values()],
        "last_run": dict(last, summary=json.loads(last["summary"]) if last and last["summary"] else None)
        if last
        else None,
        "problem_counts": problem_counts,
        "bridges": [_bridge_report(store, bridge) for bridge in bridges(store.directory)],
    }
    if with_problems:
        report["problems"] = [
            {"key": r["key"], "root": r["root"], "kind": r["kind"], "reason": r["reason"]} for r in problem_rows
        ]
    return report


def _space_report(manifest, vectors: int) -> dict:
    info = ann_info(manifest)
    return {
        "space": manifest.space,
        "identity": manifest.identity,
        "dim": manifest.dim,
        "metric": manifest.metric,
        "precisions": manifest.precisions,
        "index": info.to_dict(),
        "search": info.describe(),
        "vectors": vectors,
        "faiss_file": manifest.faiss_file,
        "retrain_advised": ann.needs_retrain(info, vectors),
        "text_tower": "numpy" if exported_tower(manifest.card, manifest.weights_sha256) else "torch",
    }


def _bridge_report(store: IndexStore, bridge) -> dict:
    """A bridge, its fit quality and the route each language it carries takes (and why)."""
    report = {"from": bridge.from_space, "to": bridge.to_space, "method": bridge.method, "quality": bridge.quality}
    try:
        check_bridge(bridge, store.manifests())
    except BridgeMismatchError as exc:
        return {**report, "stale": str(exc), "routes": {}}
    languages = [lang for lang in get_card(store.manifest(bridge.from_space).card).languages if lang != "en"]
    routes = {lang: dict(zip(("route", "why"), stored_route(store.directory, bridge, lang))) for lang in languages}
    return {**report, "stale": None, "routes": routes}
