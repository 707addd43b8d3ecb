"""The HTTP admin API of a node: server, client, metrics and the backend seam.

``create_admin_app(backend, metrics)`` serves the endpoints of the contract
over any ``AdminBackend``; ``NodeMetrics`` is the node's Prometheus registry;
``AdminClient`` is what the ``multiraft`` admin commands use;
``LocalBackend`` is a real single-node backend over in-process KV state
machines (tests, demos).

Names are imported lazily (PEP 562 ``__getattr__``): the CLI's admin
commands need only the urllib client, and importing aiohttp and
prometheus-client for them would add ~0.4 s to every ``multiraft`` call.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.admin.backend import (
        AdminBackend,
        AdminError,
        BadRequest,
        Conflict,
        NodeStatus,
        RangeInfo,
        Timeout,
        TryAgain,
        UnknownRange,
    )
    from engine.admin.client import (
        AdminClient,
        AdminClientError,
        AdminRequestFailed,
        AdminUnreachable,
    )
    from engine.admin.local_backend import LocalBackend
    from engine.admin.metrics import NodeMetrics, WorkerTotals, run_loop_lag_monitor
    from engine.admin.server import create_admin_app


_MODULES = {
    "engine.admin.backend": ("AdminBackend", "AdminError", "BadRequest", "Conflict", "NodeStatus",
                             "RangeInfo", "Timeout", "TryAgain", "UnknownRange"),
    "engine.admin.client": ("AdminClient", "AdminClientError", "AdminRequestFailed",
                            "AdminUnreachable"),
    "engine.admin.local_backend": ("LocalBackend",),
    "engine.admin.metrics": ("NodeMetrics", "WorkerTotals", "run_loop_lag_monitor"),
    "engine.admin.server": ("create_admin_app",),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.admin' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AdminBackend",
    "AdminClient",
    "AdminClientError",
    "AdminError",
    "AdminRequestFailed",
    "AdminUnreachable",
    "BadRequest",
    "Conflict",
    "LocalBackend",
    "NodeMetrics",
    "NodeStatus",
    "RangeInfo",
    "Timeout",
    "TryAgain",
    "UnknownRange",
    "WorkerTotals",
    "create_admin_app",
    "run_loop_lag_monitor",
]
