"""One error root for kubelab.

Every failure a user can hit is a :class:`KubelabError` carrying a message (what went
wrong, on which object), a hint (what to do next) and an exit code. Only the CLI
catches them (``kubelab.cli.main``); lower layers raise and never print.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, shared by every command."""

    OK = 0
    CHECK_FAILED = 1
    USAGE = 2
    TIMEOUT = 3
    SETUP = 4


class KubelabError(Exception):
    """Root of every error kubelab reports to a user."""

    exit_code: ExitCode = ExitCode.SETUP

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        details: list[str] | None = None,
        exit_code: ExitCode | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # One line per problem (e.g. every validation error of a lesson file).
        self.details = details or []
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(KubelabError):
    """Bad input: flags, lesson files, names that do not exist."""

    exit_code = ExitCode.USAGE


class ValidationFailed(UsageError):
    """A lesson or a rendered manifest is invalid; ``details`` holds one line per problem."""


class CheckFailed(KubelabError):
    """An exercise's checks did not pass."""

    exit_code = ExitCode.CHECK_FAILED


class KubelabTimeout(KubelabError):
    """A wait ran out of time."""

    exit_code = ExitCode.TIMEOUT


class SetupError(KubelabError):
    """A tool, credential or piece of infrastructure is missing or broken."""

    exit_code = ExitCode.SETUP


class StateError(SetupError):
    """The state file cannot be read or written."""


class KubelabWarning(UserWarning):
    """Something worth a line on stderr that does not stop the command (the CLI prints it
    as ``warning: ...``); lower layers raise it with :func:`warnings.warn`."""
