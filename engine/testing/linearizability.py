"""A linearizability checker for per-key KV histories.

A history is a set of operations, each with the time its client invoked it,
the time it completed (or ``None``: the outcome is unknown, e.g. a timeout)
and the result the client saw. The history is linearizable if every
operation can be given one instant between its invoke and complete times
such that, executed one at a time in that order against a single register
per key, every operation returns exactly the result the client saw.
Operations with an unknown outcome may take effect at any instant after
their invoke, or never, and their result constrains nothing.

Theory of operation
-------------------
- **Per key (P-compositionality).** Linearizability is local (Herlihy &
  Wing 1990, Theorem 1): a history is linearizable iff each object's
  sub-history is. Every KV operation here touches one key, so each key is
  checked on its own: many small searches instead of one exponential one.
- **Wing & Gong search** (1993) over an event list sorted by time (a call
  sorts before a return at the same instant, so touching operations count as
  concurrent: the checker errs towards "linearizable", never reports a false
  anomaly). Scanning from the front, a *call* whose operation is consistent
  with the model state is tentatively linearized: its call and return leave
  the list and the search restarts at the front. Reaching a *return* means
  that operation should already have been linearized: backtrack by undoing
  the last choice and trying the next call after it.
- **Memoization** (Lowe 2017, as in Knossos/Porcupine): the pair
  (bitmask of linearized operations, model state) fully determines the rest
  of the search, so a pair already explored is never explored again. This
  turns typical exponential blow-ups into polynomial work.
- **Unknown outcomes** have a call and no return: they never force a
  backtrack, so the search may linearize them or leave them out. The search
  succeeds once every *completed* operation is linearized.
- **Multi-key commands** (MSET, multi-key DEL) may be recorded as one
  operation per key: that checks each key's linearizability, not the
  atomicity across keys, which P-compositionality cannot see.
- **Step bound.** Each key's search counts its steps; past ``max_steps`` it
  stops and reports ``UNKNOWN`` rather than running forever.

The model of one key is its value (``bytes``) or ``None`` when absent,
following the default KV state machine's semantics (``engine/kv.py``).

Recording results (``Operation.result``)
----------------------------------------
``GET``: the value read or ``None``. ``PUT``: ``True`` if it was written,
``False`` if its NX/XX condition failed. ``DELETE``: the count removed (0/1).
``CAS``: ``True`` iff it swapped. ``INCR``: the new value, or ``None`` for an
error (the value was not an integer, or the result would overflow).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Final, NamedTuple

from engine.kv import parse_int64
from engine.kv_codec import INT64_MAX, INT64_MIN, PutCond

DEFAULT_MAX_STEPS: Final = 2_000_000

State = bytes | None


class OpKind(Enum):
    GET = "get"
    PUT = "put"
    DELETE = "delete"
    CAS = "cas"
    INCR = "incr"


class Outcome(Enum):
    OK = "linearizable"
    FAIL = "not linearizable"
    UNKNOWN = "unknown (step bound reached)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """One client operation on one key (see the module docstring for ``result``)."""

    kind: OpKind
    key: bytes
    invoke: float
    complete: float | None  # None: outcome unknown (may or may not have happened)
    result: object = None
    value: bytes | None = None  # PUT: the value written; CAS: the new value
    expected: bytes | None = None  # CAS: the value it must find
    cond: PutCond = PutCond.NONE  # PUT: NX / XX
    delta: int = 0  # INCR
    client: int = 0  # for reports only

    def __post_init__(self) -> None:
        if self.complete is not None and self.complete < self.invoke:
            raise ValueError(f"completes at {self.complete}, before it starts at {self.invoke}")
        if self.kind in (OpKind.PUT, OpKind.CAS) and self.value is None:
            raise ValueError(f"{self.kind.value} needs a value")
        if self.kind is OpKind.CAS and self.expected is None:
            raise ValueError("cas needs an expected value")

    def __str__(self) -> str:
        end = "?" if self.complete is None else f"{self.complete:g}"
        cond = "" if self.cond is PutCond.NONE else f" {self.cond.name}"
        args = {
            OpKind.GET: "",
            OpKind.PUT: f" {self.value!r}{cond}",
            OpKind.DELETE: "",
            OpKind.CAS: f" {self.expected!r}->{self.value!r}",
            OpKind.INCR: f" {self.delta:+d}",
        }[self.kind]
        res = "?" if self.complete is None else repr(self.result)
        span = f"[{self.invoke:g}, {end}]"
        return f"c{self.client} {self.kind.value} {self.key!r}{args} = {res} {span}"


def step(state: State, op: Operation) -> tuple[bool, State]:
    """Apply ``op`` to one key's ``state``: (whether the result matches, the new state).
    An operation with an unknown outcome matches whatever it would return."""
    known = op.complete is not None
    kind = op.kind
    if kind is OpKind.GET:
        return (not known or op.result == state), state
    if kind is OpKind.PUT:
        applies = (
            op.cond is PutCond.NONE
            or (op.cond is PutCond.NX and state is None)
            or (op.cond is PutCond.XX and state is not None)
        )
        return (not known or op.result == applies), (op.value if applies else state)
    if kind is OpKind.DELETE:
        return (not known or op.result == (0 if state is None else 1)), None
    if kind is OpKind.CAS:
        swapped = state is not None and state == op.expected
        return (not known or op.result == swapped), (op.value if swapped else state)
    # INCR
    current = 0 if state is None else parse_int64(state)
    if current is None or not INT64_MIN <= current + op.delta <= INT64_MAX:
        return (not known or op.result is None), state
    n = current + op.delta
    return (not known or op.result == n), str(n).encode()


@dataclass(frozen=True, slots=True)
class KeyVerdict:
    """The outcome for one key. ``order`` is a linearization when OK, and the
    longest linearizable prefix the search found when FAIL (the operation that
    could not follow it is the anomaly to look at)."""

    key: bytes
    outcome: Outcome
    steps: int
    order: tuple[Operation, ...]
    operations: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome for a whole history: FAIL if any key fails, else UNKNOWN if
    any key hit the step bound, else OK."""

    outcome: Outcome
    keys: tuple[KeyVerdict, ...] = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    def failures(self) -> tuple[KeyVerdict, ...]:
        return tuple(k for k in self.keys if k.outcome is Outcome.FAIL)

    def explain(self, limit: int = 20) -> str:
        """A readable account of the first failing (or unknown) key."""
        bad = [k for k in self.keys if k.outcome is not Outcome.OK]
        if not bad:
            return f"linearizable ({len(self.keys)} keys)"
        kv = bad[0]
        lines = [f"key {kv.key!r}: {kv.outcome.value} after {kv.steps} steps, "
                 f"{kv.operations} operations; longest linearizable prefix:"]
        lines += [f"  {op}" for op in kv.order[-limit:]]
        return "\n".join(lines)


