"""One ``kubelab up`` or ``down`` at a time per kubelab home.

Two ``up`` at once on the same home both started a sandbox, and ``down`` then stopped only
the one the state file named: a daemon and an Envoy were left running. ``up`` and ``down``
now hold an advisory ``flock`` on ``$KUBELAB_HOME/lifecycle.lock`` for their whole run. A
second one waits for the first, saying so and naming it, and then carries on from what the
first left (a second ``up`` resumes; a ``down`` removes what the ``up`` made).

The lock is reentrant within a process, per home (``kubelab down`` holds it while each
lesson's own down takes it again). The kernel drops it when its holder dies, so a killed
``up`` never blocks the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from kubelab.i18n import _

LOCK_NAME = "lifecycle.lock"
_held: dict[Path, int] = {}  # home -> depth of this process's hold


@contextlib.contextmanager
def exclusive(
    home: Path, command: str, notify: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold the lifecycle lock of ``home`` (the state file's folder) while the block runs;
    ``notify`` (default: a line on stderr) is told once when another kubelab holds it and
    this one waits."""
    key = home.resolve()
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = home / LOCK_NAME
    with open(path, "a+", encoding="utf-8") as lock:
        os.chmod(path, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or _("another kubelab")
            waiting = _("{holder} is running for {home}; waiting for it to finish (Ctrl-C stops)")
            (notify or notify_stderr)(waiting.format(holder=holder, home=home))
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        lock.truncate()
        lock.write(f"kubelab {command} (pid {os.getpid()})\n")
        lock.flush()
        _held[key] = 1
        try:
            yield
        finally:
            _held[key] = 0
            with contextlib.suppress(OSError):
                lock.seek(0)
                lock.truncate()
            fcntl.flock(lock, fcntl.LOCK_UN)


def notify_stderr(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
