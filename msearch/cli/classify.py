"""`msearch classify`: zero-shot classification of tiles, indexed or not."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from msearch.cli.common import band_order_option, console, err_console, fail, known_models, progress, prompt_templates


def classify(
    paths: List[Path] = typer.Argument(..., exists=True, help="Tiles (files or folders), indexed or not."),
    classes: Optional[List[str]] = typer.Option(None, "--classes", help="A class name (repeatable)."),
    classes_file: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help="Class names, one per line."),
    model: str = typer.Option("llama3-ms-clip-base", "--model", "-m", help="Encoder card."),
    checkpoint: Optional[Path] = typer.Option(None, exists=True, help="Local weights for the model."),
    templates: Optional[Path] = typer.Option(
        None, exists=True, dir_okay=False, help="Prompt templates, one per line with {c}."
    ),
    band_order: Optional[str] = typer.Option(None, help="Band order of multiband files without band descriptions."),
    as_csv: bool = typer.Option(False, "--csv", help="Print probabilities as CSV."),
):
    """Zero-shot classification: per-class probabilities (softmax of 100 x cosine) for each tile."""
    import csv
    import io

    names = [name.strip() for name in classes or [] if name.strip()]
    if classes_file:
        try:
            names += [line.strip() for line in classes_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"--classes-file: {exc}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        fail(f"class {repeated[0]!r} is given twice: each class once")
    if len(names) < 2:
        fail(f"give at least two classes to choose between (--classes, --classes-file); got {len(names)}")
    known_models([model])
    order = band_order_option(band_order)
    prompts = prompt_templates(templates)

    from msearch.indexer.classify import classify_files
    from msearch.models import CardError, ModelNotAvailableError

    try:
        with progress("classifying", "tiles") as report:
            keys, probabilities, failures = classify_files(
                paths, names, model, checkpoint, prompts, order, progress=report
            )
    except (ValueError, CardError, ModelNotAvailableError) as exc:
        fail(str(exc))
    for key, reason in failures:
        err_console.print(f"[yellow]skipped[/yellow] {key}: {reason}")
    if as_csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["tile", "predicted", *names])
        for key, row in zip(keys, probabilities):
            writer.writerow([key, names[int(row.argmax())], *(f"{p:.6f}" for p in row)])
        typer.echo(buffer.getvalue(), nl=False)
    else:
        table = Table("tile", "predicted", *names)
        for key, row in zip(keys, probabilities):
            table.add_row(key, names[int(row.argmax())], *(f"{p:.3f}" for p in row))
        console.print(table)
    if failures and not keys:
        raise typer.Exit(1)
