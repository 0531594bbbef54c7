"""Store tests run against both catalogue backends: SQLite (a file in the index directory) and PostgreSQL (a
throwaway server started once per session, a fresh database per test).

Without a PostgreSQL server the PostgreSQL half is skipped with the reason, except in CI (CI=true), where a
missing server fails the tests."""

from __future__ import annotations

import os

import pytest

from tests.store.postgres_server import PostgresServer, PostgresUnavailable

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_server():
    try:
        server = PostgresServer()
        server.start()
    except PostgresUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs a PostgreSQL server for the catalogue tests: {exc}")
        pytest.skip(f"!!! PostgreSQL catalogue tests SKIPPED: {exc}")
    yield server
    server.stop()


def catalogue_for(request, backend: str) -> str | None:
    """The --catalogue of a test index on `backend`: None (the SQLite default) or a fresh PostgreSQL database."""
    if backend == "sqlite":
        return None
    return request.getfixturevalue("postgres_server").new_database()


@pytest.fixture(params=BACKENDS)
def catalogue(request) -> str | None:
    return catalogue_for(request, request.param)


@pytest.fixture
def pg_catalogue(request) -> str:
    return catalogue_for(request, "postgresql")
