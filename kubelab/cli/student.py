"""Student commands: ``exercise``, ``hint``, ``check``, ``progress`` and ``solve``."""

from __future__ import annotations

import contextlib
import time
from typing import Annotated, Any

import typer

from kubelab.cli.common import Options, complete_exercise, console, options, print_json
from kubelab.i18n import _

LessonOption = Annotated[
    str | None,
    typer.Option("--lesson", "-l", help="Lesson id (default: the running lesson)."),
]
ExerciseArg = Annotated[
    str | None,
    typer.Argument(
        help="Exercise id or number (default: the current exercise).",
        autocompletion=complete_exercise,
    ),
]


def status_text(status: str) -> str:
    """A status word as shown to people (JSON keeps the English values)."""
    words = {
        "passed": _("passed"),
        "failed": _("failed"),
        "pending": _("pending"),
        "error": _("error"),
        "not-started": _("not-started"),
        "unavailable": _("unavailable"),
    }
    return words.get(status, status)


_STATUS_STYLE = {
    "passed": "green",
    "failed": "red",
    "pending": "yellow",
    "error": "magenta",
    "not-started": "dim",
    "unavailable": "dim",
}


def _unavailable_text(session: Any, exercise: Any) -> str:
    from kubelab.providers import get_provider

    needed = sorted(exercise.needed_components() - (session.available or set()))
    provider = get_provider(session.record.provider)
    hints = dict.fromkeys(provider.missing_component_hint(c) for c in needed)
    return " ".join(
        [
            _(
                "This exercise needs {components}, which the {provider} cluster does not "
                "have; it is skipped here."
            ).format(components=", ".join(needed), provider=session.record.provider),
            *hints,
        ]
    )


def exercise(
    ctx: typer.Context, exercise_id: ExerciseArg = None, lesson: LessonOption = None
) -> None:
    """Show what to do now: the current exercise (or the one named)."""
    from kubelab.lessons.session import open_session

    opts = options(ctx)
    session = open_session(_store(), lesson)
    ex = session.exercise(exercise_id)
    lessons = session.loaded.lesson
    number = lessons.exercises.index(ex) + 1
    available = session.available_here(ex)
    if opts.json:
        print_json(
            {
                "lesson": lessons.id,
                "exercise": ex.id,
                "number": number,
                "of": len(lessons.exercises),
                "title": ex.title.get(opts.lang),
                "instructions": session.localize(ex.instructions.get(opts.lang)),
                "hints": len(ex.hints),
                "available": available,
                "status": session.progress(ex.id).status,
            }
        )
        return
    from rich.markdown import Markdown
    from rich.panel import Panel

    out = console()
    out.print(
        Panel.fit(
            f"[bold]{number}/{len(lessons.exercises)} {ex.title.get(opts.lang)}[/]  ({ex.id})",
            border_style="cyan",
        )
    )
    if not available:
        out.print(f"[yellow]{_unavailable_text(session, ex)}[/]")
    out.print(Markdown(session.localize(ex.instructions.get(opts.lang))), soft_wrap=False)
    hints = _("{count} hint(s)").format(count=len(ex.hints))
    out.print(f"[dim]kubelab hint {ex.id}  ·  kubelab check {ex.id}  ·  {hints}[/]")


def hint(ctx: typer.Context, exercise_id: ExerciseArg = None, lesson: LessonOption = None) -> None:
    """Show one more hint for the exercise each time it is called."""
    from kubelab.lessons.progress import record_progress
    from kubelab.lessons.session import open_session

    opts = options(ctx)
    store = _store()
    session = open_session(store, lesson)
    ex = session.exercise(exercise_id)
    shown = session.progress(ex.id).hints_shown
    index = min(shown, len(ex.hints) - 1)
    if shown < len(ex.hints):
        record_progress(store, session.loaded.lesson.id, ex.id, hint_shown=True)
    last = index == len(ex.hints) - 1
    text = session.localize(ex.hints[index].get(opts.lang))
    if opts.json:
        print_json(
            {
                "lesson": session.loaded.lesson.id,
                "exercise": ex.id,
                "hint": index + 1,
                "of": len(ex.hints),
                "text": text,
                "last": last,
            }
        )
        return
    from rich.markdown import Markdown

    out = console()
    title = _("Hint {number}/{count} for {exercise}:").format(
        number=index + 1, count=len(ex.hints), exercise=ex.id
    )
    out.print(f"[bold]{title}[/]")
    out.print(Markdown(text), soft_wrap=False)
    if last and shown >= len(ex.hints):
        out.print(
            "[dim]"
            + _("That was the last hint. `kubelab check` tells what is still wrong.")
            + "[/]"
        )


def _outcome_table(outcome: Any) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_header=True)
    table.add_column(_("CHECK"), no_wrap=True)
    table.add_column(_("STATUS"), no_wrap=True)
    table.add_column(_("DETAILS"), overflow="fold")
    for check in outcome.checks:
        style = _STATUS_STYLE.get(str(check.result.status), "")
        details = escape(check.result.message)
        if check.result.hint and str(check.result.status) != "passed":
            hint = _("hint:")
            details += f"\n[dim]{hint} {escape(check.result.hint)}[/]"
        table.add_row(check.id, f"[{style}]{status_text(str(check.result.status))}[/]", details)
    return table


