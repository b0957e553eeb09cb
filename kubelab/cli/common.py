"""What every command shares: global options, the consoles and JSON output.

Kept light on purpose (imported for ``kubelab --help``): rich's heavier parts and
kubelab's models are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer

from kubelab.i18n import Lang

if TYPE_CHECKING:
    from rich.console import Console


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    junit = "junit"
    html = "html"
    csv = "csv"


@dataclass
class Options:
    """Global options (``--verbose``, ``--output``, ``--lang``), set by the main callback."""

    verbose: bool = False
    output: OutputFormat = OutputFormat.table
    lang: Lang = "en"

    @property
    def json(self) -> bool:
        return self.output is OutputFormat.json


def options(ctx: typer.Context, formats: tuple[str, ...] = ("table", "json")) -> Options:
    """The global options, refusing an ``--output`` format this command cannot write."""
    obj = ctx.find_root().obj
    opts = obj if isinstance(obj, Options) else Options()
    if opts.output.value not in formats:
        from kubelab.errors import UsageError

        raise UsageError(
            f"`kubelab {ctx.info_name}` cannot write --output {opts.output.value}",
            hint=f"Use --output {' or '.join(formats)}.",
        )
    return opts


_consoles: dict[str, Console] = {}


def console(stderr: bool = False) -> Console:
    """The rich console for stdout (data) or stderr (progress, errors)."""
    key = "err" if stderr else "out"
    if key not in _consoles:
        from rich.console import Console

        # soft_wrap: long lines (file:line: field: message) stay one line each.
        _consoles[key] = Console(stderr=stderr, highlight=False, soft_wrap=True)
    return _consoles[key]


def print_json(data: Any) -> None:
    """Machine-readable output: plain JSON on stdout, nothing else on it."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


# -- shell completion (`kubelab --install-completion`) -------------------------------------


def complete_lesson(incomplete: str) -> list[str]:
    """Lesson ids for the shell's completion."""
    from kubelab import paths

    folder = paths.labs_dir()
    if not folder.is_dir():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.name.startswith(incomplete) and (p / "lesson.yaml").is_file()
    )


def complete_exercise(incomplete: str) -> list[str]:
    """The running lesson's exercise ids for the shell's completion."""
    from kubelab.errors import KubelabError
    from kubelab.lessons.session import open_session
    from kubelab.state import StateStore

    try:
        session = open_session(StateStore(), None)
    except KubelabError:
        return []
    return [e.id for e in session.loaded.lesson.exercises if e.id.startswith(incomplete)]
