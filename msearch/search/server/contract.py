"""The API's contract: one error body, the statuses each operation documents, and the machinery that makes
the server answer exactly what its OpenAPI schema (FastAPI's own, at /api/openapi.json) says.

A route documents the statuses of its own with `responses=errors(404, 422)` (and, where the general meaning
is not enough, `errors(422, why={422: "..."})`); `install(app)` adds what every operation can answer:

    400  the request does not match the schema: a parameter of the wrong type, out of range, too long,
         repeated (single-valued parameters may appear once) or unknown; a body that is not the documented
         JSON object, or names a field twice (FastAPI's validation errors, which it would answer 422
         {"detail": [...]})
    401  with a token only: the request lacks `Authorization: Bearer TOKEN` (every /api path)
    413  operations with a body: the body is larger than MAX_BODY_BYTES
    414  the URL (path and query) is longer than MAX_URL_BYTES

and answers a method a path does not have with 405 and an `Allow` header listing all of the path's methods.
422 means the request matches the schema but breaks a rule the schema cannot state (a rule across values,
an id that names nothing in the index): the message says which. Every error is {"error": "what to change"}.
"""

from __future__ import annotations

import json
import typing

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

MAX_URL_BYTES = 16_384  # the longest valid URL (a 1,000-character query of 4-byte characters) is ~13 KB
MAX_BODY_BYTES = 65_536  # the largest valid POST /api/search body is ~16 KB
# uvicorn refuses a request head beyond this, before the app sees it (its own plain-text 400): far above
# MAX_URL_BYTES, so that an over-long URL gets the 414 the schema documents.
UVICORN_LIMITS = {"h11_max_incomplete_event_size": 4 * MAX_URL_BYTES}
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")  # OpenAPI's operations

MEANINGS = {
    400: "The request does not match this schema (a parameter of the wrong type, out of range, too long, "
    "repeated or unknown; a body that is not the documented JSON object).",
    401: "This server needs a token: send `Authorization: Bearer TOKEN`.",
    404: "No such resource.",
    409: "The index changed under the server in a way it cannot follow: restart `msearch serve`.",
    413: f"The request body is larger than {MAX_BODY_BYTES} bytes.",
    414: f"The URL is longer than {MAX_URL_BYTES} bytes.",
    422: "The request matches the schema but breaks a rule the schema cannot state; the message says which.",
}


class ErrorBody(BaseModel):
    """Every error the server answers, whatever its status."""

    error: str = Field(description="What was wrong, and what to change.")


