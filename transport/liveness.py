"""Is the peer process still alive? A pidfd, or a polling fallback.

Theory of operation
-------------------
Every wait in a channel is bounded *and* watches the peer, so a crashed peer
turns into ``PeerDead`` within one wait interval instead of a hang.

- Preferred: a Linux pidfd (``os.pidfd_open``, kernel >= 5.3). It refers to one
  process for its whole life (no pid-reuse race) and becomes readable when the
  process exits, so it can sit in the same ``poll``/``add_reader`` set as the
  wake-up descriptor: death wakes the waiter at once.
- Fallback (no pidfd): ``poll_alive()`` asks the kernel on every bounded wake:
  for our child, ``waitid(..., WNOWAIT)`` sees it exit without reaping it (the
  owner, e.g. ``multiprocessing``, still reaps); for our parent, a changed
  ``getppid()`` means it died (we were re-parented); for anyone else,
  ``kill(pid, 0)``.
- A worker watches its parent. It opens the pidfd and *then* checks that the pid
  is still its parent: if so, the pidfd is bound to the right process, and if
  the parent died before the open, ``getppid()`` already changed. No race.
"""

from __future__ import annotations

import os
import select

__all__ = ["PeerWatch"]


class PeerWatch:
    """Watches one process for exit. See the module header."""

    __slots__ = ("_dead", "_pidfd", "_poller", "is_parent", "pid")

    def __init__(self, pid: int, *, is_parent: bool = False, use_pidfd: bool = True) -> None:
        """Watch ``pid``; ``is_parent`` says it is this process's parent (enables the
        race-free parent check). ``use_pidfd=False`` forces the polling fallback."""
        self.pid = pid
        self.is_parent = is_parent
        # Invariant: once _dead is True it stays True (a dead process stays dead).
        self._dead = False
        # Invariant: _pidfd is -1 (fallback or closed) or an open pidfd of `pid`.
        self._pidfd = -1
        self._poller: select.poll | None = None
        if use_pidfd and hasattr(os, "pidfd_open"):
            try:
                self._pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                self._dead = True
            except OSError:  # ENOSYS on old kernels, EPERM in some sandboxes
                self._pidfd = -1
        if self._pidfd >= 0:
            os.set_inheritable(self._pidfd, False)
            self._poller = select.poll()
            self._poller.register(self._pidfd, select.POLLIN)
        if is_parent and os.getppid() != pid:
            self._dead = True

    def fileno(self) -> int:
        """A descriptor that becomes readable when the peer exits, or -1 without pidfd."""
        return self._pidfd

    def poll_alive(self) -> bool:
        """Non-blocking liveness check; cheap enough to call on every bounded wake."""
        if self._dead:
            return False
        if self._poller is not None:
            if self._poller.poll(0):
                self._dead = True
        elif self.is_parent:
            self._dead = os.getppid() != self.pid
        else:
            self._dead = not _process_exists(self.pid)
        return not self._dead

    def close(self) -> None:
        """Release the pidfd. Idempotent; afterwards ``poll_alive`` uses the fallback."""
        if self._pidfd >= 0:
            fd, self._pidfd = self._pidfd, -1
            self._poller = None
            os.close(fd)


def _process_exists(pid: int) -> bool:
    """Whether ``pid`` is a live process: an exited child counts as dead before reaping."""
    try:
        exited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        pass  # not our child: ask with a null signal below
    else:
        return exited is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
