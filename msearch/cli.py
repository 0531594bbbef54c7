"""The `msearch` command: thin typer commands that call the library and format its answers."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
console = Console()
err_console = Console(stderr=True)


@app.callback()
def main() -> None:
    # An explicit callback keeps the commands subcommands: typer runs a lone command as the app itself.
    pass


@app.command()
def models(
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
    download: str | None = typer.Option(
        None, "--download", metavar="NAME", help="Download a model's weights into the Hugging Face cache, to use offline later."
    ),
) -> None:
    """List the encoders (model cards) and whether their weights are cached; or pre-fetch one's weights."""
    from msearch.models import CardError, ModelNotAvailableError, get_card
    from msearch.models.catalog import model_catalog
    from msearch.models.loading import download_weights

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
