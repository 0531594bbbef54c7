"""`msearch export`: the index as GeoParquet."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from msearch.cli.common import CATALOGUE_OPTION, INDEX_OPTION, check_output, console, fail


def export(
    out: Path = typer.Argument(..., help="GeoParquet file to write (replaced atomically if it exists)."),
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
    space: Optional[List[str]] = typer.Option(
        None, "--space", "-s", help="Encoder space to export (repeatable). Default: all."
    ),
):
    """Write the index as GeoParquet: one row per tile, its footprint, catalogue fields and embeddings."""
    check_output(out, "export to")
    from msearch.store import SpaceMismatchError
    from msearch.store.catalogue import CatalogueError
    from msearch.store.export import export_geoparquet

    try:
        rows = export_geoparquet(index, out, spaces=space, catalogue=catalogue)
    except (FileNotFoundError, SpaceMismatchError, CatalogueError) as exc:
        fail(str(exc))
    console.print(f"wrote {rows} rows to {out}")
