"""The RESP2 (Redis protocol) client front-end.

``RespServer`` serves the RESP contract of ARCHITECTURE.md over any
``KVBackend``; ``LocalBackend`` is one over a single in-process KV state
machine. The parser and the command table are importable from their
modules (``engine.resp.protocol``, ``engine.resp.commands``) for tests and
tools; they are not part of the public surface.
"""

from engine.resp.backend import KVBackend, Outcome
from engine.resp.limits import Limits
from engine.resp.local_backend import LocalBackend
from engine.resp.server import RespServer, ServerStats

__all__ = ["KVBackend", "Limits", "LocalBackend", "Outcome", "RespServer", "ServerStats"]
