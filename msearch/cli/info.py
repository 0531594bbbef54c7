"""`msearch info`: what an index holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from msearch.cli.common import CATALOGUE_OPTION, INDEX_OPTION, console, fail, shown_path


def info(
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
    problems: bool = typer.Option(False, "--problems", help="List every tile that failed or was skipped."),
):
    """What an index holds: tiles, encoder spaces, index types, sizes on disk, last run, problems."""
    from msearch.store.catalogue import CatalogueError
    from msearch.store.report import index_report

    try:
        report = index_report(index, with_problems=problems, catalogue=catalogue)
    except (FileNotFoundError, CatalogueError) as exc:
        fail(str(exc))
    if as_json:
        console.print_json(json.dumps(report))
        return
    console.print(
        f"[bold]{report['directory']}[/bold]: {report['tiles']} tiles ({report['places']} places, "
        f"{report['acquisitions']} acquisitions), {report['size_mb']:.1f} MB on disk"
    )
    console.print(f"catalogue {report['catalogue']} (id {report['catalogue_id']})")
    table = Table("space", "encoder", "dim", "vectors", "search index", "text tower")
    for space in report["spaces"]:
        table.add_row(
            space["space"],
            space["identity"],
            str(space["dim"]),
            str(space["vectors"]),
            space["search"],
            space["text_tower"],
        )
    console.print(table)
    if report["spaces"]:
        written = ", ".join(f"{space['space']} {'+'.join(space['precisions'])}" for space in report["spaces"])
        console.print(f"vectors written in: {written}")
    for space in report["spaces"]:
        if space["text_tower"] == "torch":
            console.print(
                f"{space['space']}: its text tower is not exported to numpy on this machine, so the next "
                f"query loads torch (seconds) and exports it"
            )
        if space["retrain_advised"]:
            console.print(
                f"{space['space']}: trained on {space['index']['trained_on']} vectors, holds "
                f"{space['vectors']} now: `msearch index --rebuild-ann` would retrain it"
            )
    if report["last_run"]:
        run = report["last_run"]
        counts = run["summary"] or {}
        done = ", ".join(
            f"{name} {counts[name]}"
            for name in ("indexed", "unchanged", "skipped", "failed", "removed")
            if name in counts
        )
        console.print(
            f"last run #{run['id']} ({run['status']}), started {run['started_at']}"
            + (f": {done} in {counts.get('seconds', 0):.1f} s" if done else "")
        )
        if counts.get("precisions"):
            precisions = ", ".join(f"{space} {p}" for space, p in counts["precisions"].items())
            console.print(f"  its encoders ran on {counts['device']} ({precisions})")
    for bridge in report["bridges"]:
        quality = bridge["quality"]
        console.print(
            f"bridge {bridge['from']} -> {bridge['to']} ({bridge['method']}, held-out cosine "
            f"{max(quality['ridge_cosine'], quality['procrustes_cosine']):.3f})"
            + (f": [red]stale[/red]: {bridge['stale']}" if bridge["stale"] else "")
        )
        for lang, choice in bridge["routes"].items():
            console.print(f"  {lang}: {choice['route']} ({choice['why']})")
    console.print(f"problems: {report['problem_counts']}")
    for item in report.get("problems", []):
        console.print(f"  {item['kind']}: {shown_path(str(Path(item['root']) / item['key']))}: {item['reason']}")
