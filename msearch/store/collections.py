"""Collections: named sets of labelled examples (positive or negative) in one encoder space, kept in the
catalogue, which a detector (msearch.search.detect) is fitted on.

A catalogued tile is labelled by its identity, the (root, key) the indexer upserts it by, so a label survives
index runs (a changed tile keeps its row) and follows a tile that was pruned and indexed again (a new row, the
same root and key). A label whose tile is no longer catalogued is kept and reported as missing, never dropped
silently. An example given as a file is kept as its embedding, so it needs neither the file nor a tile row later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.engine import Connection

from msearch.schema import catalog
from msearch.store.catalogue import run_transaction
from msearch.store.index_store import IndexStore, id_chunks, vector_bytes, vector_from_bytes

LABELS = ("positive", "negative")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class CollectionError(ValueError):
    """A collection or a label that cannot be made or used as asked: the message says why."""


class UnknownCollectionError(CollectionError):
    """No collection of that name in this index."""


class CollectionExistsError(CollectionError):
    """A collection of that name exists already."""


@dataclass(frozen=True)
class Label:
    label: str  # positive | negative
    tile_id: int | None  # the tile's current row; None for a file example or a tile no longer catalogued
    root: str | None
    key: str | None
    file: str | None
    note: str | None
    added_by: str | None
    added_at: str

    @property
    def name(self) -> str:
        """What the example is, for messages: the file, or the tile's root/key."""
        return self.file if self.file is not None else f"{self.root.rstrip('/')}/{self.key}"

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "tile_id": self.tile_id,
            "root": self.root,
            "key": self.key,
            "file": self.file,
            "note": self.note,
            "added_by": self.added_by,
            "added_at": self.added_at,
        }


@dataclass
class Collection:
    id: int
    name: str
    space: str
    note: str | None
    created_by: str | None
    created_at: str
    labels: list[Label] = field(default_factory=list)  # catalogued tiles and files
    missing: list[Label] = field(default_factory=list)  # labelled tiles no longer in the catalogue

    def of(self, label: str) -> list[Label]:
        return [item for item in self.labels if item.label == label]

    def counts(self) -> dict[str, int]:
        return {
            "positives": len(self.of("positive")),
            "negatives": len(self.of("negative")),
            "missing": len(self.missing),
        }

    def labelled_tiles(self) -> dict[int, str]:
        """{tile id: label} of the labelled tiles still catalogued."""
        return {item.tile_id: item.label for item in self.labels if item.tile_id is not None}

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "space": self.space,
            "note": self.note,
            "created_by": self.created_by,
            "created_at": self.created_at,
            **self.counts(),
            "labels": [item.to_dict() for item in self.labels],
            "missing_tiles": [item.to_dict() for item in self.missing],
        }


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name or ""):
        raise CollectionError(
            f"collection name {name!r}: use letters, digits, '.', '_' or '-' (at most 128, starting with a "
            f"letter or digit)"
        )
    return name


def create_collection(
    store: IndexStore, name: str, space: str, note: str | None = None, by: str | None = None
) -> Collection:
    check_name(name)
    spaces = store.manifests()
    if space not in spaces:
        raise CollectionError(f"no space {space!r} in this index (it has: {', '.join(spaces) or 'none'})")

    def create(conn: Connection) -> None:
        if conn.execute(select(catalog.collections.c.id).where(catalog.collections.c.name == name)).first():
            raise CollectionExistsError(
                f"a collection named {name!r} exists already: choose another name, or add to it"
            )
        conn.execute(
            catalog.collections.insert().values(name=name, space=space, note=note, created_by=by, created_at=_now())
        )

    run_transaction(store.engine, create, f"creating collection {name}")
    return get_collection(store, name)


