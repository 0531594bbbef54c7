"""The `msearch` command: thin typer commands that call the library and format its answers.

Each command checks its arguments and paths before importing what does the work (torch, open_clip, FAISS,
rasterio: seconds), so that a mistake is answered at once; `models` and `info` never import torch.

One module per command or command group (`index.py`, `query.py`, ...); what they share (the consoles, the
--index and --catalogue options, `fail`, the argument checks, the progress bar) is in `common.py`. A command
module imports only `common` and, inside its functions, the library. To add a command:

- a command: a module `msearch/cli/NAME.py` with a function `NAME(...)` (its parameters are the options, its
  docstring the help), and one line below: `app.command()(NAME.NAME)`;
- a group of commands (`msearch NAME SUBCOMMAND`): a module with its own `app = typer.Typer(help=...)` whose
  commands are declared with `@app.command("SUBCOMMAND")`, and one line below:
  `app.add_typer(NAME.app, name="NAME")`.

Commands are listed in `msearch --help` in the order they are registered here.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from msearch.cli import (
    align,
    catalogue,
    change,
    classify,
    collection,
    detect,
    evaluate,
    export,
    index,
    info,
    locate,
    models,
    query,
    serve,
    timeline,
)

# Paragraphs are single lines: the help keeps line breaks as written and wraps to the terminal itself.
APP_HELP = """Search archives of Sentinel-2 imagery by text, in ten languages.

Index a folder of tiles once, then search it; re-indexing adds only new or changed tiles.

  msearch index ./tiles              embed every tile of an archive
  msearch query "flooded farmland"   the tiles that match a sentence best
  msearch eval queries.csv           mAP@100 of the search on labelled queries

The index is ./msearch-index, or --index DIR, or $MSEARCH_INDEX. `msearch info` shows what it holds, `msearch models` the encoders and their weights, `msearch COMMAND --help` a command's options.
"""


class _Commands(TyperGroup):
    """Flags take no value, so their help shows no value type (typer would print `<bool>` beside each,
    --help included). Applied to every command as it is looked up, whoever declares it."""

    def get_params(self, ctx):
        return _without_flag_types(super().get_params(ctx))

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None:
            _without_flag_types(command.get_params(ctx))
        return command


def _without_flag_types(params):
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


app = typer.Typer(cls=_Commands, no_args_is_help=True, add_completion=False, help=APP_HELP)


@app.callback()
def main() -> None:
    # An explicit callback keeps the commands subcommands: typer runs a lone command as the app itself.
    pass


# The commands, in the order `msearch --help` lists them: one line each (see the module's docstring).
app.command()(index.index)
app.command()(info.info)
app.command()(query.query)
app.command()(timeline.timeline)
app.command()(change.change)
app.command()(locate.locate)
app.command("eval")(evaluate.evaluate)
app.command()(align.align)
app.command()(classify.classify)
app.command()(models.models)
app.command()(export.export)
app.command()(serve.serve)
app.add_typer(catalogue.app, name="catalogue")
app.add_typer(collection.app, name="collection")
app.command()(detect.detect)
