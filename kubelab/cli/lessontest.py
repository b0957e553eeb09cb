"""``kubelab test LESSON``: the lesson's own CI for its authors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kubelab.cli.common import console, options, print_json


def test(
    ctx: typer.Context,
    lesson: Annotated[str, typer.Argument(help="Lesson id or folder.")],
    provider: Annotated[
        str, typer.Option("--provider", "-p", help="Where to run it (sandbox by default).")
    ] = "sandbox",
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the report (json or junit) to this file.")
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the lesson running afterwards.")
    ] = False,
) -> None:
    """Up, then for every exercise: checks fail, solve, checks pass; then down."""
    from rich.markup import escape

    from kubelab.errors import ExitCode
    from kubelab.lessons.loader import find_lesson
    from kubelab.lessons.selftest import run_lesson_test
    from kubelab.providers import get_provider
    from kubelab.state import StateStore

    opts = options(ctx, ("table", "json", "junit"))
    loaded = find_lesson(lesson)
    err = console(stderr=True)
    report = run_lesson_test(
        loaded,
        get_provider(provider),
        StateStore(),
        keep=keep,
        progress=lambda line: err.print(f"[dim]{escape(line)}[/]"),
    )
    if opts.output.value == "junit":
        text = report.to_junit()
        if out:
            out.write_text(text, encoding="utf-8")
        else:
            typer.echo(text, nl=False)
    elif opts.json:
        if out:
            import json

            out.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
        else:
            print_json(report.to_json())
    if opts.output.value == "table" or out:
        con = console()
        if report.setup_error:
            con.print(f"[red]setup failed:[/] {escape(report.setup_error)}")
        for e in report.exercises:
            style = {"passed": "green", "skipped": "dim", "failed": "red", "error": "magenta"}
            con.print(f"[{style[e.result]}]{e.result:8}[/] {e.exercise} ({e.seconds:.1f}s)")
            for problem in e.problems:
                con.print(f"         {escape(problem)}")
            if e.skipped_because:
                con.print(f"         [dim]{escape(e.skipped_because)}[/]")
        verdict = "[green]lesson test passed[/]" if report.passed else "[red]lesson test failed[/]"
        if report.passed and all(e.result == "skipped" for e in report.exercises):
            verdict = (
                f"[yellow]nothing tested: every exercise needs what {escape(report.provider)} "
                "does not have[/]"
            )
        con.print(f"{verdict} ({report.seconds:.1f}s)")
    if not report.passed:
        raise typer.Exit(int(ExitCode.CHECK_FAILED))