def list_collections(store: IndexStore) -> list[dict]:
    """Every collection with its counts of positive and negative labels, by name."""
    c, labels = catalog.collections.c, catalog.collection_labels.c
    with store.engine.connect() as conn:
        rows = conn.execute(select(catalog.collections).order_by(c.name)).mappings().all()
        counts = conn.execute(
            select(labels.collection_id, labels.label, func.count()).group_by(labels.collection_id, labels.label)
        ).all()
    by_collection: dict[int, dict[str, int]] = {}
    for collection_id, label, count in counts:
        by_collection.setdefault(collection_id, {})[label] = int(count)
    return [
        {
            "name": row["name"],
            "space": row["space"],
            "note": row["note"],
            "created_by": row["created_by"],
            "created_at": row["created_at"],
            "positives": by_collection.get(row["id"], {}).get("positive", 0),
            "negatives": by_collection.get(row["id"], {}).get("negative", 0),
        }
        for row in rows
    ]


def get_collection(store: IndexStore, name: str) -> Collection:
    """The collection and its labels, tiles resolved to their current rows (by root and key)."""
    with store.engine.connect() as conn:
        row = _collection_row(conn, name)
        labels, tiles = catalog.collection_labels, catalog.tiles
        rows = conn.execute(
            select(labels, tiles.c.id.label("tile_id"))
            .outerjoin(tiles, and_(tiles.c.root == labels.c.root, tiles.c.key == labels.c.key))
            .where(labels.c.collection_id == row.id)
            .order_by(labels.c.id)
        ).mappings()
        collection = Collection(row.id, row.name, row.space, row.note, row.created_by, row.created_at)
        for item in rows:
            label = Label(
                item["label"],
                item["tile_id"],
                item["root"],
                item["key"],
                item["file"],
                item["note"],
                item["added_by"],
                item["added_at"],
            )
            (collection.missing if item["file"] is None and item["tile_id"] is None else collection.labels).append(
                label
            )
    return collection


def add_labels(
    store: IndexStore,
    name: str,
    positive: list[int] = (),
    negative: list[int] = (),
    files: list[tuple[str, str, np.ndarray]] = (),
    note: str | None = None,
    by: str | None = None,
) -> dict[str, int]:
    """Label tiles (by id) and file examples ((label, absolute path, embedding) in the collection's space). A
    tile or file labelled before takes its new label. Every tile must be catalogued, with a vector in the
    collection's space; nothing is written otherwise. Returns {"added": n, "changed": n}."""
    both = sorted({int(t) for t in positive} & {int(t) for t in negative})
    if both:
        raise CollectionError(f"tiles {both[:10]} are given as both positive and negative: give each once")
    wanted = [(int(t), "positive") for t in positive] + [(int(t), "negative") for t in negative]
    collection = get_collection(store, name)
    identities = _tile_identities(store, collection.space, [t for t, _ in wanted])
    now = _now()
    rows = [
        {"root": identities[t][0], "key": identities[t][1], "file": None, "vector": None, "label": label}
        for t, label in wanted
    ]
    for label, path, vector in files:
        if label not in LABELS:
            raise CollectionError(f"a label is positive or negative, not {label!r}")
        rows.append({"root": None, "key": None, "file": path, "vector": vector_bytes(vector), "label": label})
    counts = {"added": 0, "changed": 0}

    def write(conn: Connection) -> None:
        labels = catalog.collection_labels
        for row in rows:
            same = (
                and_(labels.c.root == row["root"], labels.c.key == row["key"])
                if row["file"] is None
                else labels.c.file == row["file"]
            )
            values = dict(row, note=note, added_by=by, added_at=now)
            found = conn.execute(
                select(labels.c.id, labels.c.label).where(labels.c.collection_id == collection.id, same)
            ).first()
            if found is None:
                conn.execute(labels.insert().values(collection_id=collection.id, **values))
                counts["added"] += 1
            else:
                conn.execute(update(labels).where(labels.c.id == found.id).values(**values))
                counts["changed"] += found.label != row["label"]

    run_transaction(store.engine, write, f"labelling in collection {name}")
    return counts


