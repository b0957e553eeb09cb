"""Commands for ``kubectl exec``: in their own process group, on a terminal with ``-t``.

:func:`spawn` starts a command the way ``pods/exec`` needs it:

* It always gets a new session (its own process group), so that when the client goes
  away :func:`kill_group` ends everything the command started (a ``curl`` under a
  shell), not only the shell.
* With a TTY, the command runs on a real pseudo-terminal that is its controlling
  terminal. Keys then behave as on a cluster: Enter is a newline, echo comes from the
  terminal, Ctrl-C interrupts the foreground command, ``exit`` ends the shell, and the
  resize channel sets the window size.

A TTY command is a :class:`PtyProcess`, which has what the exec pump uses of an asyncio
``Process``: ``stdin``, ``stdout`` (``stderr`` is the terminal too), ``pid``,
``returncode``, ``wait()`` and ``kill()``, plus ``resize()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import signal
import struct
import termios
import time
from collections.abc import Callable
from typing import Any

_SIGKILL = signal.SIGKILL


def kill_group(process: Any) -> None:
    """End ``process`` and its process group (it leads one: see :func:`spawn`)."""
    pid = getattr(process, "pid", None)
    if pid is None or getattr(process, "returncode", None) is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, _SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()


class _PtyInput:
    """The terminal's input side, shaped like an asyncio ``StreamWriter``."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._closed = False

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._closed:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                time.sleep(0.001)  # the terminal's buffer is full for a moment
                continue
            except OSError:
                return
            view = view[written:]

    async def drain(self) -> None:
        return None

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        # A terminal has no end of input of its own: send EOF (Ctrl-D) once.
        if not self._closed:
            with contextlib.suppress(OSError):
                os.write(self._fd, b"\x04")
            self._closed = True


class PtyProcess:
    """A command on a pseudo-terminal."""

    stderr = None

    def __init__(self, process: asyncio.subprocess.Process, master: int) -> None:
        self._process = process
        self._master = master
        self.pid = process.pid
        self.stdin = _PtyInput(master)
        self.stdout = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        os.set_blocking(master, False)
        loop.add_reader(master, self._readable)
        self._loop = loop

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: every process holding the terminal is gone
            data = b""
        if data:
            self.stdout.feed_data(data)
            return
        self._loop.remove_reader(self._master)
        self.stdout.feed_eof()

    def resize(self, width: int, height: int) -> None:
        size = struct.pack("HHHH", max(height, 1), max(width, 1), 0, 0)
        with contextlib.suppress(OSError):
            fcntl.ioctl(self._master, termios.TIOCSWINSZ, size)

    async def wait(self) -> int:
        code = await self._process.wait()
        # Let the last output arrive, then let go of the terminal.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained(), 1.0)
        self._close()
        return code

    async def _drained(self) -> None:
        while not self.stdout.at_eof():
            await asyncio.sleep(0.02)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()

    def _close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._master)
        if not self.stdout.at_eof():
            self.stdout.feed_eof()
        with contextlib.suppress(OSError):
            os.close(self._master)
        self._master = -1


def _controlling_terminal(then: Callable[[], None] | None) -> Callable[[], None]:
    def preexec() -> None:
        # start_new_session made this process a session leader; its stdin (the
        # terminal's other side) becomes the session's controlling terminal.
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        if then is not None:
            then()

    return preexec


async def spawn(
    command: list[str],
    *,
    env: dict[str, str],
    cwd: str,
    stdin: bool,
    tty: bool,
    preexec: Callable[[], None] | None = None,
) -> asyncio.subprocess.Process | PtyProcess:
    """Start ``command`` in its own session; on a pseudo-terminal when ``tty``."""
    if not tty:
        return await asyncio.create_subprocess_exec(
            *command,
            env=env,
            cwd=cwd,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=preexec,
        )
    master, slave = pty.openpty()
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            env={"TERM": "xterm", **env},
            cwd=cwd,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=_controlling_terminal(preexec),
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return PtyProcess(process, master)