def _status_line(outcome: Any) -> str:
    status = str(outcome.status)
    style = _STATUS_STYLE.get(status, "")
    label = _("Exercise {exercise}:").format(exercise=outcome.exercise)
    return f"{label} [bold {style}]{status_text(status)}[/]"


def _print_outcome(opts: Options, outcome: Any) -> None:
    out = console()
    out.print(_outcome_table(outcome))
    out.print(_status_line(outcome))


def _kept_pass_warning(passed_at: str, outcome: Any) -> str:
    """A pass recorded earlier stands when a later run fails: say so, as a warning."""
    return _(
        "warning: {exercise} passed at {time} and stays done; this run is {status} "
        "(a later exercise may have changed what it checks)."
    ).format(
        exercise=outcome.exercise,
        time=passed_at.replace("T", " ")[:19],
        status=status_text(str(outcome.status)),
    )


def _watch(
    run: Any, exercise: Any, title: str, timeout: float, interval: float, json_output: bool
) -> Any:
    """Re-run ``run()`` until the exercise passes or ``timeout`` seconds pass, showing the
    latest outcome in place (a rich Live display on a terminal; one line per run in a log;
    nothing but the final JSON with ``--output json``). Returns the last outcome."""
    from rich.console import Group
    from rich.live import Live
    from rich.markup import escape
    from rich.text import Text

    from kubelab.checks.result import Status

    started = time.monotonic()
    attempt = 0

    def view(outcome: Any, state: str) -> Any:
        elapsed = time.monotonic() - started
        head = Text.from_markup(
            "[bold]"
            + _("Watching {exercise} ({title})").format(exercise=exercise.id, title=escape(title))
            + "[/]  [dim]"
            + _("run {attempt}, {elapsed:.0f} s of {timeout:g} s; {state}").format(
                attempt=attempt, elapsed=elapsed, timeout=timeout, state=state
            )
            + "[/]"
        )
        if outcome is None:
            return head
        return Group(head, _outcome_table(outcome), Text.from_markup(_status_line(outcome)))

    out = console()
    shown = not json_output and out.is_terminal
    live = Live(view(None, _("checking...")), console=out, auto_refresh=False)
    outcome = None
    with live if shown else contextlib.nullcontext():
        while True:
            attempt += 1
            if shown and outcome is not None:
                live.update(view(outcome, _("checking...")), refresh=True)
            outcome = run()
            left = timeout - (time.monotonic() - started)
            if outcome.status is Status.PASSED or left <= 0:
                break
            if shown:
                state = _("next run in {seconds:.0f} s; Ctrl-C to stop").format(
                    seconds=min(interval, left)
                )
                live.update(view(outcome, state), refresh=True)
            elif not json_output:  # a log, not a screen: one line per run
                console(stderr=True).print(f"[dim]{attempt}.[/] {_status_line(outcome)}")
            time.sleep(min(interval, left))
        final = view(outcome, _("passed") if outcome.status is Status.PASSED else _("time is up"))
        if shown:
            live.update(final, refresh=True)
        elif not json_output:
            out.print(final)
    return outcome


def check(
    ctx: typer.Context,
    exercise_id: ExerciseArg = None,
    lesson: LessonOption = None,
    wait: Annotated[
        float,
        typer.Option("--wait", help="Keep re-checking while pending, up to this many seconds."),
    ] = 0.0,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Re-run the checks until they pass (or --timeout), updating the screen in "
            "place; exit 0 once they pass.",
        ),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=1, max=86400, help="Seconds --watch keeps trying."),
    ] = 600.0,
    interval: Annotated[
        float,
        typer.Option("--interval", min=0.5, max=600, help="Seconds between --watch runs."),
    ] = 3.0,
) -> None:
    """Run the exercise's checks, record the result; exit 0 when all pass, 1 otherwise."""
    from kubelab.checks.result import Status
    from kubelab.checks.runner import run_exercise, wait_for_exercise
    from kubelab.errors import ExitCode, UsageError
    from kubelab.lessons.progress import record_progress
    from kubelab.lessons.runner import check_context
    from kubelab.lessons.session import open_session
    from kubelab.providers import get_provider

    opts = options(ctx)
    store = _store()
    session = open_session(store, lesson)
    ex = session.exercise(exercise_id)
    if not session.deployed or not session.record.provider:
        raise UsageError(
            _("lesson {lesson} is not running, so there is nothing to check").format(
                lesson=session.loaded.lesson.id
            ),
            hint=f"kubelab up {session.loaded.lesson.id} --provider sandbox",
        )
    if not session.available_here(ex):
        raise UsageError(
            _("cannot check {exercise} here").format(exercise=ex.id),
            hint=_unavailable_text(session, ex),
        )
    provider = get_provider(session.record.provider)
    started = time.monotonic()
    lesson_id = session.loaded.lesson.id
    target = session.checkable(ex)
    check_ctx = check_context(provider, session.record)
    if watch:
        outcome = _watch(
            lambda: run_exercise(lesson_id, target, check_ctx),
            ex,
            ex.title.get(opts.lang),
            timeout,
            interval,
            opts.json,
        )
    else:
        if not opts.json:
            console(stderr=True).print(
                "[dim]" + _("checking {exercise}...").format(exercise=ex.id) + "[/]"
            )
        outcome = wait_for_exercise(lesson_id, target, check_ctx, wait, poll=2.0)
    earlier = session.progress(ex.id).passed_at
    record_progress(store, lesson_id, ex.id, status=str(outcome.status))
    if opts.json:
        print_json(outcome.to_json())
    else:
        if not watch:
            _print_outcome(opts, outcome)
        if outcome.status is Status.PASSED:
            # The same "current exercise" that `kubelab exercise` and `check` then use.
            nxt = open_session(store, lesson_id).current()
            console().print(
                _("Well done. Next: kubelab exercise {exercise}").format(exercise=nxt.id)
                if nxt
                else _("Lesson complete!")
            )
        elif earlier:
            console(stderr=True).print(f"[yellow]{_kept_pass_warning(earlier, outcome)}[/]")
        elif watch:
            console(stderr=True).print(
                "[red]"
                + _("{exercise} did not pass within {timeout:g} s.").format(
                    exercise=ex.id, timeout=timeout
                )
                + "[/]"
            )
        console(stderr=True).print(f"[dim]{time.monotonic() - started:.1f}s[/]")
    if outcome.status is not Status.PASSED:
        raise typer.Exit(int(ExitCode.CHECK_FAILED))