def remove_labels(store: IndexStore, name: str, tile_ids: list[int] = (), files: list[str] = ()) -> int:
    """Remove the labels of these tiles (by id) and file examples (by path as listed); returns how many went.
    A tile or file that is not labelled in the collection is an error, and nothing is removed."""
    collection = get_collection(store, name)
    by_tile = {item.tile_id: item for item in collection.labels if item.tile_id is not None}
    by_file = {item.file: item for item in collection.labels if item.file is not None}
    unknown = [str(t) for t in tile_ids if int(t) not in by_tile] + [f for f in files if f not in by_file]
    if unknown:
        raise CollectionError(f"not labelled in collection {name!r}: {', '.join(unknown[:10])}")
    labels = catalog.collection_labels.c

    def write(conn: Connection) -> int:
        removed = 0
        for tile_id in tile_ids:
            item = by_tile[int(tile_id)]
            removed += conn.execute(
                delete(catalog.collection_labels).where(
                    labels.collection_id == collection.id, labels.root == item.root, labels.key == item.key
                )
            ).rowcount
        for path in files:
            removed += conn.execute(
                delete(catalog.collection_labels).where(labels.collection_id == collection.id, labels.file == path)
            ).rowcount
        return removed

    return run_transaction(store.engine, write, f"removing labels from collection {name}")


def delete_collection(store: IndexStore, name: str) -> int:
    """Delete a collection and its labels; returns how many labels went with it."""

    def write(conn: Connection) -> int:
        row = _collection_row(conn, name)
        labels = conn.execute(
            delete(catalog.collection_labels).where(catalog.collection_labels.c.collection_id == row.id)
        ).rowcount
        conn.execute(delete(catalog.collections).where(catalog.collections.c.id == row.id))
        return labels

    return run_transaction(store.engine, write, f"deleting collection {name}")


def example_vectors(store: IndexStore, collection: Collection, label: str) -> np.ndarray:
    """The stored vectors of the collection's examples with this label (catalogued tiles, then files)."""
    items = collection.of(label)
    tile_ids = [item.tile_id for item in items if item.tile_id is not None]
    parts = [store.vectors_of(collection.space, tile_ids)] if tile_ids else []
    if any(item.file is not None for item in items):
        labels = catalog.collection_labels.c
        with store.engine.connect() as conn:
            blobs = conn.execute(
                select(labels.vector)
                .where(labels.collection_id == collection.id, labels.label == label, labels.file.is_not(None))
                .order_by(labels.id)
            ).scalars()
            parts.append(np.stack([vector_from_bytes(blob) for blob in blobs]))
    dim = store.manifest(collection.space).dim
    return np.concatenate(parts).astype(np.float32) if parts else np.empty((0, dim), np.float32)


def _tile_identities(store: IndexStore, space: str, tile_ids: list[int]) -> dict[int, tuple[str, str]]:
    """{tile id: (root, key)}; a tile that is not catalogued, or has no vector in `space`, is an error."""
    if not tile_ids:
        return {}
    t, v = catalog.tiles.c, catalog.vectors.c
    found: dict[int, tuple[str, str]] = {}
    with_vector: set[int] = set()
    with store.engine.connect() as conn:
        for chunk in id_chunks(sorted(set(tile_ids))):
            found.update(
                {
                    row.id: (row.root, row.key)
                    for row in conn.execute(select(t.id, t.root, t.key).where(t.id.in_(chunk)))
                }
            )
            with_vector.update(conn.execute(select(v.tile_id).where(v.space == space, v.tile_id.in_(chunk))).scalars())
    missing = [t for t in tile_ids if t not in found]
    if missing:
        raise CollectionError(
            f"no tile with id {missing[0]} in this index"
            + (f" (nor {', '.join(map(str, missing[1:10]))})" if len(missing) > 1 else "")
            + ": tile ids are the `tile_id` of query results"
        )
    other = [t for t in tile_ids if t not in with_vector]
    if other:
        raise CollectionError(
            f"tile {other[0]} has no vector in space {space!r}, the collection's space (it was indexed into "
            f"another space only): label tiles of the collection's space"
        )
    return found


def _collection_row(conn: Connection, name: str):
    row = conn.execute(select(catalog.collections).where(catalog.collections.c.name == name)).first()
    if row is None:
        known = conn.execute(select(catalog.collections.c.name).order_by(catalog.collections.c.name)).scalars().all()
        raise UnknownCollectionError(
            f"no collection named {name!r} in this index"
            + (f" (it has: {', '.join(known[:20])})" if known else "; create it with `msearch collection create`")
        )
    return row


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