class ApiError(Exception):
    """An error answered as {"error": message} with `status`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def errors(*statuses: int, why: dict[int, str] | None = None) -> dict[int, dict]:
    """The `responses=` of a route: each status with the error body, described by MEANINGS or by `why`."""
    why = why or {}
    return {status: {"model": ErrorBody, "description": why.get(status, MEANINGS[status])} for status in statuses}


def install(app: FastAPI, token: str | None) -> None:
    """Make `app` keep the contract: error handlers, parameter strictness, size limits, and the schema that
    documents them. Call it once, first thing after creating the app: routes and routers added after it (by
    `@app.get` or `include_router`) get all of it."""
    app.router.dependencies.append(_strict_query_dependency())
    app.add_middleware(RequestLimits)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError):
        found = exc.errors()
        # A path whose parameter is not a valid value (a tile id of letters) names nothing: 404, as a
        # path of no route is.
        status = 404 if found and all(e.get("loc", ("",))[0] == "path" for e in found) else 400
        return JSONResponse({"error": validation_message(found)}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        headers = dict(exc.headers or {})
        message = "not found" if exc.status_code == 404 else str(exc.detail)
        if exc.status_code == 405:
            allowed = path_methods(app, request.scope)
            headers["Allow"] = ", ".join(allowed)
            message = f"{request.method} is not a method of {request.url.path}: use {' or '.join(allowed)}"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=headers)

    def schema() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = contract_schema(app, token)
        return app.openapi_schema

    app.openapi = schema


def path_methods(app: FastAPI, scope: dict) -> list[str]:
    """Every method that some route answers on this request's path (starlette's 405 names one route's). Asked
    of the routes by matching, so routers included from other modules count too."""
    return sorted(
        method
        for method in HTTP_METHODS
        if any(route.matches(dict(scope, method=method))[0] == Match.FULL for route in app.router.routes)
    )


def contract_schema(app: FastAPI, token: str | None) -> dict:
    """FastAPI's schema with the statuses every operation can answer, the error body in place of FastAPI's
    validation error, and (with a token) the bearer scheme on every /api operation."""
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        openapi_version=app.openapi_version,
    )
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}

    def error_response(status: int) -> dict:
        return {"description": MEANINGS[status], "content": {"application/json": {"schema": error_ref}}}

    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            validation = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if validation.get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]  # never answered: validation errors are 400 with the error body
            added = [400, 414] + ([413] if "requestBody" in operation else [])
            if token and path.startswith("/api"):
                added.append(401)
                operation["security"] = [{"bearer": []}]
            for status in added:
                responses.setdefault(str(status), error_response(status))
            for status, response in responses.items():
                if status.isdigit() and int(status) in MEANINGS:  # FastAPI gives them the route's media type
                    response["content"] = error_response(int(status))["content"]
            operation["responses"] = dict(sorted(responses.items()))
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["ErrorBody"] = ErrorBody.model_json_schema()
    if token:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return schema


def validation_message(found: list[dict]) -> str:
    parts = []
    for error in found[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "body", "path"))
        parts.append(f"{where or 'request body'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _strict_query_dependency():
    """A dependency of every route in the schema: its query may hold only the route's parameters, each
    single-valued one once, and a JSON body each name once (FastAPI would silently take the last of repeated
    values, and ignore a misspelt name)."""
    from fastapi import Depends

    async def strict_request(request: Request) -> None:
        route = request.scope.get("route")
        if not getattr(route, "include_in_schema", False):  # the page: its address holds its own state
            return
        known, single = _query_names(route)
        names = [name for name, _ in request.query_params.multi_items()]
        unknown = sorted(set(names) - known)
        if unknown:
            expected = ", ".join(sorted(known)) or "none"
            raise ApiError(400, f"unknown query parameter {', '.join(unknown)[:200]} (this path takes: {expected})")
        repeated = sorted(name for name in single if names.count(name) > 1)
        if repeated:
            raise ApiError(400, f"{', '.join(repeated)} may be given once (it was repeated)")
        if "json" in request.headers.get("content-type", ""):
            body = await request.body()  # already read (and parsed) by FastAPI: this is its cached copy
            try:
                json.loads(body or b"null", object_pairs_hook=_unique_names)
            except _RepeatedName as exc:
                raise ApiError(400, f"{str(exc)[:100]} may be given once in the body (it was repeated)") from None
            except ValueError:
                pass  # not JSON: FastAPI's validation says so

    return Depends(strict_request)


class _RepeatedName(Exception):
    pass


def _unique_names(pairs: list[tuple[str, object]]) -> dict:
    names = [name for name, _ in pairs]
    for name in names:
        if names.count(name) > 1:
            raise _RepeatedName(name)
    return dict(pairs)


def _query_names(route) -> tuple[frozenset[str], frozenset[str]]:
    """A route's query parameter names, and those that take one value."""
    fields, pending = [], [route.dependant]
    while pending:  # the route's own parameters and its dependencies'
        dependant = pending.pop()
        fields += dependant.query_params
        pending += dependant.dependencies
    known = frozenset(field.alias for field in fields)
    single = frozenset(field.alias for field in fields if not _is_sequence(field.field_info.annotation))
    return known, single


def _is_sequence(annotation) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    return any(_is_sequence(arg) for arg in typing.get_args(annotation)) if origin is not None else False


class RequestLimits:
    """414 for a URL over MAX_URL_BYTES and 413 for a body over MAX_BODY_BYTES (by Content-Length, or
    counted as it arrives: the app's exception handler answers it), before the app reads anything."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        url_bytes = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
        if url_bytes > MAX_URL_BYTES:
            return await _send_error(send, 414, f"the URL is {url_bytes} bytes; at most {MAX_URL_BYTES} are read")
        length = dict(scope.get("headers", [])).get(b"content-length", b"")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return await _send_error(send, 413, f"the body is {int(length)} bytes; at most {MAX_BODY_BYTES} are read")
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:  # a body sent without a length, or longer than it said
                    raise StarletteHTTPException(413, f"the body is over {MAX_BODY_BYTES} bytes")
            return message

        await self.app(scope, counted_receive, send)


async def _send_error(send, status: int, message: str) -> None:
    response = JSONResponse({"error": message}, status_code=status)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})
