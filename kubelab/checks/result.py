"""What a check returns: an outcome, not a boolean.

``pending`` is "not ready yet, try again" (pods starting, metrics not scraped yet),
``failed`` is "wrong", ``error`` is "could not check" (API unreachable). An exercise's
status is the worst of its required checks: error, then failed, then pending.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    PENDING = "pending"
    ERROR = "error"


_SEVERITY = {Status.PASSED: 0, Status.PENDING: 1, Status.FAILED: 2, Status.ERROR: 3}


@dataclass
class CheckResult:
    status: Status
    message: str
    hint: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_problems(
        cls,
        problems: list[str],
        passed: str,
        hint: str | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> CheckResult:
        """Failed with every problem listed (``; ``-joined), or passed with ``passed``."""
        if problems:
            return cls(Status.FAILED, "; ".join(problems), hint, evidence or {})
        return cls(Status.PASSED, passed, None, evidence or {})


def worst(statuses: Iterable[Status]) -> Status:
    """The exercise status from its required checks' statuses (passed when there are none)."""
    return max(statuses, key=_SEVERITY.__getitem__, default=Status.PASSED)
