"""Planning a run: what to index. The tiles found under the paths given are compared with the catalogue by
file size and mtime (no file is read): only new, changed or incomplete tiles are pending, so re-checking an
unchanged archive reads no pixels and loads no model; what is catalogued at or beneath the paths given and no
longer found there is gone (dropped with --prune); copies of one tile under another root or link are one
tile. The pending tiles are then grouped into the units a reader takes (a scene's chips together).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from sqlalchemy import Table, or_, select
from sqlalchemy.engine import Connection

from msearch.indexer.readers import LAYOUTS_READ, Discovery, discover, discover_urls
from msearch.indexer.readers.stack import KNOWN_GRID_SIZES
from msearch.indexer.runs import IGNORED_NAMED, NothingToIndex, counted
from msearch.indexer.stac_search import StacSearch, search_sources
from msearch.indexer.tiles import IdentityResolver, ReadSettings, TileSource, tile_locations
from msearch.models import InputRecipe, get_card
from msearch.schema import catalog
from msearch.store.catalogue import CatalogueError
from msearch.store.index_store import IndexStore


@dataclass(frozen=True)
class PendingTile:
    """A tile the run reads: where it is, its files' signature, and the spaces it needs vectors in."""

    source: TileSource
    stat_signature: str
    spaces: tuple[str, ...]  # spaces this tile needs vectors for
    # The catalogued content digest, when the tile already has vectors in every space: a re-read that finds
    # the same digest means the files were only touched, and the vectors are kept.
    complete_digest: str | None = None


@dataclass
class Plan:
    """What a run does: the tiles to read, and the catalogued rows to drop."""

    pending: list[PendingTile]
    unchanged: int
    # Catalogued beneath the paths given but not found in this run: ids of tiles, and of problems of files
    gone_tiles: list[int]
    gone_problems: list[int]
    duplicates: int = 0  # discovered sources dropped: another source of this run is the same tile
    # Catalogued rows that are another copy of a tile found in this run (the same resolved file and window
    # under another root or symbolic link): dropped, one row per tile is kept.
    duplicate_tiles: list[int] = field(default_factory=list)
    duplicate_problems: list[int] = field(default_factory=list)


def plan(
    store: IndexStore, found: Discovery, spaces: Sequence[str], recipes: dict[str, InputRecipe] | None = None
) -> Plan:
    """The discovered tiles against the catalogue, by size and mtime: no file is read.

    A tile is its resolved file (or folder) and window: the same file found under two roots, or through a
    symbolic link, is one tile. A discovered tile already catalogued under another root keeps that row (and
    its vectors); extra catalogued copies of it are dropped. A space whose bands a catalogued tile lacks
    (an RGB-only file, for a multispectral space) is not needed for it."""
    recipes = recipes if recipes is not None else {space: get_card(space).input for space in spaces}
    resolver = IdentityResolver()
    sources, duplicates = _unique_tiles(found.sources, resolver)
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(
                catalog.tiles.c.id,
                catalog.tiles.c.root,
                catalog.tiles.c.key,
                catalog.tiles.c.stat_signature,
                catalog.tiles.c.digest,
                catalog.tiles.c.bands,
            )
        ).all()
        problem_rows = conn.execute(
            select(catalog.problems.c.id, catalog.problems.c.root, catalog.problems.c.key)
        ).all()
        tiles_beneath = _catalogued_beneath(conn, catalog.tiles, found.paths)
        problems_beneath = _catalogued_beneath(conn, catalog.problems, found.paths)
        have: dict[int, set[str]] = {}
        for tile_id, space in conn.execute(select(catalog.vectors.c.tile_id, catalog.vectors.c.space)):
            have.setdefault(tile_id, set()).add(space)
    wanted = set(sources)
    known = {(row.root, row.key): row for row in rows}
    rows_of: dict[str, list] = {}
    for row in rows:
        identity = resolver.tile_identity(row.root, row.key)
        if identity in wanted:
            rows_of.setdefault(identity, []).append(row)
    problems_of: dict[str, list] = {}
    for row in problem_rows:
        identity = resolver.tile_identity(row.root, row.key)
        if identity in wanted:
            problems_of.setdefault(identity, []).append(row)

    pending, unchanged, duplicate_tiles, duplicate_problems, kept_sources = [], 0, [], [], []
    signatures: dict[tuple, str] = {}
    for identity, source in sources.items():
        copies = rows_of.get(identity, [])
        entry = known.get((str(source.root), source.key)) or min(copies, key=lambda r: r.id, default=None)
        if entry is not None and (entry.root, entry.key) != (str(source.root), source.key):
            source = replace(source, root=Path(entry.root), key=entry.key)  # the tile keeps its catalogued row
        kept_sources.append(source)
        duplicate_tiles += [row.id for row in copies if row.id != entry.id]
        duplicate_problems += [
            row.id for row in problems_of.get(identity, []) if (row.root, row.key) != (str(source.root), source.key)
        ]
        files = (source.files, source.remote_identity)  # the chips of a scene share their files
        try:
            if files not in signatures:
                signatures[files] = source.stat_signature()
            signature = signatures[files]
        except OSError:
            signature = ""  # unreadable now: the read reports why
        feedable = feedable_spaces(spaces, recipes, entry.bands if entry is not None else None)
        if entry is not None and entry.stat_signature == signature:
            needed = tuple(s for s in feedable if s not in have.get(entry.id, set()))
            if not needed:
                unchanged += 1
                continue
            pending.append(PendingTile(source, signature, needed))
        else:
            complete = entry is not None and set(feedable) <= have.get(entry.id, set())
            pending.append(PendingTile(source, signature, tuple(spaces), entry.digest if complete else None))
    # By location, not by (root, key): a tile catalogued under a folder above the path given is found again
    # under another root, and is not gone.
    found_at = {location for s in kept_sources for location in tile_locations(str(s.root), s.key)}
    gone_tiles, gone_problems = (
        [
            row_id
            for row_id, (root, key) in beneath.items()
            if row_id not in dropped and found_at.isdisjoint(tile_locations(root, key))
        ]
        for beneath, dropped in ((tiles_beneath, set(duplicate_tiles)), (problems_beneath, set(duplicate_problems)))
    )
    return Plan(pending, unchanged, gone_tiles, gone_problems, duplicates, duplicate_tiles, duplicate_problems)


