"""``open_log_store``: pick a log-store backend by name (the ``[logstore] backend`` key).

Backends register by name with the module and class that implement them and
are imported only when opened, so a backend's dependencies (or its absence
while it is being built) never break the others. ``available_backends()``
lists the registered backends whose module is present; a backend that is
present but fails to import is an error, never silently skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import TYPE_CHECKING, cast

from logstore.errors import InvalidArgument
from logstore.protocol import LogStore

#: name -> (module, class, third-party module it needs or ""). Every backend
#: takes ``(path, **options)`` and rejects unknown options with ``InvalidArgument``.
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "segmented": ("logstore.segmented", "SegmentedLogStore", ""),
    "sqlite": ("logstore.sqlite", "SqliteLogStore", ""),
    "memory": ("logstore.memory", "MemoryLogStore", ""),
    "rocksdb": ("logstore.rocksdb", "RocksdbLogStore", "rocksdict"),  # optional wheel
}

#: Backends that keep their data across close/reopen (and a crash).
DURABLE_BACKENDS = frozenset({"segmented", "sqlite", "rocksdb"})

DEFAULT_BACKEND = "segmented"

if TYPE_CHECKING:  # mypy proves the backends implement the protocol
    from logstore.memory import MemoryLogStore
    from logstore.rocksdb import RocksdbLogStore
    from logstore.sqlite import SqliteLogStore

    _CONFORMING: tuple[type[LogStore], ...] = (MemoryLogStore, SqliteLogStore, RocksdbLogStore)


def available_backends() -> list[str]:
    """Registered backends whose implementing module exists, in registry order."""
    return [name for name in _REGISTRY if _present(name)]


def open_log_store(
    backend: str, path: str | os.PathLike[str] | None = None, **options: object
) -> LogStore:
    """Open (creating if needed) the ``backend`` log store at directory ``path``.

    ``path`` may be omitted only for ``memory``. Unknown backends and options
    raise ``InvalidArgument``.
    """
    entry = _REGISTRY.get(backend)
    if entry is None:
        raise InvalidArgument(
            f"unknown log store backend {backend!r}; choose one of {', '.join(_REGISTRY)}"
        )
    module_name, class_name, needs = entry
    if not _present(backend):
        what = f"needs the {needs!r} package" if needs else "is not in this build"
        raise InvalidArgument(f"log store backend {backend!r} {what}")
    if path is None and backend in DURABLE_BACKENDS:
        raise InvalidArgument(f"log store backend {backend!r} needs a directory path")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cast(LogStore, cls(path, **options))


def _present(backend: str) -> bool:
    module_name, _, needs = _REGISTRY[backend]
    return all(importlib.util.find_spec(m) is not None for m in (module_name, needs) if m)
