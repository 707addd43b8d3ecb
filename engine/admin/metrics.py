"""``NodeMetrics``: the node's Prometheus metrics, and the event-loop lag monitor.

Rules
-----
- One ``CollectorRegistry`` per ``NodeMetrics`` (not the process-global
  default): two nodes in one test process, or a test and a node, never
  share or clash over series.
- Names follow Prometheus conventions: ``multiraft_`` prefix, base units
  (seconds, bytes), ``_total`` on counters.
- Workers report *cumulative* figures (fsyncs, bytes written, CPU seconds)
  over their queue; ``observe_worker_totals`` turns them into counter
  increments. A restarted worker starts again from zero, so a figure that
  went down is taken as "everything since the restart" — a counter never
  decreases, which is what ``rate()`` relies on.
- Label values are bounded: commands come from the RESP command table and
  admin endpoints from the route table, never from client input, so a
  client cannot blow up the series count.

Theory of operation (loop lag)
------------------------------
``run_loop_lag_monitor`` sleeps ``interval`` seconds at a time and measures
how late it wakes up. Anything that blocks the loop (a synchronous file
read, a long CPU burst) delays every wake-up by its length, so the lateness
is a direct measure of how long client requests on this loop were stuck.
"""

from __future__ import annotations

import asyncio
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from math import inf
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST as _CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "NodeMetrics", "RequestStats", "WorkerTotals", "run_loop_lag_monitor"]

CONTENT_TYPE: Final[str] = _CONTENT_TYPE

#: Request latency buckets: 100 us .. 10 s (a request on a 2-core box spans all of it).
_LATENCY_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)
#: fsync latency buckets: 50 us (NVMe) .. 1 s (a struggling disk).
_FSYNC_BUCKETS: Final = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)
_LAG_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


@dataclass(frozen=True, slots=True)
class WorkerTotals:
    """A worker's cumulative figures since it started (reported over its queue)."""

    proposals: int = 0
    commits: int = 0
    elections: int = 0
    fsyncs: int = 0
    bytes_written: int = 0
    cpu_seconds: float = 0.0


