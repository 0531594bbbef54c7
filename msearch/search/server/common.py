"""What the API's routers share: the error they raise and the body it becomes, the tile lookup by id, and the
limits on what a client may send."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from msearch.search.language import AUTO, SUPPORTED_LANGUAGES
from msearch.search.searcher import Searcher

MAX_QUERY_CHARS = 1000  # the text towers read 77 tokens; longer texts are only a cost
LANGUAGES = (AUTO, *SUPPORTED_LANGUAGES)
# A tile id as SQLite stores it: a positive 64-bit integer (a larger one would be an overflow, not a 404).
TileId = Annotated[int, Field(ge=1, lt=2**63)]


class ApiError(Exception):
    """Answered as {"error": message} with `status` (the app's exception handler)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class ErrorBody(BaseModel):
    """Every 4xx answer's body: what to change."""

    error: str


def error_responses(descriptions: dict[int, str]) -> dict:
    """FastAPI `responses=` for the error statuses a route answers: {status: when}."""
    return {status: {"model": ErrorBody, "description": text} for status, text in descriptions.items()}


def tile_row(searcher: Searcher, tile_id: str) -> dict:
    # The id is only ever a catalogue key: anything but a plain number (a path, `..`) is simply not a tile.
    if not (tile_id.isascii() and tile_id.isdigit() and len(tile_id) <= 18):
        raise ApiError(404, f"no tile {tile_id[:40]!r}: tiles are named by their numeric id")
    row = searcher.store.tiles_by_id([int(tile_id)]).get(int(tile_id))
    if row is None:
        raise ApiError(404, f"no tile with id {tile_id} in this index")
    return row
