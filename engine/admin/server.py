"""The HTTP admin API: an aiohttp application over an ``AdminBackend``.

Endpoints (the contract in ARCHITECTURE.md)
-------------------------------------------
=======  ==============================  ==========================================
method   path                            body -> answer
=======  ==============================  ==========================================
GET      /health                         -> {"status": "ok", "node_id": n}
GET      /status                         -> NodeStatus JSON
GET      /ranges                         -> {"ranges": [RangeInfo JSON, ...]}
POST     /ranges/{id}/split              {} | {"key": s} | {"key_hex": h} -> {"left", "right"}
POST     /ranges/{id}/merge              {} (with the right neighbour) -> {"range"}
POST     /ranges/{id}/transfer-leader    {"target": node} -> {"range"}
POST     /ranges/{id}/replicas           {"add": node} | {"remove": node} -> {"range"}
GET      /ranges/{id}/snapshot           -> this node's newest durable image file of
                                            the range (application/octet-stream)
GET      /metrics                        -> Prometheus text format
GET      /kv/{key}                       -> the value (application/octet-stream) or 404
PUT      /kv/{key}                       raw value bytes -> {"ok": true}
DELETE   /kv/{key}                       -> {"deleted": bool}
=======  ==============================  ==========================================

Rules
-----
- Input is validated here, before the backend sees it: a range id is a
  decimal 1..2**64-1, bodies are JSON objects with exactly the documented
  fields and types, keys and values respect the configured size limits.
  Anything else is 400 with ``{"error": "..."}`` saying what was wrong.
- Backend errors map to statuses in one place (``_STATUS``): unknown range
  404, conflict 409, ``TryAgain`` 503 with ``Retry-After``, ``Timeout`` 504.
  Any other exception is a bug: logged with its traceback, answered 500,
  and the server goes on serving (bad input never takes the node down).
- ``/ranges/{id}/snapshot`` streams the file in chunks through ``aiofiles``
  (a thread), never reading a file on the event loop: an image can be large
  and the loop serves every client. The file is opened once, so a newer
  image replacing it meanwhile (an atomic rename) does not tear the download.
- ``/kv/{key}`` takes the key from the URL path, percent-decoded, as UTF-8
  bytes: ``curl -X PUT --data-binary @file localhost:8401/kv/user%2F1``
  (so keys that are not UTF-8 are reachable over RESP only). A value over
  ``max_value_bytes`` is 413.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import aiofiles
from aiohttp import web

from engine.admin.backend import (
    AdminBackend,
    AdminError,
    BadRequest,
    Conflict,
    Timeout,
    TryAgain,
    UnknownRange,
)
from engine.admin.metrics import CONTENT_TYPE, NodeMetrics
from engine.client_errors import BadRequest as ClientBadRequest
from engine.client_errors import ClientError
from engine.client_errors import Timeout as ClientTimeout
from engine.client_errors import TryAgain as ClientTryAgain

__all__ = ["BACKEND_KEY", "METRICS_KEY", "create_admin_app"]

log = logging.getLogger(__name__)

BACKEND_KEY: Final = web.AppKey("backend", AdminBackend)
METRICS_KEY: Final = web.AppKey("metrics", NodeMetrics)


@dataclass(frozen=True, slots=True)
class _Limits:
    max_key_bytes: int
    max_value_bytes: int


_LIMITS_KEY: Final = web.AppKey("limits", _Limits)

_U64_MAX: Final = (1 << 64) - 1
#: The largest admin JSON body we read: bodies hold at most one key.
_MAX_JSON_BODY: Final = 1 << 20
#: Bytes per read when streaming an image file.
_SNAPSHOT_CHUNK: Final = 1 << 20

#: Error -> status. The ``/kv`` path goes through the same router as RESP, so
#: the client errors of ``engine/client_errors.py`` map here too.
_STATUS: Final[tuple[tuple[type[Exception], int], ...]] = (
    (BadRequest, 400),
    (ClientBadRequest, 400),
    (UnknownRange, 404),
    (Conflict, 409),
    (TryAgain, 503),
    (ClientTryAgain, 503),
    (Timeout, 504),
    (ClientTimeout, 504),
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def _errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map errors to statuses and count every request by route and status."""
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        response = await handler(request)
    except web.HTTPException as e:  # aiohttp's own 404/405/413: keep, but answer in JSON
        response = _error(e.status, e.reason)
    except (AdminError, ClientError) as e:
        status = next((s for cls, s in _STATUS if isinstance(e, cls)), 500)
        headers = None
        if status == 503:
            retry_after = e.retry_after_s if isinstance(e, TryAgain) else 1.0
            headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}
        response = _error(status, str(e), headers)
    except Exception:
        log.exception("admin %s %s failed", request.method, request.path)
        response = _error(500, "internal error (logged on the node)")
    route = request.match_info.route.resource
    endpoint = route.canonical if route is not None else "unmatched"
    metrics = request.app[METRICS_KEY]
    metrics.admin_requests.labels(endpoint=endpoint, status=str(response.status)).inc()
    metrics.admin_request_seconds.labels(endpoint=endpoint).observe(
        time.perf_counter() - started
    )
    return response


