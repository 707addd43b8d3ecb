"""engine/admin/metrics.py: the exposition, cumulative worker reports
(including a worker restart) and the event-loop lag monitor."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.admin.metrics import NodeMetrics, WorkerTotals, run_loop_lag_monitor


def samples(m: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def test_every_issue_metric_is_exported() -> None:
    m = NodeMetrics(node_id=3)
    m.observe_requests("GET", "ok", 1, 0.002)
    m.observe_fsync(0, 0.0004)
    m.observe_worker_totals(0, WorkerTotals(proposals=5, commits=4, elections=1, fsyncs=2,
                                            bytes_written=100, cpu_seconds=0.5))
    m.observe_ranges(0, held=10, quiesced=7)
    m.observe_queue_depth(0, inbound=3, pending=1)
    m.observe_loop_lag(0.003)
    m.observe_peer_totals(2, frames_out=4, frames_in=3, bytes_out=400, bytes_in=300, dropped=0)
    m.observe_peer_totals(2, frames_out=6, frames_in=3, bytes_out=600, bytes_in=300, dropped=1)
    s = samples(m)
    w0 = (("worker", "0"),)
    assert s["multiraft_requests_total", (("command", "GET"), ("outcome", "ok"))] == 1
    assert s["multiraft_request_seconds_count", (("command", "GET"),)] == 1
    assert s["multiraft_raft_proposals_total", w0] == 5
    assert s["multiraft_raft_commits_total", w0] == 4
    assert s["multiraft_raft_elections_total", w0] == 1
    assert s["multiraft_fsyncs_total", w0] == 2
    assert s["multiraft_fsync_seconds_count", w0] == 1
    assert s["multiraft_log_bytes_written_total", w0] == 100
    assert s["multiraft_worker_cpu_seconds_total", w0] == 0.5
    assert s["multiraft_ranges", w0] == 10
    assert s["multiraft_quiesced_ranges", w0] == 7
    assert s["multiraft_queue_depth", w0] == 3
    assert s["multiraft_worker_pending_requests", w0] == 1
    assert s["multiraft_event_loop_lag_last_seconds", ()] == 0.003
    assert s["multiraft_event_loop_lag_seconds_count", ()] == 1
    assert s["multiraft_node_info", (("node", "3"),)] == 1
    m.worker_restarts.labels(worker="0").inc()
    assert samples(m)["multiraft_worker_restarts_total", w0] == 1
    assert s["multiraft_peer_frames_total", (("direction", "out"), ("peer", "2"))] == 6
    assert s["multiraft_peer_bytes_total", (("direction", "in"), ("peer", "2"))] == 300
    assert s["multiraft_peer_dropped_payloads_total", (("peer", "2"),)] == 1


def test_worker_totals_become_monotonic_counters_across_a_restart() -> None:
    m = NodeMetrics(node_id=1)
    m.observe_worker_totals(1, WorkerTotals(fsyncs=10, cpu_seconds=2.0))
    m.observe_worker_totals(1, WorkerTotals(fsyncs=15, cpu_seconds=2.5))
    m.observe_worker_totals(1, WorkerTotals(fsyncs=3, cpu_seconds=0.25))  # restarted
    m.observe_worker_totals(1, WorkerTotals(fsyncs=3, cpu_seconds=0.25))  # no change
    s = samples(m)
    assert s["multiraft_fsyncs_total", (("worker", "1"),)] == 18
    assert s["multiraft_worker_cpu_seconds_total", (("worker", "1"),)] == 2.75


def test_registries_are_per_node() -> None:
    a, b = NodeMetrics(node_id=1), NodeMetrics(node_id=2)
    a.observe_requests("SET", "ok", 1, 0.001)
    assert ("multiraft_requests_total", (("command", "SET"), ("outcome", "ok"))) not in samples(b)


@pytest.mark.timeout(10)
def test_loop_lag_monitor_sees_a_blocked_loop() -> None:
    m = NodeMetrics(node_id=1)

    async def main() -> None:
        task = asyncio.create_task(run_loop_lag_monitor(m, interval=0.02))
        await asyncio.sleep(0.05)
        time.sleep(0.25)  # block the loop the way a synchronous file read would
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    s = samples(m)
    assert s["multiraft_event_loop_lag_seconds_count", ()] >= 2
    assert s["multiraft_event_loop_lag_seconds_sum", ()] >= 0.2


def test_loop_lag_monitor_rejects_a_bad_interval() -> None:
    with pytest.raises(ValueError):
        asyncio.run(run_loop_lag_monitor(NodeMetrics(node_id=1), interval=0))


def test_grafana_dashboard_charts_every_metric() -> None:
    dashboard = json.loads(
        (Path(__file__).resolve().parents[2] / "ops" / "grafana-dashboard.json").read_text()
    )
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    m = NodeMetrics(node_id=1)
    families = {f.name for f in text_string_to_metric_families(m.render().decode())
                if not f.name.endswith("_created")}  # prometheus-client's creation stamps
    charted = {name for name in families if name in exprs}
    assert families - charted == {"multiraft_node_info", "multiraft_event_loop_lag_last_seconds"}


def test_a_batch_is_one_observation_counted_per_request() -> None:
    m = NodeMetrics(node_id=1)
    m.observe_requests("SET", "ok", 16, 0.003)
    m.observe_requests("SET", "tryagain", 2, 0.3)
    m.observe_requests("SET", "ok", 1, 0.0001)
    s = samples(m)
    assert s["multiraft_requests_total", (("command", "SET"), ("outcome", "ok"))] == 17
    assert s["multiraft_requests_total", (("command", "SET"), ("outcome", "tryagain"))] == 2
    assert s["multiraft_request_seconds_count", (("command", "SET"),)] == 19
    assert s["multiraft_request_seconds_sum", (("command", "SET"),)] == pytest.approx(0.6481)
    bucket = "multiraft_request_seconds_bucket"
    assert s[bucket, (("command", "SET"), ("le", "0.0001"))] == 1  # le is inclusive
    assert s[bucket, (("command", "SET"), ("le", "0.005"))] == 17
    assert s[bucket, (("command", "SET"), ("le", "0.25"))] == 17
    assert s[bucket, (("command", "SET"), ("le", "0.5"))] == 19
    assert s[bucket, (("command", "SET"), ("le", "+Inf"))] == 19
