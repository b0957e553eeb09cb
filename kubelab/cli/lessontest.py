"""``kubelab test LESSON``: the lesson's own CI for its authors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kubelab.cli.common import complete_lesson, console, options, print_json


def test(
    ctx: typer.Context,
    lesson: Annotated[
        str, typer.Argument(help="Lesson id or folder.", autocompletion=complete_lesson)
    ],
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

    from kubelab.errors import ExitCode, UsageError
    from kubelab.lessons.loader import find_lesson
    from kubelab.lessons.selftest import cannot_share, isolated_home, run_lesson_test
    from kubelab.providers import get_provider
    from kubelab.state import StateStore

    opts = options(ctx, ("table", "json", "junit"))
    loaded = find_lesson(lesson)
    err = console(stderr=True)
    chosen = get_provider(provider)

    def show(line: str) -> None:
        err.print(f"[dim]{escape(line)}[/]")

    if chosen.installs_components:
        # A cluster is shared with what runs on it: never test into a running lesson.
        problem = cannot_share(loaded, chosen, StateStore())
        if problem:
            raise UsageError(
                problem,
                hint=f"Test it in the sandbox (kubelab test {loaded.lesson.id} --provider "
                "sandbox), or stop that lesson first (kubelab down).",
            )
        report = run_lesson_test(loaded, chosen, StateStore(), keep=keep, progress=show)
    else:
        # The sandbox lives in kubelab's home: a home of its own is a sandbox of its own.
        with isolated_home(keep) as home:
            report = run_lesson_test(loaded, chosen, StateStore(), keep=keep, progress=show)
        if keep:
            err.print(f"The test's lesson keeps running; use it with: export KUBELAB_HOME={home}")
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
    if not report.passed or not report.tested:
        # Nothing tested is no evidence that the lesson works.
        raise typer.Exit(int(ExitCode.CHECK_FAILED))
