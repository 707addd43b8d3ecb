"""engine/admin/server.py over the real LocalBackend, through aiohttp's test
server (real HTTP on loopback): endpoints, validation, error mapping."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine import admin, client_errors
from engine.admin import (
    LocalBackend,
    NodeMetrics,
    NodeStatus,
    RangeInfo,
    Timeout,
    TryAgain,
    create_admin_app,
)

pytestmark = pytest.mark.timeout(30)

Scenario = Callable[[TestClient[Any, Any]], Awaitable[None]]


def run(scenario: Scenario, backend: Any = None, **limits: int) -> NodeMetrics:
    metrics = NodeMetrics(node_id=1)

    async def main() -> None:
        app = create_admin_app(backend or LocalBackend(), metrics, **limits)
        async with TestClient(TestServer(app)) as client:
            await scenario(client)

    asyncio.run(main())
    return metrics


async def ok_json(resp: Any, status: int = 200) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json()


def test_health_status_ranges() -> None:
    async def scenario(c: TestClient[Any, Any]) -> None:
        assert await ok_json(await c.get("/health")) == {"status": "ok", "node_id": 1}
        status = await ok_json(await c.get("/status"))
        assert status["node_id"] == 1 and status["ranges"] == 3
        ranges = (await ok_json(await c.get("/ranges")))["ranges"]
        assert [(r["range_id"], r["start"], r["end"]) for r in ranges] == [
            (1, "", "g"), (2, "g", "p"), (3, "p", "")]
        assert ranges[1]["start_hex"] == "67" and ranges[0]["voters"] == [1]

    run(scenario, LocalBackend(split_points=(b"g", b"p")))


def test_kv_round_trip_and_split_merge_move_data() -> None:
    async def scenario(c: TestClient[Any, Any]) -> None:
        for k in ("a", "k", "m", "x y", "z/1"):
            await ok_json(await c.put(f"/kv/{k}", data=f"v-{k}".encode()))
        resp = await c.get("/kv/z%2F1")
        assert resp.status == 200 and await resp.read() == b"v-z/1"
        assert (await c.get("/kv/missing")).status == 404
        split = await ok_json(await c.post("/ranges/1/split", json={"key": "m"}))
        assert (split["left"]["end"], split["right"]["start"]) == ("m", "m")
        assert (split["left"]["keys"], split["right"]["keys"]) == (2, 3)
        assert split["left"]["generation"] == split["right"]["generation"] == 1
        right_id = split["right"]["range_id"]
        auto = await ok_json(await c.post(f"/ranges/{right_id}/split"))  # middle key
        assert auto["left"]["keys"] + auto["right"]["keys"] == 3
        assert await (await c.get("/kv/x y")).read() == b"v-x y"
        merged = await ok_json(await c.post(f"/ranges/{right_id}/merge", data=b""))
        assert merged["range"]["keys"] == 3 and merged["range"]["end"] == ""
        assert merged["range"]["generation"] == 3
        hexsplit = await ok_json(await c.post("/ranges/1/split", json={"key_hex": "6b"}))
        assert hexsplit["right"]["start"] == "k"
        assert await ok_json(await c.delete("/kv/a")) == {"deleted": True}
        assert await ok_json(await c.delete("/kv/a")) == {"deleted": False}
        assert (await c.get("/kv/a")).status == 404
        status = await ok_json(await c.get("/status"))
        assert status["keys"] == 4 and status["ranges"] == 3

    run(scenario)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/ranges/abc/split", None, 400, "range id must be a decimal"),
        ("POST", "/ranges/0/split", None, 400, "range id must be a decimal"),
        ("POST", "/ranges/18446744073709551616/merge", None, 400, "range id"),
        ("POST", "/ranges/7/split", None, 404, "unknown range r7"),
        ("POST", "/ranges/1/split", b"{not json", 400, "body is not valid JSON"),
        ("POST", "/ranges/1/split", b"[1]", 400, "body must be a JSON object"),
        ("POST", "/ranges/1/split", b'{"key": 5}', 400, "key must be a non-empty string"),
        ("POST", "/ranges/1/split", b'{"key_hex": "zz"}', 400, "key_hex must be non-empty hex"),
        ("POST", "/ranges/1/split", b'{"key": "a", "key_hex": "61"}', 400, "not both"),
        ("POST", "/ranges/1/split", b'{"kee": "a"}', 400, "unknown field(s) ['kee']"),
        ("POST", "/ranges/1/split", b'{"key": "z"}', 400, "not strictly inside"),
        ("POST", "/ranges/2/split", None, 409, "too few keys"),
        ("POST", "/ranges/2/merge", None, 409, "last range"),
        ("POST", "/ranges/1/merge", b'{"x": 1}', 400, "unknown field"),
        ("POST", "/ranges/1/transfer-leader", b"{}", 400, "missing field 'target'"),
        ("POST", "/ranges/1/transfer-leader", b'{"target": "2"}', 400, "target must be a node"),
        ("POST", "/ranges/1/transfer-leader", b'{"target": 2}', 409, "single-node local"),
        ("POST", "/ranges/1/replicas", b"{}", 400, "exactly one of"),
        ("POST", "/ranges/1/replicas", b'{"add": 2, "remove": 1}', 400, "exactly one of"),
        ("POST", "/ranges/1/replicas", b'{"remove": 0}', 400, "remove must be a node id"),
        ("POST", "/ranges/1/replicas", b'{"add": 2}', 409, "single-node local"),
        ("POST", "/ranges/9/replicas", b'{"add": 2}', 404, "unknown range r9"),
        ("GET", "/ranges/1/snapshot", None, 409, "no durable image file"),
        ("GET", "/ranges/9/snapshot", None, 404, "unknown range r9"),
        ("GET", "/nope", None, 404, "Not Found"),
        ("DELETE", "/ranges", None, 405, "Method Not Allowed"),
        ("PUT", "/kv/" + "k" * 40, b"v", 400, "key is 40 bytes, the limit is 32"),
        ("PUT", "/kv/k", b"v" * 101, 413, "value is 101 bytes, the limit is 100"),
        ("POST", "/ranges/\u0661/split", None, 400, "range id must be a decimal"),
    ],
)
def test_bad_requests_get_clear_errors(
    method: str, path: str, body: bytes | None, status: int, message: str
) -> None:
    async def scenario(c: TestClient[Any, Any]) -> None:
        resp = await c.request(method, path, data=body)
        assert resp.status == status, await resp.text()
        assert message in (await resp.json())["error"]
        assert (await c.get("/health")).status == 200  # still serving

    run(scenario, LocalBackend(split_points=(b"m",)), max_key_bytes=32, max_value_bytes=100)


class _FailingBackend(LocalBackend):
    """The real backend, with ranges() failing the way a node's can."""

    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    async def ranges(self) -> list[RangeInfo]:
        raise self.exc

    async def status(self) -> NodeStatus:
        raise RuntimeError("bug")


