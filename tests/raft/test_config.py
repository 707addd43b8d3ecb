"""``Config`` validates at construction."""

from __future__ import annotations

import pytest

from engine.raft import Config, InvalidConfig, ReadOnlyOption


@pytest.mark.parametrize(
    "kwargs",
    [
        {"id": 0},
        {"id": 1, "heartbeat_ticks": 0},
        {"id": 1, "election_ticks": 2, "heartbeat_ticks": 2},
        {"id": 1, "max_inflight_msgs": 0},
        {"id": 1, "max_size_per_msg": -1},
        {"id": 1, "max_uncommitted_size": -5},
        {"id": 1, "max_committed_size_per_ready": 0},
        {"id": 1, "applied": -1},
        {"id": 1, "read_only_option": ReadOnlyOption.LEASE_BASED, "check_quorum": False},
    ],
)
def test_invalid_configs_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidConfig):
        Config(**kwargs)  # type: ignore[arg-type]


def test_defaults_are_valid_and_frozen() -> None:
    cfg = Config(3)
    assert cfg.election_ticks == 10 and cfg.pre_vote and cfg.check_quorum
    with pytest.raises(AttributeError):
        cfg.id = 4  # type: ignore[misc]
