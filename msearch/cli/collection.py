"""`msearch collection create|add|remove|show|list|delete`: named sets of labelled examples in the catalogue
(msearch.store.collections), which `msearch detect` fits a detector on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from msearch.cli.common import (
    CATALOGUE_OPTION,
    INDEX_OPTION,
    band_order_option,
    collection_errors,
    console,
    fail,
    plural,
    shown_path,
    space_checkpoints,
    warn_missing,
)

app = typer.Typer(
    no_args_is_help=True, help="Named sets of labelled examples (tiles, files) that `msearch detect` is fitted on."
)


def _labelling_searcher(index, catalogue, checkpoint=None, band_order=None):
    from msearch.indexer.readers import ArchivePixels
    from msearch.indexer.tiles import ReadSettings
    from msearch.search.searcher import Searcher

    pixels = ArchivePixels(ReadSettings(band_order=band_order_option(band_order)))
    return Searcher(index, space_checkpoints(checkpoint), pixels=pixels, catalogue=catalogue)


def _user() -> str | None:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return None


@app.command("create")
def collection_create(
    name: str = typer.Argument(..., help="The collection's name (letters, digits, '.', '_', '-')."),
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
    space: Optional[str] = typer.Option(None, help="Encoder space of its examples (default: the multispectral one)."),
    note: Optional[str] = typer.Option(None, help="What the collection is for."),
):
    """Create an empty collection of labelled examples in one encoder space."""
    from msearch.store.collections import create_collection

    try:
        searcher = _labelling_searcher(index, catalogue)
        collection = create_collection(searcher.store, name, searcher.example_space(space), note, by=_user())
    except collection_errors() as exc:
        fail(str(exc))
    console.print(f"created collection {collection.name} (space {collection.space})")


@app.command("add")
def collection_add(
    name: str = typer.Argument(..., help="The collection."),
    positive: Optional[List[str]] = typer.Option(
        None, "--positive", "-p", help="A positive example: tile id, catalogued path or raster file (repeatable)."
    ),
    negative: Optional[List[str]] = typer.Option(
        None, "--negative", "-n", help="A negative example: tile id, catalogued path or raster file (repeatable)."
    ),
    from_query: Optional[str] = typer.Option(None, help="Add the top results of this text query as positives."),
    top: int = typer.Option(10, min=1, help="With --from-query: how many results to add."),
    note: Optional[str] = typer.Option(None, help="A note kept with these labels."),
    band_order: Optional[str] = typer.Option(
        None,
        help="For example files: band order of a multiband file without band descriptions (l2a, l1c, eurosat or "
        "B01,B02,...). Default: the order the file was catalogued with.",
    ),
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
    checkpoint: Optional[List[str]] = typer.Option(
        None, help="SPACE=PATH: local weights for a space's encoder, to embed example files (repeatable)."
    ),
):
    """Label examples: a tile labelled before takes its new label; a file is embedded and kept as an example."""
    if not positive and not negative and from_query is None:
        fail("give examples: --positive ID, --negative ID or --from-query TEXT")
    from msearch.search.labels import label_examples

    try:
        searcher = _labelling_searcher(index, catalogue, checkpoint, band_order)
        counts = label_examples(searcher, name, positive or [], negative or [], from_query, top, note=note, by=_user())
    except collection_errors() as exc:
        fail(str(exc))
    console.print(f"{name}: {counts['added']} added, {counts['changed']} relabelled")


@app.command("remove")
def collection_remove(
    name: str = typer.Argument(..., help="The collection."),
    examples: List[str] = typer.Argument(..., help="Tile ids, catalogued paths or labelled files to unlabel."),
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
):
    """Remove examples from a collection."""
    from msearch.search.labels import unlabel_examples

    try:
        removed = unlabel_examples(_labelling_searcher(index, catalogue), name, examples)
    except collection_errors() as exc:
        fail(str(exc))
    console.print(f"{name}: {removed} removed")


@app.command("show")
def collection_show(
    name: str = typer.Argument(..., help="The collection."),
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the collection as JSON."),
):
    """A collection's labels: who added them and when, and labelled tiles no longer in the index."""
    from msearch.store import IndexStore
    from msearch.store.collections import get_collection

    try:
        collection = get_collection(IndexStore(index, create=False, catalogue=catalogue), name)
    except collection_errors() as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(collection.to_dict(), indent=2))
        return
    counts = collection.counts()
    console.print(
        f"[bold]{collection.name}[/bold] (space {collection.space}): {counts['positives']} positive, "
        f"{counts['negatives']} negative" + (f" · {collection.note}" if collection.note else "")
    )
    table = Table(show_edge=False, header_style="bold")
    for column in ("label", "tile", "example", "added by", "added at", "note"):
        table.add_column(column)
    for item in collection.labels:
        table.add_row(
            item.label,
            str(item.tile_id) if item.tile_id else "file",
            shown_path(item.name),
            item.added_by or "-",
            item.added_at,
            item.note or "",
        )
    console.print(table)
    warn_missing(collection)


@app.command("list")
def collection_list(
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the collections as JSON."),
):
    """The index's collections with their counts of labels."""
    from msearch.store import IndexStore
    from msearch.store.collections import list_collections

    try:
        collections = list_collections(IndexStore(index, create=False, catalogue=catalogue))
    except collection_errors() as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(collections, indent=2))
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("name", "space", "positives", "negatives", "note"):
        table.add_column(column)
    for item in collections:
        table.add_row(item["name"], item["space"], str(item["positives"]), str(item["negatives"]), item["note"] or "")
    console.print(table if collections else "no collections yet: `msearch collection create NAME`")


@app.command("delete")
def collection_delete(
    name: str = typer.Argument(..., help="The collection."),
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
):
    """Delete a collection and its labels."""
    from msearch.store import IndexStore
    from msearch.store.collections import delete_collection

    try:
        labels = delete_collection(IndexStore(index, create=False, catalogue=catalogue), name)
    except collection_errors() as exc:
        fail(str(exc))
    console.print(f"deleted collection {name} and its {plural(labels, 'label')}")
