"""Locust load for a multiraft cluster: RESP through redis-py, and HTTP ``/kv``.

Two user classes:

- ``RespUser`` speaks RESP to a node's ``listen_client`` with redis-py and
  reports every command to Locust's request event (name = the command, so
  Locust's table shows GET/SET/INCR/CAS separately). The mix is a typical
  read-heavy cache workload: GET 70%, SET 25%, INCR 3%, CAS 2%. Keys are
  drawn uniformly from ``--keyspace`` keys (fixed 16-byte names), values
  are ``--value-bytes`` bytes.
- ``HttpKVUser`` does the same GET/PUT mix against ``/kv/{key}`` on a node's
  admin listener (Locust's ``--host``), for an HTTP baseline.

Errors are reported as failures with the server's message, so ``-TRYAGAIN``
(no leader yet; safe to retry) and ``-TIMEOUT`` (outcome unknown) show up
in Locust's failure table by kind.

Run headless against a local cluster (``multiraft up`` or ops/cluster-3)::

    locust -f loadtest/locustfile.py RespUser --headless -u 64 -r 16 -t 60s \\
        --resp-host 127.0.0.1:6401 --keyspace 100000 --value-bytes 100

    locust -f loadtest/locustfile.py HttpKVUser --headless -u 16 -r 16 -t 60s \\
        --host http://127.0.0.1:8401

(Without a user class name, both classes run: then pass both ``--host`` and
``--resp-host``.) ``--resp-host`` accepts a comma-separated list; each
user picks one node at random, spreading load over the cluster.
"""

from __future__ import annotations

import random
import time
from typing import Any

from locust import HttpUser, User, constant, events, task
from locust.exception import StopUser
from redis import Redis, RedisError
from redis.backoff import NoBackoff
from redis.retry import Retry

_DEFAULT_RESP_HOST = "127.0.0.1:6401"


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument("--resp-host", default=_DEFAULT_RESP_HOST, env_var="MULTIRAFT_RESP_HOST",
                        help="host:port[,host:port...] of RESP listeners")
    parser.add_argument("--keyspace", type=int, default=10_000, env_var="MULTIRAFT_KEYSPACE",
                        help="number of distinct keys")
    parser.add_argument("--value-bytes", type=int, default=100, env_var="MULTIRAFT_VALUE_BYTES",
                        help="size of written values")


def _options(user: User) -> tuple[int, bytes]:
    opts = user.environment.parsed_options
    keyspace = getattr(opts, "keyspace", 10_000) if opts is not None else 10_000
    size = getattr(opts, "value_bytes", 100) if opts is not None else 100
    if keyspace < 1 or size < 0:
        raise StopUser(f"bad --keyspace {keyspace} or --value-bytes {size}")
    return keyspace, b"v" * size


def _key(keyspace: int) -> str:
    return f"key:{random.randrange(keyspace):012d}"  # 16 bytes


class RespUser(User):
    """A redis-py client issuing the read-heavy mix (see the module docstring)."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.keyspace, self.value = _options(self)
        opts = self.environment.parsed_options
        hosts = (getattr(opts, "resp_host", None) if opts is not None else None) or (
            _DEFAULT_RESP_HOST
        )
        host, _, port = random.choice(hosts.split(",")).strip().rpartition(":")
        # No client-side retries: a retried command would hide the failure from
        # Locust and count a retry loop as one slow request.
        self.client = Redis(host=host, port=int(port), socket_timeout=10,
                            socket_connect_timeout=5, retry=Retry(NoBackoff(), 0))

    def on_stop(self) -> None:
        self.client.close()

    def _call(self, name: str, *args: object) -> Any:
        """Run one command and report it to Locust; returns the reply or None."""
        started = time.perf_counter()
        reply: Any = None
        exc: Exception | None = None
        try:
            reply = self.client.execute_command(name, *args)
        except RedisError as e:
            exc = e
        self.environment.events.request.fire(
            request_type="RESP", name=name,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=len(reply) if isinstance(reply, bytes) else 0,
            exception=exc, context={},
        )
        return reply

    @task(70)
    def get(self) -> None:
        self._call("GET", _key(self.keyspace))

    @task(25)
    def set(self) -> None:
        self._call("SET", _key(self.keyspace), self.value)

    @task(3)
    def incr(self) -> None:
        # A separate counter space: INCR on a SET value would be a (correct) error.
        self._call("INCR", f"ctr:{random.randrange(self.keyspace):012d}")

    @task(2)
    def cas(self) -> None:
        key = _key(self.keyspace)
        current = self._call("GET", key)
        self._call("CAS", key, current if current is not None else b"", self.value)


class HttpKVUser(HttpUser):
    """GET/PUT against ``/kv/{key}`` on a node's admin listener."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.keyspace, self.value = _options(self)

    @task(70)
    def get(self) -> None:
        with self.client.get(f"/kv/{_key(self.keyspace)}", name="/kv GET",
                             catch_response=True) as resp:
            if resp.status_code == 404:  # a key not written yet is a valid answer
                resp.success()

    @task(30)
    def put(self) -> None:
        self.client.put(f"/kv/{_key(self.keyspace)}", data=self.value, name="/kv PUT")
