"""``AdminClient``: a small synchronous client of the HTTP admin API (used by the CLI).

Why urllib and not aiohttp: the CLI makes one request and exits; a blocking
stdlib call needs no event loop and no session lifetime to manage.

Errors: a non-2xx answer raises ``AdminRequestFailed`` carrying the status
and the server's ``error`` message; a node that cannot be reached raises
``AdminUnreachable``. Both are ``AdminClientError``s.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["AdminClient", "AdminClientError", "AdminRequestFailed", "AdminUnreachable"]

JSON = dict[str, Any]


class AdminClientError(Exception):
    """Root of the admin client's errors."""


class AdminUnreachable(AdminClientError):
    """No HTTP answer at all (refused, timed out, DNS)."""


class AdminRequestFailed(AdminClientError):
    """The node answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class AdminClient:
    """Talks to one node's admin listener, e.g. ``AdminClient("127.0.0.1:8401")``."""

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        self.base = address if "://" in address else f"http://{address}"
        self.timeout = timeout

    def _request(self, method: str, path: str, body: bytes | None = None,
                 content_type: str = "application/json") -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                message = str(json.loads(raw)["error"])
            except (ValueError, KeyError, TypeError):
                message = raw.decode("utf-8", "replace") or str(e.reason)
            raise AdminRequestFailed(e.code, message) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise AdminUnreachable(f"cannot reach {self.base}: {reason}") from None

    def _json(self, method: str, path: str, body: JSON | None = None) -> JSON:
        data = None if body is None else json.dumps(body).encode()
        _, raw = self._request(method, path, data)
        out: JSON = json.loads(raw)
        return out

    def health(self) -> JSON:
        return self._json("GET", "/health")

    def status(self) -> JSON:
        return self._json("GET", "/status")

    def ranges(self) -> list[JSON]:
        out: list[JSON] = self._json("GET", "/ranges")["ranges"]
        return out

    def split(self, range_id: int, key: str | None = None) -> JSON:
        return self._json("POST", f"/ranges/{range_id}/split", {} if key is None else {"key": key})

    def merge(self, range_id: int) -> JSON:
        return self._json("POST", f"/ranges/{range_id}/merge", {})

    def transfer_leader(self, range_id: int, target: int) -> JSON:
        return self._json("POST", f"/ranges/{range_id}/transfer-leader", {"target": target})

    def change_replicas(self, range_id: int, *, add: int | None = None,
                        remove: int | None = None) -> JSON:
        body: JSON = {"add": add} if add is not None else {"remove": remove}
        return self._json("POST", f"/ranges/{range_id}/replicas", body)

    def _kv_path(self, key: str) -> str:
        return "/kv/" + urllib.parse.quote(key, safe="")

    def kv_get(self, key: str) -> bytes | None:
        try:
            return self._request("GET", self._kv_path(key))[1]
        except AdminRequestFailed as e:
            if e.status == 404:
                return None
            raise

    def kv_put(self, key: str, value: bytes) -> None:
        self._request("PUT", self._kv_path(key), value, "application/octet-stream")

    def kv_delete(self, key: str) -> bool:
        return bool(self._json("DELETE", self._kv_path(key))["deleted"])
