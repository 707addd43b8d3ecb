"""The simulator's invariant checker catches each broken rule
(engine/raft/testing/invariants.py and chain.py).

A checker that never fires would make every randomized run pass; these
feed it histories that break one rule each and expect that rule's name.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import pytest

from engine.raft.testing.chain import LogChain, decode_state, encode_state, fold
from engine.raft.testing.invariants import InvariantChecker, InvariantViolation
from engine.raft.types import ConfState, Entry, HardState


def ents(*spec: tuple[int, int, bytes]) -> list[Entry]:
    return [Entry(term, index, 0, data) for index, term, data in spec]


def violated(name: str) -> AbstractContextManager[pytest.ExceptionInfo[InvariantViolation]]:
    return pytest.raises(InvariantViolation, match=f"^{name}:")


def test_two_leaders_in_one_term_break_election_safety() -> None:
    c = InvariantChecker()
    c.on_leader(1, 3, LogChain())
    c.on_leader(1, 3, LogChain())  # seen again: fine
    c.on_leader(2, 4, LogChain())
    with violated("election safety"):
        c.on_leader(3, 3, LogChain())


def test_leader_overwriting_its_log_breaks_append_only() -> None:
    c = InvariantChecker()
    chain = LogChain()
    c.on_append(1, chain, ents((1, 1, b"a"), (2, 1, b"b")), is_leader=True)
    with violated("leader append-only"):
        c.on_append(1, chain, ents((2, 1, b"c")), is_leader=True)
    # A follower may replace a conflicting suffix.
    c.on_append(2, LogChain(), ents((1, 1, b"a"), (2, 2, b"x")), is_leader=False)


def test_same_index_and_term_with_different_prefix_breaks_log_matching() -> None:
    c = InvariantChecker()
    c.on_append(1, LogChain(), ents((1, 1, b"a"), (2, 2, b"b")), is_leader=False)
    with violated("log matching"):
        c.on_append(2, LogChain(), ents((1, 1, b"DIFFERENT"), (2, 2, b"b")), is_leader=False)


def test_committed_entry_missing_from_later_leader_breaks_completeness() -> None:
    c = InvariantChecker()
    a = LogChain()
    c.on_append(1, a, ents((1, 1, b"a"), (2, 1, b"b")), is_leader=True)
    c.on_hard_state(1, HardState(1, 1, 0), HardState(1, 1, 2), a)
    b = LogChain()
    c.on_append(2, b, ents((1, 1, b"a")), is_leader=False)
    # A leader of a later term must hold it.
    with violated("leader completeness"):
        c.on_leader(2, 2, b)


def test_stale_term_leader_need_not_hold_later_commits() -> None:
    c = InvariantChecker()
    a = LogChain()
    c.on_append(1, a, ents((1, 3, b"a")), is_leader=True)
    c.on_hard_state(1, HardState(3, 1, 0), HardState(3, 1, 1), a)
    c.on_leader(1, 3, a)
    c.on_leader(2, 2, LogChain())  # term 2 < 3: no completeness requirement


def test_applying_a_different_entry_breaks_state_machine_safety() -> None:
    c = InvariantChecker()
    a = LogChain()
    e = ents((1, 1, b"a"))
    c.on_append(1, a, e, is_leader=True)
    c.on_hard_state(1, HardState(1, 1, 0), HardState(1, 1, 1), a)
    c.on_apply(1, e[0], fold(0, e[0]), applied=0, commit=1)
    other = Entry(1, 1, 0, b"zzz")
    with violated("state machine safety"):
        c.on_apply(2, other, fold(0, other), applied=0, commit=1)
    with violated("apply order"):
        c.on_apply(2, e[0], fold(0, e[0]), applied=1, commit=1)
    with violated("apply committed only"):
        c.on_apply(2, e[0], fold(0, e[0]), applied=0, commit=0)


def test_durable_state_must_not_regress() -> None:
    c = InvariantChecker()
    chain = LogChain()
    c.on_append(1, chain, ents((1, 2, b"a"), (2, 2, b"b")), is_leader=False)
    with violated("commit monotonic"):
        c.on_hard_state(1, HardState(2, 0, 2), HardState(2, 0, 1), chain)
    with violated("term monotonic"):
        c.on_hard_state(1, HardState(3, 0, 0), HardState(2, 0, 0), chain)
    with violated("one vote per term"):
        c.on_hard_state(1, HardState(2, 3, 0), HardState(2, 4, 0), chain)
    with violated("commit within log"):
        c.on_hard_state(1, HardState(2, 3, 0), HardState(2, 3, 5), chain)
    with violated("commit monotonic"):
        c.on_committed(1, 5, 4)


def test_snapshot_must_match_committed_log() -> None:
    c = InvariantChecker()
    chain = LogChain()
    e = ents((1, 1, b"a"), (2, 1, b"b"))
    c.on_append(1, chain, e, is_leader=True)
    c.on_hard_state(1, HardState(1, 1, 0), HardState(1, 1, 2), chain)
    good = decode_state(encode_state(2, 1, chain.fingerprint(2)))
    c.on_snapshot(2, 2, 1, good, is_leader=False, applied=0)
    with violated("snapshot data"):
        c.on_snapshot(3, 2, 1, (2, 1, chain.fingerprint(1)), is_leader=False, applied=0)
    with violated("snapshot data"):
        c.on_snapshot(3, 2, 1, (1, 1, chain.fingerprint(1)), is_leader=False, applied=0)
    with violated("snapshot committed"):
        c.on_snapshot(3, 7, 1, (7, 1, 0), is_leader=False, applied=0)
    with violated("leader append-only"):
        c.on_snapshot(1, 2, 1, good, is_leader=True, applied=0)
    with violated("applied monotonic"):
        c.on_snapshot(3, 2, 1, good, is_leader=False, applied=2)


def test_stale_read_index_is_caught() -> None:
    c = InvariantChecker()
    chain = LogChain()
    c.on_append(1, chain, ents((1, 1, b"a"), (2, 1, b"b")), is_leader=True)
    c.on_hard_state(1, HardState(1, 1, 0), HardState(1, 1, 2), chain)
    c.on_read_request(b"r1")
    c.on_read_state(1, 2, b"r1")
    with violated("read index linearizable"):
        c.on_read_state(1, 1, b"r1")


def test_chain_mirrors_truncation_and_compaction() -> None:
    chain = LogChain()
    es = ents((1, 1, b"a"), (2, 1, b"b"), (3, 1, b"c"))
    fps = chain.append(es)
    assert fps == [fold(0, es[0]), fold(fold(0, es[0]), es[1]),
                   fold(fold(fold(0, es[0]), es[1]), es[2])]
    fp2 = chain.fingerprint(2)
    chain.append(ents((3, 2, b"x")))
    assert chain.last == 3 and chain.term(3) == 2
    assert chain.fingerprint(2) == fp2
    chain.compact(2)
    assert chain.base == 2 and chain.fingerprint(2) == fp2
    assert chain.append(ents((1, 1, b"a"), (2, 1, b"b"))) == []  # below base: ignored
    assert chain.last == 3


def test_completeness_waits_for_a_durable_log() -> None:
    """A leader first seen with a Ready still pending (chain None) is checked
    for election safety at once and for completeness once its log is durable."""
    c = InvariantChecker()
    a = LogChain()
    c.on_append(1, a, ents((1, 1, b"a")), is_leader=True)
    c.on_hard_state(1, HardState(1, 1, 0), HardState(1, 1, 1), a)
    c.on_leader(2, 2, None)
    with violated("election safety"):
        c.on_leader(3, 2, None)
    with violated("leader completeness"):
        c.on_leader(2, 2, LogChain())


def test_nodes_must_agree_on_membership() -> None:
    boot = ConfState(voters=(1, 2, 3))
    c = InvariantChecker(bootstrap=(1, 1, 0), bootstrap_conf=boot)
    after = ConfState(voters=(1, 2, 3), learners=(4,))
    c.on_conf_change(1, 5, after)
    c.on_conf_change(2, 5, after)
    with violated("membership agreement"):
        c.on_conf_change(3, 5, ConfState(voters=(1, 2, 3, 4)))
    c.check_snapshot_conf(1, 4, boot)  # before the change: the bootstrap membership
    c.check_snapshot_conf(1, 9, after)
    with violated("snapshot membership"):
        c.check_snapshot_conf(2, 7, boot)
