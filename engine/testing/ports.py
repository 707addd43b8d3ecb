"""``free_port_base``: a run of local TCP ports for a test or benchmark cluster.

Real node processes bind their own ports, so the harness must choose them
before starting them; asking the kernel for port 0 only yields one. This
probes a run of consecutive ports on 127.0.0.1: very likely free, never
guaranteed (another process may take one meanwhile; the nodes' bind retry
and the callers' start timeouts cover that).
"""

from __future__ import annotations

import socket


def free_port_base(span: int, attempts: int = 100) -> int:
    """A port ``p`` with ``p .. p + span - 1`` probed free on 127.0.0.1."""
    for _ in range(attempts):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + span >= 65000:
            continue
        if all(_bindable(port) for port in range(base, base + span)):
            return base
    raise RuntimeError("no free port range on 127.0.0.1")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