# --- input validation -----------------------------------------------------------------------


def _range_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not (text.isascii() and text.isdigit()) or text[0] == "0" or int(text) > _U64_MAX:
        raise BadRequest(f"range id must be a decimal integer 1..2**64-1, got {text!r}")
    return int(text)


async def _json_object(request: web.Request, allowed: frozenset[str]) -> dict[str, object]:
    """The body as a JSON object with only ``allowed`` fields; empty body -> {}."""
    if request.content_length is not None and request.content_length > _MAX_JSON_BODY:
        raise BadRequest(f"body is {request.content_length} bytes, the limit is {_MAX_JSON_BODY}")
    raw = await request.read()  # bounded by client_max_size (413 beyond it)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"body must be a JSON object, got {type(body).__name__}")
    if unknown := sorted(set(body) - allowed):
        raise BadRequest(
            f"unknown field(s) {unknown}; allowed: {sorted(allowed) or 'none'}"
        )
    return body


def _node_id(body: dict[str, object], field: str) -> int:
    value = body[field]
    if type(value) is not int or not 1 <= value <= _U64_MAX:
        raise BadRequest(f"{field} must be a node id (integer 1..2**64-1), got {value!r}")
    return value


def _split_key(body: dict[str, object], max_key: int) -> bytes | None:
    if "key" in body and "key_hex" in body:
        raise BadRequest("give key or key_hex, not both")
    if "key" in body:
        text = body["key"]
        if not isinstance(text, str) or not text:
            raise BadRequest(f"key must be a non-empty string, got {text!r}")
        key = text.encode()
    elif "key_hex" in body:
        text = body["key_hex"]
        try:
            key = bytes.fromhex(text) if isinstance(text, str) else b""
        except ValueError:
            key = b""
        if not key:
            raise BadRequest(f"key_hex must be non-empty hex, got {text!r}")
    else:
        return None
    if len(key) > max_key:
        raise BadRequest(f"key is {len(key)} bytes, the limit is {max_key}")
    return key


def _kv_key(request: web.Request) -> bytes:
    key = request.match_info["key"].encode()
    max_key = request.app[_LIMITS_KEY].max_key_bytes
    if not key:
        raise BadRequest("empty key")
    if len(key) > max_key:
        raise BadRequest(f"key is {len(key)} bytes, the limit is {max_key}")
    return key


# --- handlers ------------------------------------------------------------------------------


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "node_id": request.app[METRICS_KEY].node_id})


async def _status(request: web.Request) -> web.Response:
    return web.json_response((await request.app[BACKEND_KEY].status()).to_json())


async def _ranges(request: web.Request) -> web.Response:
    infos = await request.app[BACKEND_KEY].ranges()
    return web.json_response({"ranges": [i.to_json() for i in infos]})


