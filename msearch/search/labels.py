"""Labelling a collection with examples as a user names them: tile ids, catalogued paths, raster files (embedded
in the collection's space as `query --like FILE` embeds them), or the top results of a text query."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from msearch.search.searcher import Searcher
from msearch.store.collections import CollectionError, add_labels, get_collection, remove_labels


def label_examples(
    searcher: Searcher,
    name: str,
    positive: Sequence[str] = (),
    negative: Sequence[str] = (),
    from_query: str | None = None,
    top: int = 10,
    note: str | None = None,
    by: str | None = None,
) -> dict[str, int]:
    """Add examples to the collection: each a tile id, a catalogued path or a raster file; with `from_query`,
    the `top` results of that text query in the collection's space are added as positives. Returns
    {"added": n, "changed": n}."""
    collection = get_collection(searcher.store, name)
    tiles: dict[str, list[int]] = {"positive": [], "negative": []}
    files = []
    for label, examples in (("positive", positive), ("negative", negative)):
        for example in examples:
            tile_id = searcher.tile_id_of(str(example))
            if tile_id is not None:
                tiles[label].append(tile_id)
            else:
                path = str(Path(example).resolve())
                files.append((label, path, searcher.embed_file(path, collection.space)))
    if from_query is not None:
        if top <= 0:
            raise CollectionError(f"--top must be at least 1, got {top}")
        # the top tiles, as this command always labelled (per place it would take one acquisition of each place)
        answer = searcher.query(from_query, top_k=top, space=collection.space, all_acquisitions=True)
        tiles["positive"] += [r.tile_id for r in answer.results if r.tile_id not in tiles["negative"]]
    return add_labels(searcher.store, name, tiles["positive"], tiles["negative"], files, note=note, by=by)


def unlabel_examples(searcher: Searcher, name: str, examples: Sequence[str]) -> int:
    """Remove examples from the collection, named as when they were added (a file by its path)."""
    tile_ids, files = [], []
    for example in examples:
        if Path(example).is_file() and not str(example).isdigit():
            labelled_files = {item.file for item in get_collection(searcher.store, name).labels}
            resolved = str(Path(example).resolve())
            if resolved in labelled_files:
                files.append(resolved)
                continue
        tile_id = searcher.tile_id_of(str(example))
        if tile_id is None:
            raise CollectionError(f"{example!r} is not a catalogued tile nor a file labelled in collection {name!r}")
        tile_ids.append(tile_id)
    return remove_labels(searcher.store, name, tile_ids, files)
