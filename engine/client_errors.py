"""Errors a client-facing backend raises instead of answering a KV command.

A client server (RESP, HTTP) hands decoded KV commands to a backend (the
node's router, or ``engine.resp.local_backend`` for one in-process state
machine). Most outcomes are *results* (``engine.kv_codec.Result``), including
a bad request the state machine itself refused (``Error(ERR, ...)``). The
exceptions here are for what the state machine never saw or whose fate is
unknown, and each maps to exactly one client-visible error kind so that a
client can decide whether a retry is safe:

=============  ==========  =======================================================
exception      RESP reply  meaning for the client
=============  ==========  =======================================================
``BadRequest`` ``-ERR``    the request is malformed or refused; retrying it as is
                           will fail again.
``TryAgain``   ``-TRYAGAIN`` nothing was applied (no leader yet, range moving,
                           overloaded): safe to retry the same command.
``Timeout``    ``-TIMEOUT`` the outcome is unknown: the command may or may not
                           have been applied (a proposal whose commit we did not
                           observe in time). Retrying a non-idempotent command
                           (INCR) may apply it twice.
=============  ==========  =======================================================

Rule: a backend raises ``TryAgain`` only when it *knows* nothing was applied;
when in doubt it must raise ``Timeout``. Confusing the two breaks the
exactly-once expectations of clients that retry on ``TRYAGAIN``.
"""

from __future__ import annotations

__all__ = ["BadRequest", "ClientError", "Timeout", "TryAgain"]


class ClientError(Exception):
    """Root of the errors a backend reports for a client command."""


class BadRequest(ClientError):
    """The request cannot be served as given (reply ``-ERR``)."""


class TryAgain(ClientError):
    """Not applied, safe to retry: no leader yet or the range is moving."""


class Timeout(ClientError):
    """Outcome unknown: the command may have been applied."""
