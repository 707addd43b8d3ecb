"""Random split/merge histories of range descriptors, for the tests of anything that
must learn descriptors in any order (routing directories, the meta range).

A history starts from one range over every key and applies random splits and
merges through ``RangeDescriptor.split``/``merge``, so every descriptor in it
obeys the real generation rules: whoever learns all of them, in any order,
must end with exactly the live ones.
"""

from __future__ import annotations

import random

from engine.range_desc import RangeDescriptor


def split_merge_history(
    rnd: random.Random, steps: int, voters: tuple[int, ...] = (1, 2, 3),
) -> tuple[list[RangeDescriptor], list[RangeDescriptor]]:
    """(every descriptor the history produced, the live ones in key order)."""
    live = [RangeDescriptor(range_id=1, start_key=b"", end_key=b"", voters=voters)]
    history = list(live)
    next_id = 2
    for _ in range(steps):
        i = rnd.randrange(len(live))
        d = live[i]
        if rnd.random() < 0.6 or i + 1 >= len(live):
            key = bytes([rnd.randrange(1, 256), rnd.randrange(256)])
            if not d.contains(key) or key == d.start_key:
                continue
            left, right = d.split(key, next_id)
            next_id += 1
            live[i:i + 1] = [left, right]
            history += [left, right]
        else:
            merged = d.merge(live[i + 1])
            live[i:i + 2] = [merged]
            history.append(merged)
    return history, live