class NodeMetrics:
    """Every metric the node exports, in its own registry."""

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        #: Client requests and latencies, aggregated per batch off the prometheus path.
        self.requests = RequestStats()
        r.register(self.requests)
        self.admin_requests = Counter(
            "multiraft_admin_requests", "HTTP admin requests by endpoint and status",
            ["endpoint", "status"], registry=r,
        )
        self.admin_request_seconds = Histogram(
            "multiraft_admin_request_seconds", "HTTP admin request latency by endpoint",
            ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.raft_proposals = Counter(
            "multiraft_raft_proposals", "Raft proposals made", ["worker"], registry=r
        )
        self.raft_commits = Counter(
            "multiraft_raft_commits", "Raft entries committed", ["worker"], registry=r
        )
        self.raft_elections = Counter(
            "multiraft_raft_elections", "Raft elections started", ["worker"], registry=r
        )
        self.fsyncs = Counter(
            "multiraft_fsyncs", "Log-store fsyncs (one per write batch)", ["worker"], registry=r
        )
        self.fsync_seconds = Histogram(
            "multiraft_fsync_seconds", "Log-store fsync latency", ["worker"],
            buckets=_FSYNC_BUCKETS, registry=r,
        )
        self.bytes_written = Counter(
            "multiraft_log_bytes_written", "Bytes written to the raft log", ["worker"],
            registry=r,
        )
        self.worker_cpu = Counter(
            "multiraft_worker_cpu_seconds", "CPU time used by each worker", ["worker"],
            registry=r,
        )
        self.worker_restarts = Counter(
            "multiraft_worker_restarts", "Workers that died and were forked again", ["worker"],
            registry=r,
        )
        self.ranges = Gauge("multiraft_ranges", "Range replicas held", ["worker"], registry=r)
        self.quiesced_ranges = Gauge(
            "multiraft_quiesced_ranges", "Range replicas currently quiesced", ["worker"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "multiraft_queue_depth",
            "Records a worker found waiting on its inbound queue at its latest drain",
            ["worker"], registry=r,
        )
        self.pending_requests = Gauge(
            "multiraft_worker_pending_requests",
            "Client requests accepted by a worker and not yet answered", ["worker"], registry=r,
        )
        self.peer_frames = Counter(
            "multiraft_peer_frames", "TCP frames exchanged with each peer node",
            ["peer", "direction"], registry=r,
        )
        self.peer_bytes = Counter(
            "multiraft_peer_bytes", "Bytes (framing included) exchanged with each peer node",
            ["peer", "direction"], registry=r,
        )
        self.peer_dropped = Counter(
            "multiraft_peer_dropped_payloads",
            "Payloads dropped because a peer's outgoing queue was full", ["peer"], registry=r,
        )
        self.loop_lag = Histogram(
            "multiraft_event_loop_lag_seconds", "How late the node's event loop woke up",
            buckets=_LAG_BUCKETS, registry=r,
        )
        self.loop_lag_last = Gauge(
            "multiraft_event_loop_lag_last_seconds", "The latest event-loop lag sample",
            registry=r,
        )
        Gauge("multiraft_node_info", "Constant 1, labelled with the node id", ["node"],
              registry=r).labels(node=str(node_id)).set(1)
        # Invariant: _last[worker] is the WorkerTotals last folded into the counters.
        self._last: dict[int, WorkerTotals] = {}
        # Invariant: _last_peer[peer] is the (frames out, frames in, bytes out, bytes in,
        # dropped) last folded into the peer counters.
        self._last_peer: dict[int, tuple[int, int, int, int, int]] = {}

    def observe_requests(self, command: str, outcome: str, count: int, seconds: float) -> None:
        """``count`` requests of one pipelined batch, each answered after ``seconds``
        (the RESP server calls this once per command and outcome of a batch)."""
        self.requests.observe(command, outcome, count, seconds)

    def observe_fsync(self, worker: int, seconds: float) -> None:
        self.fsync_seconds.labels(worker=str(worker)).observe(seconds)

    def observe_worker_totals(self, worker: int, totals: WorkerTotals) -> None:
        """Fold a worker's cumulative report into the counters (see module rules)."""
        last = self._last.get(worker, WorkerTotals())
        w = str(worker)
        pairs: tuple[tuple[Counter, float, float], ...] = (
            (self.raft_proposals, totals.proposals, last.proposals),
            (self.raft_commits, totals.commits, last.commits),
            (self.raft_elections, totals.elections, last.elections),
            (self.fsyncs, totals.fsyncs, last.fsyncs),
            (self.bytes_written, totals.bytes_written, last.bytes_written),
            (self.worker_cpu, totals.cpu_seconds, last.cpu_seconds),
        )
        for counter, now, before in pairs:
            delta = now - before if now >= before else now  # went down: worker restarted
            if delta > 0:
                counter.labels(worker=w).inc(delta)
        self._last[worker] = totals

    def observe_peer_totals(
        self, peer: int, *, frames_out: int, frames_in: int, bytes_out: int, bytes_in: int,
        dropped: int,
    ) -> None:
        """Fold the peer transport's cumulative counters for ``peer`` into the metrics."""
        now = (frames_out, frames_in, bytes_out, bytes_in, dropped)
        last = self._last_peer.get(peer, (0, 0, 0, 0, 0))
        p = str(peer)
        series = (self.peer_frames.labels(peer=p, direction="out"),
                  self.peer_frames.labels(peer=p, direction="in"),
                  self.peer_bytes.labels(peer=p, direction="out"),
                  self.peer_bytes.labels(peer=p, direction="in"),
                  self.peer_dropped.labels(peer=p))
        for counter, value, before in zip(series, now, last, strict=True):
            if value > before:
                counter.inc(value - before)
        self._last_peer[peer] = now

    def observe_ranges(self, worker: int, held: int, quiesced: int) -> None:
        self.ranges.labels(worker=str(worker)).set(held)
        self.quiesced_ranges.labels(worker=str(worker)).set(quiesced)

    def observe_queue_depth(self, worker: int, inbound: int, pending: int) -> None:
        self.queue_depth.labels(worker=str(worker)).set(inbound)
        self.pending_requests.labels(worker=str(worker)).set(pending)

    def observe_loop_lag(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)
        self.loop_lag_last.set(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return bytes(generate_latest(self.registry))


class RequestStats(Collector):
    """Client requests by command and outcome, and their latency histogram by command.

    ``prometheus_client``'s own Counter/Histogram cost a label lookup, a lock
    and a bucket scan per observation, on the event loop, per request. Here an
    observation is a dict lookup, a bisect and a few additions, and stands for
    a whole batch (``count`` requests with one latency); the Prometheus
    families are built only when scraped (``collect``, on the admin server's
    render thread, hence the lock). Exposes ``multiraft_requests_total
    {command,outcome}`` and ``multiraft_request_seconds{command}`` (histogram).
    """

    def __init__(self, buckets: tuple[float, ...] = _LATENCY_BUCKETS) -> None:
        self._bounds = buckets
        self._lock = threading.Lock()
        #: Invariant: (command, outcome) -> requests counted so far.
        self._counts: dict[tuple[str, str], int] = {}
        #: Invariant: command -> [per-bucket counts (last: above every bound)..., sum of
        #: seconds]; the bucket counts add up to the command's requests.
        self._latency: dict[str, list[float]] = {}

    def observe(self, command: str, outcome: str, count: int, seconds: float) -> None:
        key = (command, outcome)
        slot = bisect_left(self._bounds, seconds)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + count
            row = self._latency.get(command)
            if row is None:
                row = self._latency[command] = [0.0] * (len(self._bounds) + 2)
            row[slot] += count
            row[-1] += seconds * count

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts = list(self._counts.items())
            latency = [(c, list(row)) for c, row in self._latency.items()]
        requests = CounterMetricFamily(
            "multiraft_requests", "Client requests by command and outcome",
            labels=["command", "outcome"])
        for (command, outcome), n in counts:
            requests.add_metric([command, outcome], n)
        yield requests
        seconds = HistogramMetricFamily(
            "multiraft_request_seconds", "Client request latency by command",
            labels=["command"])
        for command, row in latency:
            cumulative = list(accumulate(row[:-1]))
            buckets = [("+Inf" if b == inf else repr(b), n)
                       for b, n in zip((*self._bounds, inf), cumulative, strict=True)]
            seconds.add_metric([command], buckets, row[-1])
        yield seconds


async def run_loop_lag_monitor(
    metrics: NodeMetrics, interval: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Sample the running loop's lag every ``interval`` seconds until cancelled."""
    if interval <= 0:
        raise ValueError(f"interval must be positive, got {interval}")
    while True:
        before = clock()
        await asyncio.sleep(interval)
        metrics.observe_loop_lag(max(0.0, clock() - before - interval))
