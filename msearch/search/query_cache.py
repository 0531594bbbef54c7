"""Query embeddings already computed, by encoder identity, in a SQLite file in msearch's cache folder.

A query asked before (by anyone sharing the cache) is answered without importing torch or loading a model.
Vectors are stored only after the encoder's identity was checked against the space's manifest, so a hit
under (card, weights sha256, text) is exactly what that encoder would compute.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import Boolean, Column, LargeBinary, MetaData, String, Table, Text, create_engine, delete, func, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError

from msearch.config import cache_dir

CACHE_FILE = "queries.sqlite"
# 2 KB a 512-d vector: the cache stays under ~100 MB; the least recently used entries go first.
MAX_ENTRIES = 50_000

metadata = MetaData()
embeddings = Table(
    "embeddings",
    metadata,
    Column("card", String(128), primary_key=True),
    Column("weights_sha256", String(64), primary_key=True),
    Column("text", Text, primary_key=True),
    Column("vector", LargeBinary, nullable=False),  # float32, little-endian, L2-normalised
    Column("truncated", Boolean, nullable=False),  # the tokenizer cut the text to its context length
    Column("used", String(32), nullable=False, server_default=func.datetime("now")),
)


class QueryCache:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else cache_dir() / CACHE_FILE
        self._engine = None

    @property
    def engine(self):
        if self._engine is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._engine = create_engine(f"sqlite:///{self.path}", connect_args={"timeout": 10})
            metadata.create_all(self._engine)
        return self._engine

    def get(self, card: str, weights_sha256: str, text: str) -> tuple[np.ndarray, bool] | None:
        """(vector, truncated) of a text embedded before by this encoder, or None."""
        key = (embeddings.c.card == card, embeddings.c.weights_sha256 == weights_sha256, embeddings.c.text == text)
        try:
            with self.engine.begin() as conn:
                row = conn.execute(select(embeddings.c.vector, embeddings.c.truncated).where(*key)).first()
                if row is not None:
                    conn.execute(embeddings.update().where(*key).values(used=func.datetime("now")))
        except OperationalError:  # an unreadable or locked cache is a miss, never a failed query
            return None
        return (np.frombuffer(row[0], dtype="<f4").copy(), bool(row[1])) if row is not None else None

    def put(self, card: str, weights_sha256: str, text: str, vector: np.ndarray, truncated: bool) -> None:
        values = dict(
            card=card,
            weights_sha256=weights_sha256,
            text=text,
            truncated=truncated,
            vector=np.ascontiguousarray(vector, dtype="<f4").tobytes(),
        )
        statement = sqlite_insert(embeddings).values(values)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=["card", "weights_sha256", "text"],
                        set_={
                            "vector": statement.excluded.vector,
                            "truncated": statement.excluded.truncated,
                            "used": func.datetime("now"),
                        },
                    )
                )
                if conn.execute(select(func.count()).select_from(embeddings)).scalar() > MAX_ENTRIES:
                    newest_dropped = (
                        select(embeddings.c.used)
                        .order_by(embeddings.c.used.desc())
                        .offset(MAX_ENTRIES)
                        .limit(1)
                        .scalar_subquery()
                    )
                    conn.execute(delete(embeddings).where(embeddings.c.used <= newest_dropped))
        except OperationalError:  # a read-only or full disk: the query was answered, only the cache is lost
            pass