async def _snapshot(request: web.Request) -> web.StreamResponse:
    range_id = _range_id(request)
    path = await request.app[BACKEND_KEY].snapshot_file(range_id)
    try:
        f = await aiofiles.open(path, "rb")
    except FileNotFoundError:
        raise UnknownRange(range_id) from None  # removed since it was found
    try:
        size = os.fstat(f.fileno()).st_size  # of the file opened, not a newer one
        resp = web.StreamResponse(headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{path.name}"'})
        resp.content_length = size
        await resp.prepare(request)
        while chunk := await f.read(_SNAPSHOT_CHUNK):
            await resp.write(chunk)
    finally:
        await f.close()
    await resp.write_eof()
    return resp


async def _split(request: web.Request) -> web.Response:
    range_id = _range_id(request)
    body = await _json_object(request, frozenset({"key", "key_hex"}))
    key = _split_key(body, request.app[_LIMITS_KEY].max_key_bytes)
    left, right = await request.app[BACKEND_KEY].split(range_id, key)
    return web.json_response({"left": left.to_json(), "right": right.to_json()})


async def _merge(request: web.Request) -> web.Response:
    range_id = _range_id(request)
    await _json_object(request, frozenset())
    merged = await request.app[BACKEND_KEY].merge(range_id)
    return web.json_response({"range": merged.to_json()})


async def _transfer_leader(request: web.Request) -> web.Response:
    range_id = _range_id(request)
    body = await _json_object(request, frozenset({"target"}))
    if "target" not in body:
        raise BadRequest("missing field 'target' (the node to lead the range)")
    info = await request.app[BACKEND_KEY].transfer_leader(range_id, _node_id(body, "target"))
    return web.json_response({"range": info.to_json()})


async def _replicas(request: web.Request) -> web.Response:
    range_id = _range_id(request)
    body = await _json_object(request, frozenset({"add", "remove"}))
    if len(body) != 1:
        raise BadRequest("give exactly one of 'add' or 'remove' (a node id)")
    backend = request.app[BACKEND_KEY]
    if "add" in body:
        info = await backend.change_replicas(range_id, add=_node_id(body, "add"))
    else:
        info = await backend.change_replicas(range_id, remove=_node_id(body, "remove"))
    return web.json_response({"range": info.to_json()})


async def _metrics(request: web.Request) -> web.Response:
    # prometheus-client renders in pure Python, ~25 us per sample line: ~20 ms
    # for a node with 8 workers and 20 commands (loadtest/bench_admin.py). In
    # a thread the GIL's switch interval lets the loop keep serving meanwhile,
    # instead of every client request on this loop waiting out the scrape.
    body = await asyncio.to_thread(request.app[METRICS_KEY].render)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE
    return resp


async def _kv_get(request: web.Request) -> web.Response:
    value = await request.app[BACKEND_KEY].kv_get(_kv_key(request))
    if value is None:
        return _error(404, "no such key")
    return web.Response(body=value, content_type="application/octet-stream")


async def _kv_put(request: web.Request) -> web.Response:
    key = _kv_key(request)
    max_value = request.app[_LIMITS_KEY].max_value_bytes
    if request.content_length is not None and request.content_length > max_value:
        return _error(413, f"value is {request.content_length} bytes, the limit is {max_value}")
    value = await request.read()  # a chunked body is bounded by client_max_size (413)
    if len(value) > max_value:
        return _error(413, f"value is {len(value)} bytes, the limit is {max_value}")
    await request.app[BACKEND_KEY].kv_put(key, value)
    return web.json_response({"ok": True})


async def _kv_delete(request: web.Request) -> web.Response:
    deleted = await request.app[BACKEND_KEY].kv_delete(_kv_key(request))
    return web.json_response({"deleted": deleted})


def create_admin_app(
    backend: AdminBackend, metrics: NodeMetrics, *,
    max_key_bytes: int = 64 * 1024, max_value_bytes: int = 8 << 20,
) -> web.Application:
    """The admin application; run it with ``web.AppRunner`` on ``listen_admin``."""
    # client_max_size bounds what aiohttp buffers for any body (a chunked body
    # has no length to check up front); handlers check declared lengths first
    # so the usual refusal names the limit.
    app = web.Application(
        middlewares=[_errors_and_metrics],
        client_max_size=max(max_value_bytes, _MAX_JSON_BODY),
    )
    app[BACKEND_KEY] = backend
    app[METRICS_KEY] = metrics
    app[_LIMITS_KEY] = _Limits(max_key_bytes, max_value_bytes)
    app.router.add_get("/health", _health)
    app.router.add_get("/status", _status)
    app.router.add_get("/ranges", _ranges)
    app.router.add_post("/ranges/{id}/split", _split)
    app.router.add_post("/ranges/{id}/merge", _merge)
    app.router.add_post("/ranges/{id}/transfer-leader", _transfer_leader)
    app.router.add_post("/ranges/{id}/replicas", _replicas)
    app.router.add_get("/ranges/{id}/snapshot", _snapshot)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/kv/{key:.+}", _kv_get)
    app.router.add_put("/kv/{key:.+}", _kv_put)
    app.router.add_delete("/kv/{key:.+}", _kv_delete)
    return app