def progress(
    ctx: typer.Context,
    lesson: LessonOption = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Forget this lesson's progress and start over.")
    ] = False,
) -> None:
    """Where you are: every exercise with its last check result."""
    from kubelab.lessons.progress import reset_progress
    from kubelab.lessons.session import open_session

    opts = options(ctx)
    store = _store()
    session = open_session(store, lesson)
    if reset:
        forgot = reset_progress(store, session.loaded.lesson.id)
        if opts.json:
            print_json({"lesson": session.loaded.lesson.id, "forgot": forgot})
        else:
            console().print(
                _("Forgot the progress of {count} exercises of {lesson}.").format(
                    count=forgot, lesson=session.loaded.lesson.id
                )
            )
        return
    current = session.current()
    rows = []
    for ex in session.loaded.lesson.exercises:
        p = session.progress(ex.id)
        status = p.status if session.available_here(ex) else "unavailable"
        rows.append(
            {
                "exercise": ex.id,
                "title": ex.title.get(opts.lang),
                "status": status,
                "done": session.done(ex),
                "checked_at": p.checked_at,
                "passed_at": p.passed_at,
                "attempts": p.attempts,
                "hints_shown": p.hints_shown,
                "current": current is not None and ex.id == current.id,
            }
        )
    passed = sum(r["status"] == "passed" for r in rows)
    done = sum(bool(r["done"]) for r in rows)
    if opts.json:
        print_json(
            {"lesson": session.loaded.lesson.id, "passed": passed, "done": done, "exercises": rows}
        )
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("", _("EXERCISE"), _("TITLE"), _("STATUS"), _("ATTEMPTS"), _("HINTS")):
        table.add_column(column)
    for r in rows:
        style = _STATUS_STYLE.get(str(r["status"]), "")
        shown = f"[{style}]{status_text(str(r['status']))}[/]"
        if r["passed_at"] and r["status"] != "passed":  # a pass stands; the last run differs
            last = _("last run: {status}").format(status=status_text(str(r["status"])))
            shown = f"[green]{status_text('passed')}[/] [dim]({last})[/]"
        table.add_row(
            "→" if r["current"] else "",
            str(r["exercise"]),
            str(r["title"]),
            shown,
            str(r["attempts"]),
            str(r["hints_shown"]),
        )
    out = console()
    out.print(table)
    line = _("{done} of {count} exercises done").format(done=done, count=len(rows))
    if done > passed:
        line += " " + _("({later} of them by a later exercise)").format(later=done - passed)
    out.print(line + ".")


def solve(
    ctx: typer.Context,
    exercise_id: Annotated[str, typer.Argument(help="Exercise id.")],
    lesson: LessonOption = None,
) -> None:
    """Run the exercise's solve script (for instructors and lesson tests)."""
    from kubelab.lessons.session import open_session
    from kubelab.lessons.solve import run_solve

    opts = options(ctx)
    session = open_session(_store(), lesson)
    ex = session.exercise(exercise_id)
    result = run_solve(session.loaded, ex, session.record, capture=opts.json)
    if opts.json:
        print_json(
            {
                "lesson": session.loaded.lesson.id,
                "exercise": ex.id,
                "exit_code": result.returncode,
                "output": result.output,
                "seconds": result.seconds,
            }
        )
    if result.returncode != 0:
        from kubelab.errors import SetupError

        raise SetupError(
            f"solve script of {ex.id} exited with code {result.returncode}",
            hint="Its output is above; is the lesson running (kubelab status)?",
        )


def _store() -> Any:
    from kubelab.state import StateStore

    return StateStore()