def _unique_tiles(found: Sequence[TileSource], resolver: IdentityResolver) -> tuple[dict[str, TileSource], int]:
    """identity -> source, one source per tile: of several ways to one file, the one that takes no symbolic
    link (its own location is its identity), else the first found."""
    unique: dict[str, TileSource] = {}
    for source in found:
        identity = resolver.tile_identity(str(source.root), source.key)
        if identity not in unique:
            unique[identity] = source
        elif not _is_direct(unique[identity], identity) and _is_direct(source, identity):
            unique[identity] = source
    return unique, len(found) - len(unique)


def _is_direct(source: TileSource, identity: str) -> bool:
    return identity in tile_locations(str(source.root), source.key)


def feedable_spaces(spaces: Sequence[str], recipes: dict[str, InputRecipe], bands: str | None) -> tuple[str, ...]:
    """The spaces a tile with the catalogued `bands` can feed (all of them while its bands are unknown)."""
    if not bands:
        return tuple(spaces)
    present = set(bands.split(","))
    return tuple(s for s in spaces if s not in recipes or set(recipes[s].bands) <= present)


# SQLite nests an OR of n terms n deep, and refuses expressions deeper than 1000.
TERMS_PER_QUERY = 300


def _catalogued_beneath(conn: Connection, table: Table, paths: Sequence[Path]) -> dict[int, tuple[str, str]]:
    """id -> (root, key) of the rows of `table` (tiles or problems) whose tile lies at or beneath one of
    `paths` (resolved): every row of a root at or beneath a path; under a root above a path, the rows keyed
    by the path relative to it, by what lies beneath it ('/': files of a folder, granules of a zipped SAFE,
    items of a FeatureCollection) and by its chips ('#')."""
    roots = set(conn.execute(select(table.c.root).distinct()).scalars())
    given = {str(path) for path in paths}
    whole_roots = [root for root in roots if root in given or not given.isdisjoint(map(str, Path(root).parents))]
    within = sorted(
        {
            (str(folder), path.relative_to(folder).as_posix())
            for path in paths
            for folder in path.parents
            if str(folder) in roots
        }
    )
    # One flat term per range of the (root, key) index: SQLite then reads range by range; an OR nested
    # inside a term would make it read every row of the root instead.
    terms = []
    for root, relative in within:
        at_root = table.c.root == root
        terms += [
            at_root & (table.c.key == relative),
            at_root & _begins_with(table.c.key, relative + "/"),
            at_root & _begins_with(table.c.key, relative + "#"),
        ]
    columns = (table.c.id, table.c.root, table.c.key)
    queries = [select(*columns).where(table.c.root.in_(whole_roots))] if whole_roots else []
    queries += [
        select(*columns).where(or_(*terms[start : start + TERMS_PER_QUERY]))
        for start in range(0, len(terms), TERMS_PER_QUERY)
    ]
    return {row.id: (row.root, row.key) for query in queries for row in conn.execute(query)}