@pytest.mark.parametrize(
    ("exc", "status", "retry_after"),
    [(TryAgain("no leader yet", retry_after_s=2.5), 503, "3"),
     (Timeout("no answer from worker 1"), 504, None),
     (client_errors.TryAgain("range moving"), 503, "1"),
     (client_errors.Timeout("outcome unknown"), 504, None),
     (client_errors.BadRequest("key too long"), 400, None)],
)
def test_backend_errors_map_to_status(exc: Exception, status: int, retry_after: str | None) -> None:
    async def scenario(c: TestClient[Any, Any]) -> None:
        resp = await c.get("/ranges")
        assert resp.status == status
        assert resp.headers.get("Retry-After") == retry_after
        assert (await resp.json())["error"] == str(exc)

    run(scenario, _FailingBackend(exc))


def test_unexpected_exception_is_500_and_server_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario(c: TestClient[Any, Any]) -> None:
        resp = await c.get("/status")
        assert resp.status == 500
        assert "internal error" in (await resp.json())["error"]
        assert (await c.get("/health")).status == 200

    run(scenario, _FailingBackend(ValueError()))
    assert "admin GET /status failed" in caplog.text


def test_metrics_endpoint_counts_admin_requests() -> None:
    async def scenario(c: TestClient[Any, Any]) -> None:
        await c.get("/health")
        await c.post("/ranges/5/merge")
        resp = await c.get("/metrics")
        assert resp.status == 200 and resp.content_type == "text/plain"
        text = await resp.text()
        assert 'multiraft_admin_requests_total{endpoint="/health",status="200"} 1.0' in text
        assert ('multiraft_admin_requests_total{endpoint="/ranges/{id}/merge",status="404"} 1.0'
                in text)

    run(scenario)


def test_large_values_round_trip_and_oversized_streams_are_refused() -> None:
    big = bytes(range(256)) * 4096  # 1 MiB: arrives in many chunks

    async def chunks(data: bytes) -> Any:
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]

    async def scenario(c: TestClient[Any, Any]) -> None:
        await ok_json(await c.put("/kv/big", data=big))
        assert await (await c.get("/kv/big")).read() == big
        # Chunked, so no Content-Length to check up front: aiohttp's cap refuses it.
        resp = await c.put("/kv/huge", data=chunks(big * 2 + b"x"))
        assert resp.status == 413
        assert "error" in await resp.json()
        assert (await c.get("/kv/huge")).status == 404

    run(scenario, max_value_bytes=2 << 20)


def test_public_api_is_pinned() -> None:
    assert sorted(admin.__all__) == sorted(admin._WHERE)
    for name in admin.__all__:
        assert getattr(admin, name).__module__.startswith("engine.admin."), name
    with pytest.raises(AttributeError):
        _ = admin.NoSuchThing
