"""The state file: what kubelab created, where, and for which lesson.

Written after every change so that ``down``, ``status`` and a re-run work after a crash
or Ctrl-C. Writes are atomic (temp file + fsync + rename) and the file is mode 0600
because it names kubeconfig paths and cloud resource ids. The document carries a
``schema_version``; older versions are migrated on load, newer ones are refused rather
than silently rewritten by an older kubelab.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any

import msgspec

from kubelab import paths
from kubelab.errors import KubelabWarning, StateError

SCHEMA_VERSION = 2
STATE_FILENAME = "state.json"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _Record(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A part of the state file (mutable; unknown keys are refused)."""


class CreatedResource(_Record, kw_only=True):
    """One thing kubelab created and must remove again (a helm release, a server...)."""

    kind: str
    name: str
    namespace: str | None = None
    id: str | None = None
    created_at: str = msgspec.field(default_factory=now)
    details: dict[str, Any] = msgspec.field(default_factory=dict)

    def key(self) -> tuple[str, str, str | None]:
        return (self.kind, self.name, self.namespace)


class ClusterRecord(_Record, kw_only=True):
    name: str
    provider: str
    kubeconfig: str | None = None
    created_at: str = msgspec.field(default_factory=now)
    resources: list[CreatedResource] = msgspec.field(default_factory=list)
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class ExerciseProgress(_Record, kw_only=True):
    status: str = "not-started"  # the last check's outcome
    checked_at: str | None = None
    attempts: int = 0
    hints_shown: int = 0
    # When a check of it first passed. It stays set when a later check fails (the student
    # moved on), so the current exercise never goes backwards.
    passed_at: str | None = None


class LessonRecord(_Record, kw_only=True):
    lesson: str
    cluster: str | None = None
    provider: str | None = None
    steps_done: list[str] = msgspec.field(default_factory=list)
    resources: list[CreatedResource] = msgspec.field(default_factory=list)
    created_at: str = msgspec.field(default_factory=now)
    updated_at: str = msgspec.field(default_factory=now)
    details: dict[str, Any] = msgspec.field(default_factory=dict)

    def add_resource(self, resource: CreatedResource) -> None:
        """Record ``resource`` once; re-recording the same (kind, name, namespace) updates it."""
        self.resources = [r for r in self.resources if r.key() != resource.key()]
        self.resources.append(resource)


class StudentRecord(_Record, kw_only=True):
    id: str
    name: str
    email: str
    namespace: str
    kubeconfig: str | None = None
    token_expires: str | None = None  # ISO 8601 UTC, when the kubeconfig's token ends


class ClassRecord(_Record, kw_only=True):
    """A class of one lesson on the lesson's cluster (``kubelab class create``)."""

    lesson: str
    roster: str  # the roster file it was made from
    out_dir: str  # where the students' kubeconfigs are
    students: list[StudentRecord] = msgspec.field(default_factory=list)
    created_at: str = msgspec.field(default_factory=now)
    updated_at: str = msgspec.field(default_factory=now)


class State(_Record, kw_only=True):
    schema_version: int = SCHEMA_VERSION
    clusters: dict[str, ClusterRecord] = msgspec.field(default_factory=dict)
    lessons: dict[str, LessonRecord] = msgspec.field(default_factory=dict)
    classes: dict[str, ClassRecord] = msgspec.field(default_factory=dict)
    # lesson id -> exercise id -> progress. Kept apart from the lesson's record, so it
    # survives `down` and a later `up` (`kubelab progress --reset` forgets it).
    progress: dict[str, dict[str, ExerciseProgress]] = msgspec.field(default_factory=dict)

    def lesson(self, lesson_id: str) -> LessonRecord:
        """The record of ``lesson_id``, created empty when missing."""
        if lesson_id not in self.lessons:
            self.lessons[lesson_id] = LessonRecord(lesson=lesson_id)
        return self.lessons[lesson_id]


def _progress_out_of_lessons(raw: dict[str, Any]) -> dict[str, Any]:
    """1 -> 2: progress moved from each lesson's record to the state's own ``progress``."""
    progress = raw.setdefault("progress", {})
    for lesson_id, record in (raw.get("lessons") or {}).items():
        if isinstance(record, dict) and record.get("progress"):
            progress[lesson_id] = record.pop("progress")
        elif isinstance(record, dict):
            record.pop("progress", None)
    raw["schema_version"] = 2
    return raw


# schema_version -> function upgrading a raw document of that version by one step.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _progress_out_of_lessons}


def _migrate(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    version = raw.get("schema_version")
    if not isinstance(version, int):
        raise StateError(
            f"state file {path} has no valid schema_version",
            hint=f"Move it away (mv {path} {path}.bak) and run the command again.",
        )
    if version > SCHEMA_VERSION:
        raise StateError(
            f"state file {path} was written by a newer kubelab (schema {version}, "
            f"this kubelab reads up to {SCHEMA_VERSION})",
            hint="Upgrade kubelab: pip install -U kubelab",
        )
    while version < SCHEMA_VERSION:
        raw = MIGRATIONS[version](raw)
        version = raw["schema_version"]
    return raw


def _encode_other(value: Any) -> Any:
    """Values msgspec does not encode itself, as they were written before (paths as text)."""
    if isinstance(value, PurePath):
        return str(value)
    raise NotImplementedError(f"cannot write {type(value).__name__} to the state file")


class StateStore:
    """Reads and writes the state file; use :meth:`transaction` for read-modify-write."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else paths.home_dir() / STATE_FILENAME

    def load(self) -> State:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return State()
        except OSError as exc:
            raise StateError(
                f"cannot read state file {self.path}: {exc.strerror}",
                hint="Check the file's owner and permissions.",
            ) from exc
        self._check_owner_and_mode()
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise ValueError("not an object")
            return msgspec.convert(_migrate(raw, self.path), State)
        except ValueError as exc:  # msgspec.ValidationError is one
            raise StateError(
                f"state file {self.path} is corrupt ({str(exc).splitlines()[0]})",
                hint=f"Move it away (mv {self.path} {self.path}.bak); kubelab then starts "
                "from an empty state and `kubelab status` shows what it still finds.",
            ) from exc

    def _check_owner_and_mode(self) -> None:
        """The file names kubeconfigs and cloud resources: it must be the user's own and
        readable by nobody else. Another owner is said; a looser mode is said and fixed."""
        try:
            info = self.path.stat()
        except OSError:
            return
        if info.st_uid != os.geteuid():
            warnings.warn(
                f"state file {self.path} belongs to another user (uid {info.st_uid}); "
                "check KUBELAB_HOME, or move the file away if it is not yours",
                KubelabWarning,
                stacklevel=3,
            )
        elif info.st_mode & 0o077:
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o600)
                warnings.warn(
                    f"state file {self.path} was readable by others "
                    f"(mode {stat.S_IMODE(info.st_mode):04o}); it is 0600 now",
                    KubelabWarning,
                    stacklevel=3,
                )

    def save(self, state: State) -> None:
        """Write ``state`` atomically with mode 0600 (temp file, fsync, rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        encoded = msgspec.json.encode(state, enc_hook=_encode_other)
        data = msgspec.json.format(encoded, indent=2).decode() + "\n"
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[State]:
        """Lock, load, yield the state for changes, and save it when the block succeeds.

        The lock is an advisory ``flock`` on a side file, so two kubelab processes (a
        student's ``check`` and an instructor's ``grade``) never lose each other's writes.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a", encoding="utf-8") as lock:
            os.chmod(lock_path, 0o600)
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self.load()
                yield state
                self.save(state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