def _begins_with(column, prefix: str):
    """`column LIKE 'prefix%'` as a range an index serves (and without LIKE's wildcards and case folding)."""
    return (column >= prefix) & (column < prefix[:-1] + chr(ord(prefix[-1]) + 1))


def scene_units(pending: list[PendingTile], tiles_per_unit: int) -> list[list[PendingTile]]:
    """All chips of each scene together, and whole tiles in groups of `tiles_per_unit`, in the order of
    their first appearance."""
    scenes: dict[tuple, list[PendingTile]] = {}
    tiles: list[PendingTile] = []
    for item in pending:
        if item.source.window is None:
            tiles.append(item)
        else:
            scenes.setdefault(item.source.scene, []).append(item)
    chunks = [tiles[start : start + tiles_per_unit] for start in range(0, len(tiles), tiles_per_unit)]
    return [*scenes.values(), *chunks]


# -- what is there to plan ------------------------------------------------------------------------------


def find_tiles(
    roots: Sequence[Path],
    urls: Sequence[str],
    settings: ReadSettings,
    stac_search: StacSearch | None,
    index: str | Path | None,
    catalogue: str | None,
) -> Discovery:
    """The tiles under `roots`, in the STAC documents at `urls` and found by `stac_search`, before the run
    opens the catalogue to write. Raises NothingToIndex when there is none and the index holds nothing
    beneath the paths either (a folder emptied since it was indexed is not "nothing": its tiles are gone)."""
    # Remote documents and searches first: a search that fails leaves no trace in the index.
    remote_sources = discover_urls(urls, settings) if urls else []
    remote_sources += search_sources(stac_search, settings) if stac_search else []
    existing = _existing_store(index, catalogue)
    try:
        token = KNOWN_GRID_SIZES.set(_catalogued_grid_sizes(existing) if existing else {})
        try:
            found = discover(roots, settings)
        finally:
            KNOWN_GRID_SIZES.reset(token)
        found.sources += remote_sources
        if not found.sources and not (existing and _catalogued_anything_beneath(existing, found.paths)):
            raise NothingToIndex(nothing_found(roots, found))
    finally:
        if existing:
            existing.engine.dispose()
    return found


def _existing_store(index: str | Path | None, catalogue: str | None) -> IndexStore | None:
    """The index's catalogue if there is one yet (nothing is created); None for a first run."""
    try:
        return IndexStore(index, create=False, catalogue=catalogue)
    except (FileNotFoundError, CatalogueError):
        return None  # an unusable catalogue URL is reported when the run opens it to write


def _catalogued_grid_sizes(store: IndexStore) -> dict[str, tuple[int, int]]:
    """stat signature -> (width, height) of the whole (not chipped) tiles of an existing index."""
    tiles = catalog.tiles
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(tiles.c.stat_signature, tiles.c.width, tiles.c.height).where(
                tiles.c.window.is_(None), tiles.c.width.is_not(None), tiles.c.height.is_not(None)
            )
        )
        return {row.stat_signature: (row.width, row.height) for row in rows}


def _catalogued_anything_beneath(store: IndexStore, paths: Sequence[Path]) -> bool:
    """Whether an existing index holds tiles or problems beneath `paths`: a folder emptied since it was
    indexed is not "nothing", its tiles are gone (and pruned with --prune)."""
    with store.engine.connect() as conn:
        return any(_catalogued_beneath(conn, table, paths) for table in (catalog.tiles, catalog.problems))


def nothing_found(roots: Sequence[Path], found: Discovery) -> str:
    """Why a run found nothing: the paths, the layouts looked for, and what was there instead."""
    where = ", ".join(str(root) for root in roots)
    message = f"found no rasters under {where}; layouts read: {LAYOUTS_READ}"
    if found.ignored:
        names = ", ".join(path.name for path in found.ignored[:IGNORED_NAMED])
        more = f" and {len(found.ignored) - IGNORED_NAMED} more" if len(found.ignored) > IGNORED_NAMED else ""
        message += f". {counted(len(found.ignored), 'file')} there: {names}{more}"
    else:
        message += ". The folder holds no files" if len(roots) == 1 and roots[0].is_dir() else ""
    for folder, why in found.unreadable:
        message += f". Could not list {folder}: {why}"
    return message
