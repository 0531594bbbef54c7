"""`msearch serve`: the search API and the map page."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from msearch.cli.common import CATALOGUE_OPTION, INDEX_OPTION, err_console, fail, space_checkpoints


def serve(
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
    host: str = typer.Option("127.0.0.1", help="Address to listen on; any but loopback needs --token."),
    port: int = typer.Option(8765, min=0, max=65535, help="Port to listen on."),
    token: Optional[str] = typer.Option(
        None, envvar="MSEARCH_TOKEN", help="Require `Authorization: Bearer TOKEN` on every /api request."
    ),
    checkpoint: Optional[List[str]] = typer.Option(
        None, help="SPACE=PATH: local weights for a space's encoder (repeatable)."
    ),
):
    """Serve the search API and the map page (http://127.0.0.1:8765/), keeping the searcher warm."""
    try:
        import uvicorn

        from msearch.search.server import LOOPBACK_NAMES, check_bind, create_app, is_loopback, one_thread_per_request
        from msearch.search.server.contract import UVICORN_LIMITS
    except ImportError as exc:
        fail(f"`msearch serve` needs the serve extra: pip install 'msearch[serve]' ({exc})")
    try:
        check_bind(host, token)
    except ValueError as exc:
        fail(str(exc))
    checkpoints = space_checkpoints(checkpoint)
    from msearch.indexer.readers import ArchivePixels
    from msearch.models import CardError
    from msearch.search.searcher import Searcher
    from msearch.store.catalogue import CatalogueError

    try:
        searcher = Searcher(index, checkpoints, pixels=ArchivePixels(), catalogue=catalogue)
        searcher.spaces()  # a space whose model card is unknown here would fail every request: refuse to start
    except (FileNotFoundError, CatalogueError) as exc:
        fail(str(exc))
    except CardError as exc:
        fail(
            f"the index at {searcher.store.directory} was made with a model card this installation does not "
            f"know: {exc}; put that card's JSON file in $MSEARCH_CARDS or ~/.config/msearch/cards/"
        )
    # Without a token only loopback Host headers are answered: a page elsewhere cannot reach the API by DNS rebinding.
    hosts = None if token else list(LOOPBACK_NAMES)
    err_console.print(
        f"serving {searcher.store.directory} at http://{host}:{port}/"
        + ("" if is_loopback(host) else " (every /api request needs the token)")
    )
    one_thread_per_request()
    application = create_app(searcher, token=token, allowed_hosts=hosts)
    uvicorn.run(application, host=host, port=port, log_level="warning", **UVICORN_LIMITS)
