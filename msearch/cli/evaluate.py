"""`msearch eval`: mAP@k of the search on a query set, zero-shot accuracy, or the routes beyond English."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

import typer
from rich.table import Table

from msearch.cli.common import (
    CATALOGUE_OPTION,
    INDEX_OPTION,
    check_output,
    console,
    err_console,
    fail,
    progress,
    prompt_templates,
    search_errors,
    write_text,
)


def evaluate(
    queryset: Path = typer.Argument(
        ...,
        exists=True,
        dir_okay=False,
        help="Query set (CSV/JSONL: query,lang,relevant) or a labels file (file,label).",
    ),
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
    space: Optional[str] = typer.Option(None, help="Answer every query in this space."),
    k: int = typer.Option(100, "--k", min=1, help="Cut-off for mAP@k."),
    task: Literal["retrieval", "classify"] = typer.Option(
        "retrieval", help="retrieval, or classify (zero-shot accuracy on a labels file)."
    ),
    templates: Optional[Path] = typer.Option(
        None, exists=True, dir_okay=False, help="Prompt templates, one per line with {c} (default: the paper's 50)."
    ),
    label_column: Optional[str] = typer.Option(None, help="Label column of a labels file (default: label or labels)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    out: Optional[Path] = typer.Option(
        None, help="Save the report as OUT.json, OUT.csv (per query) and OUT.means.csv."
    ),
    routes: bool = typer.Option(
        False, "--routes", help="Compare mAP@k per language of the routes beyond English (rgb, bridge, fuse)."
    ),
    save_routes: bool = typer.Option(
        False, "--save-routes", help="With --routes: store the comparison, so queries take each language's best route."
    ),
    per_place: bool = typer.Option(
        False,
        "--per-place",
        help="Score places, as queries return them, instead of tiles: a place is relevant when any of its "
        "acquisitions is.",
    ),
):
    """Score retrieval with mAP@100 as the paper computes it (and friends), or zero-shot classification."""
    if save_routes and not routes:
        fail("--save-routes stores the comparison that --routes makes: pass both")
    if per_place and (routes or task == "classify"):
        fail("--per-place scores the places a retrieval returns: leave out --routes and --task classify")
    if out is not None:
        check_output(out.with_suffix(".json"), "--out")
    prompts = prompt_templates(templates)

    from msearch.search.evaluate import evaluate_classification, evaluate_retrieval
    from msearch.search.searcher import Searcher

    if routes:
        return _evaluate_routes(queryset, index, k, as_json, save_routes, catalogue)
    try:
        searcher = Searcher(index, catalogue=catalogue)
        if task == "classify":
            result = evaluate_classification(searcher, queryset, space, prompts, label_column)
        else:
            with progress("evaluating", "queries") as report:
                result = evaluate_retrieval(
                    searcher, queryset, space, k, prompts, label_column, progress=report, per_place=per_place
                )
    except search_errors() as exc:
        fail(str(exc))
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}")
    if task == "classify":
        data = {
            "accuracy": result.accuracy,
            "mean_class_recall": result.mean_class_recall,
            "per_class_recall": result.per_class_recall,
            "tiles": result.n_tiles,
        }
        if as_json:
            typer.echo(json.dumps(data, indent=2))
        else:
            table = Table("class", "recall")
            for name, value in result.per_class_recall.items():
                table.add_row(name, f"{value:.3f}")
            console.print(table)
            console.print(
                f"top-1 accuracy {result.accuracy:.3f}, mean per-class recall {result.mean_class_recall:.3f} "
                f"over {result.n_tiles} tiles"
            )
        if out:
            write_text(out.with_suffix(".json"), json.dumps(data, indent=2))
        return
    report = result.report
    data = report.as_dict()
    data["index_recall_at_k"] = {"mean": result.mean_index_recall, "per_query": result.index_recall}
    data["spaces"] = result.spaces
    data["scored"] = "places" if per_place else "tiles"
    if out:
        write_text(out.with_suffix(".json"), json.dumps(data, indent=2, ensure_ascii=False))
        report.write_queries_csv(out.with_suffix(".csv"))
        report.write_means_csv(out.with_suffix(".means.csv"))
    if as_json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    table = Table("query", "lang", "space", f"mAP@{k}", f"AP/min({k},R)", "R@1", "R@5", "R@10", "P@10", "index R@k")
    for row in report.queries:
        table.add_row(
            row.query,
            row.lang,
            result.spaces[row.query],
            f"{row.average_precision:.3f}",
            f"{row.average_precision_normalised_by_relevant:.3f}",
            f"{row.recall_at_1:.2f}",
            f"{row.recall_at_5:.2f}",
            f"{row.recall_at_10:.2f}",
            f"{row.precision_at_10:.2f}",
            f"{result.index_recall[row.query]:.3f}",
        )
    console.print(table)
    means = Table("scope", "queries", f"mAP@{k} (paper)", f"mAP normalised by min({k},R)", "R@1", "R@5", "R@10", "P@10")
    for m in [report.overall, *report.by_lang.values()]:
        means.add_row(
            m.lang or "all",
            str(m.n_queries),
            f"{m.mean_average_precision:.4f}",
            f"{m.mean_average_precision_normalised_by_relevant:.4f}",
            f"{m.recall_at_1:.3f}",
            f"{m.recall_at_5:.3f}",
            f"{m.recall_at_10:.3f}",
            f"{m.precision_at_10:.3f}",
        )
    console.print(means)
    scored = "places (a place is relevant when any of its acquisitions is)" if per_place else "tiles"
    console.print(f"scored: {scored}; index recall@{k} against exact search: {result.mean_index_recall:.4f}")


def _evaluate_routes(
    queryset: Path, index: Optional[Path], k: int, as_json: bool, save: bool, catalogue: Optional[str] = None
) -> None:
    from msearch.search.evaluate import evaluate_routes
    from msearch.search.searcher import Searcher
    from msearch.store.bridges import ROUTES, save_routes

    try:
        searcher = Searcher(index, catalogue=catalogue)
        comparison = evaluate_routes(searcher, queryset, k)
    except search_errors() as exc:
        fail(str(exc))
    for warning in comparison.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}")
    if save:
        for bridge in searcher.bridges():
            save_routes(searcher.store.directory, bridge, comparison.as_dict())
    if as_json:
        typer.echo(json.dumps(comparison.as_dict(), indent=2))
    else:
        table = Table("lang", "queries", *(f"{route} mAP@{k}" for route in (*ROUTES, "direct")), "best")
        for lang, entry in comparison.languages.items():
            cells = [f"{entry[r]:.4f}" if r in entry else "" for r in (*ROUTES, "direct")]
            table.add_row(lang, str(entry["queries"]), *cells, entry["chosen"])
        console.print(table)
    if save:
        err_console.print("stored: queries in each language now take its best route by default (see `msearch info`)")
