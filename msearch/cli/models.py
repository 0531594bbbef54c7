"""`msearch models`: the encoders and their weights (never imports torch)."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from msearch.cli.common import console, err_console, known_models


def models(
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
    download: str | None = typer.Option(
        None,
        "--download",
        metavar="NAME",
        help="Download a model's weights into the Hugging Face cache, to use offline later.",
    ),
) -> None:
    """List the encoders (model cards) and whether their weights are cached; or pre-fetch one's weights."""
    from msearch.models import CardError, ModelNotAvailableError, get_card
    from msearch.models.catalog import model_catalog
    from msearch.models.loading import download_weights

    if download:
        known_models([download])
    try:
        if download:
            paths = download_weights(get_card(download))
            if as_json:
                print(json.dumps({"model": download, "files": [str(p) for p in paths]}, indent=2))
            else:
                console.print(f"[green]{download}[/green]: weights cached")
                for path in paths:
                    console.print(f"  {path}")
            return
        entries = model_catalog()
    except (CardError, ModelNotAvailableError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps([entry.to_dict() for entry in entries], indent=2))
        return
    status_style = {"cached": "green", "not downloaded": "yellow", "local only": "cyan"}
    table = Table()
    table.add_column("model", no_wrap=True)
    table.add_column("languages")
    table.add_column("bands")
    table.add_column("weights", overflow="fold")
    table.add_column("status", no_wrap=True)
    for entry in entries:
        table.add_row(
            entry.name,
            " ".join(entry.languages),
            " ".join(entry.bands),
            entry.weights_source,
            f"[{status_style[entry.status]}]{entry.status}[/]",
        )
    console.print(table)
