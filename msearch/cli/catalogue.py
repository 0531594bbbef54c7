"""`msearch catalogue`: move an index's catalogue between SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from msearch.cli.common import console, fail

# The group's commands; msearch/cli/__init__.py adds it to the app as `catalogue`.
app = typer.Typer(no_args_is_help=True, help="Move an index's catalogue between SQLite and PostgreSQL.")


@app.command("copy")
def catalogue_copy(
    src: str = typer.Argument(..., help="Source catalogue: URL, SQLite file, or index directory."),
    dst: str = typer.Argument(..., help="Destination: URL of an empty database (or a new SQLite file)."),
    index: Optional[Path] = typer.Option(
        None, "--index", help="Also point this index directory's FAISS files at the copy (they were built from SRC)."
    ),
):
    """Copy a catalogue, vectors included, verified by row counts and a checksum before it is kept."""
    from msearch.store.catalogue import CatalogueError, CatalogueUnavailableError
    from msearch.store.copy import copy_catalogue

    try:
        report = copy_catalogue(src, dst, index=index)
    except CatalogueUnavailableError as exc:
        fail(str(exc), 1)
    except (FileNotFoundError, CatalogueError) as exc:
        fail(str(exc))
    counts = ", ".join(f"{name} {count}" for name, count in report.rows.items())
    console.print(f"copied {report.source} to {report.destination}: {counts}")
    console.print(f"verified: checksum {report.checksum} on both sides; the copy is catalogue {report.destination_id}")
    if report.rebound_spaces:
        console.print(f"{index}: spaces {', '.join(report.rebound_spaces)} now belong to the copy")