def check_history(
    ops: Iterable[Operation],
    *,
    initial: Mapping[bytes, bytes] | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> Verdict:
    """Check a multi-key history key by key. ``initial`` gives keys present
    before the history starts (others start absent); ``max_steps`` bounds
    each key's search."""
    by_key: dict[bytes, list[Operation]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    start = initial or {}
    verdicts = tuple(
        check_key(key_ops, initial=start.get(key), max_steps=max_steps)
        for key, key_ops in sorted(by_key.items())
    )
    outcomes = {v.outcome for v in verdicts}
    if Outcome.FAIL in outcomes:
        outcome = Outcome.FAIL
    elif Outcome.UNKNOWN in outcomes:
        outcome = Outcome.UNKNOWN
    else:
        outcome = Outcome.OK
    return Verdict(outcome, verdicts)


def check_key(
    ops: Sequence[Operation], *, initial: State = None, max_steps: int = DEFAULT_MAX_STEPS
) -> KeyVerdict:
    """Wing & Gong search with memoization over one key's operations."""
    if len({op.key for op in ops}) > 1:
        raise ValueError("check_key takes the operations of one key; use check_history")
    key = ops[0].key if ops else b""
    events = _EventList(ops)
    state: State = initial
    linearized = 0  # bitmask of op indexes
    seen: set[tuple[int, State]] = set()
    # The choices so far, newest first, as an immutable linked list so that the
    # deepest prefix seen can be kept by reference instead of by copy.
    stack: _Frame | None = None
    depth = 0
    best, best_depth = stack, depth
    steps = 0
    entry = events.first()
    while events.returns_left:
        steps += 1
        if steps > max_steps:
            if depth > best_depth:
                best = stack
            return KeyVerdict(key, Outcome.UNKNOWN, steps, _ops(ops, events, best), len(ops))
        assert entry != _END, "a completed operation's return must remain in the list"
        op_index = events.op[entry]
        if events.is_call[entry]:
            ok, new_state = step(state, ops[op_index])
            mask = linearized | (1 << op_index)
            if ok and (mask, new_state) not in seen:
                seen.add((mask, new_state))
                stack = _Frame(entry, state, stack)
                depth += 1
                state, linearized = new_state, mask
                events.lift(entry)
                entry = events.first()
            else:
                entry = events.next[entry]
        else:
            # This op's return is reached unlinearized: undo the last choice.
            if depth > best_depth:
                best, best_depth = stack, depth
            if stack is None:
                return KeyVerdict(key, Outcome.FAIL, steps, _ops(ops, events, best), len(ops))
            entry, state, stack = stack
            depth -= 1
            linearized &= ~(1 << events.op[entry])
            events.unlift(entry)
            entry = events.next[entry]
    return KeyVerdict(key, Outcome.OK, steps, _ops(ops, events, stack), len(ops))


class _Frame(NamedTuple):
    """One linearization choice: the call event taken and the state before it."""

    call: int
    state_before: State
    parent: _Frame | None


def _ops(ops: Sequence[Operation], events: _EventList, top: _Frame | None) -> tuple[Operation, ...]:
    """The operations of a choice stack, oldest first."""
    calls: list[int] = []
    while top is not None:
        calls.append(top.call)
        top = top.parent
    return tuple(ops[events.op[e]] for e in reversed(calls))


_END: Final = -1


class _EventList:
    """The time-ordered call/return events as a doubly linked list over arrays,
    so lifting an operation out and putting it back are O(1)."""

    __slots__ = ("head", "is_call", "match", "next", "op", "prev", "returns_left")

    def __init__(self, ops: Sequence[Operation]) -> None:
        raw: list[tuple[float, int, int]] = []  # (time, 0 call / 1 return, op index)
        for i, op in enumerate(ops):
            raw.append((op.invoke, 0, i))
            if op.complete is not None:
                raw.append((op.complete, 1, i))
        raw.sort()
        n = len(raw)
        self.op = [i for _, _, i in raw]
        self.is_call = [kind == 0 for _, kind, _ in raw]
        # match[call event] = its return event, or _END for an unknown outcome.
        self.match = [_END] * n
        call_of: dict[int, int] = {}
        for e, (_, kind, i) in enumerate(raw):
            if kind == 0:
                call_of[i] = e
            else:
                self.match[call_of[i]] = e
        # Node n is the head sentinel; _END terminates.
        self.head = n
        self.next: list[int] = [*range(1, n), _END, 0 if n else _END]
        self.prev: list[int] = [n, *range(n - 1)]
        # Invariant: returns_left == number of return events still linked.
        self.returns_left = sum(1 for c in self.is_call if not c)

    def first(self) -> int:
        return self.next[self.head]

    def _unlink(self, e: int) -> None:
        p, nx = self.prev[e], self.next[e]
        self.next[p] = nx
        if nx != _END:
            self.prev[nx] = p

    def _relink(self, e: int) -> None:
        p, nx = self.prev[e], self.next[e]
        self.next[p] = e
        if nx != _END:
            self.prev[nx] = e

    def lift(self, call: int) -> None:
        """Remove an operation's call and return events from the list."""
        self._unlink(call)
        ret = self.match[call]
        if ret != _END:
            self._unlink(ret)
            self.returns_left -= 1

    def unlift(self, call: int) -> None:
        """Undo ``lift``: relink in reverse order (dancing links)."""
        ret = self.match[call]
        if ret != _END:
            self._relink(ret)
            self.returns_left += 1
        self._relink(call)


class HistoryRecorder:
    """Collects a history as a test drives a system: ``invoke`` when a client
    sends an operation, then ``ok`` with its result, ``failed`` when the
    system said it definitely did not happen (it leaves the history), or
    ``unknown`` on a timeout. Operations never resolved count as unknown."""

    def __init__(self, clock: Callable[[], float]) -> None:
        # The clock must never go backwards (a virtual clock or time.monotonic).
        self._clock = clock
        # Invariant: a handle is in _pending from invoke until ok/failed/unknown,
        # and its operation there has complete=None.
        self._pending: dict[int, Operation] = {}
        # Invariant: resolved operations, each exactly once.
        self._done: list[Operation] = []
        self._next = 0

    def invoke(
        self, kind: OpKind, key: bytes, *, value: bytes | None = None,
        expected: bytes | None = None, cond: PutCond = PutCond.NONE, delta: int = 0,
        client: int = 0,
    ) -> int:
        handle = self._next
        self._next += 1
        self._pending[handle] = Operation(
            kind=kind, key=key, invoke=self._clock(), complete=None, value=value,
            expected=expected, cond=cond, delta=delta, client=client,
        )
        return handle

    def ok(self, handle: int, result: object) -> None:
        """The operation completed now with ``result`` (see the module docstring)."""
        op = self._pending.pop(handle)
        self._done.append(replace(op, complete=self._clock(), result=result))

    def failed(self, handle: int) -> None:
        """The system guarantees it did not happen (-TRYAGAIN, -ERR)."""
        del self._pending[handle]

    def unknown(self, handle: int) -> None:
        """It may or may not have happened (-TIMEOUT, a lost connection)."""
        self._done.append(self._pending.pop(handle))

    def history(self) -> list[Operation]:
        """Everything recorded so far; still-pending operations as unknown."""
        return [*self._done, *self._pending.values()]

