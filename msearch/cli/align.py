"""`msearch align`: fit the text bridge into the multispectral space."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from msearch.cli.common import CATALOGUE_OPTION, INDEX_OPTION, console, err_console, fail


def align(
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
    from_space: Optional[str] = typer.Option(None, "--from", help="Space of the multilingual text tower (rs-m-clip)."),
    to_space: Optional[str] = typer.Option(None, "--to", help="Multispectral space (llama3-ms-clip-base)."),
    texts: Optional[Path] = typer.Option(
        None,
        exists=True,
        dir_okay=False,
        help="English texts to fit on, one per line (default: the paper's templates over benchmark classes).",
    ),
):
    """Fit a text bridge so that queries in the nine languages beyond English can search the multispectral space."""
    from msearch.search.bridge import align as fit_bridge
    from msearch.search.bridge import corpus_from_file
    from msearch.search.searcher import QueryError, Searcher
    from msearch.store.catalogue import CatalogueError

    try:
        corpus = corpus_from_file(texts) if texts else None
        searcher = Searcher(index, query_cache=None, catalogue=catalogue)
        columns = (TextColumn("[bold]encoding texts"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err_console) as bar:
            task = bar.add_task("align", total=None)
            fit = fit_bridge(
                searcher,
                from_space,
                to_space,
                corpus,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except (QueryError, FileNotFoundError, CatalogueError) as exc:
        fail(str(exc))
    bridge = fit.bridge
    console.print(
        f"bridge {bridge.from_space} -> {bridge.to_space}: {fit.corpus_size} texts, "
        f"{fit.held_out_texts} held out (whole classes)"
    )
    table = Table("method", "held-out cosine", "")
    table.add_row("ridge", f"{fit.ridge_cosine:.4f}", f"lambda {fit.ridge_lambda:g}")
    table.add_row("orthogonal Procrustes", f"{fit.procrustes_cosine:.4f}", "")
    console.print(table)
    console.print(f"stored: {bridge.method} (the higher held-out cosine), refitted on every text")
    if fit.translations:
        console.print(
            "translations in the shipped query set, mapped vs the English original's target embedding: "
            + ", ".join(f"{lang} {cos:.3f}" for lang, cos in fit.translations.items())
        )
    console.print("next: `msearch eval QUERIES --routes --save-routes` measures which route each language should take")
