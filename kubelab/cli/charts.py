"""``kubelab charts pull DIR [LESSON ...]``: the pinned Helm charts of lessons, in a folder.

For classes with poor internet and for air-gapped clusters: pull once where the chart
repositories are reachable, then ``kubelab up LESSON --charts DIR`` installs from the
folder. What is where, and how it is checked, lives in
``kubelab.components.localcharts``; this module only wires the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kubelab.cli.common import console, options, print_json

if TYPE_CHECKING:
    from kubelab.components.catalog import Release

app = typer.Typer(
    name="charts",
    help="Download the pinned Helm charts of lessons for `kubelab up --charts DIR`.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

PULL_TIMEOUT = 300.0  # seconds per chart


@app.command("pull")
def pull(
    ctx: typer.Context,
    directory: Annotated[
        Path, typer.Argument(help="Folder for the charts and their index (created if missing).")
    ],
    lessons: Annotated[
        list[str] | None,
        typer.Argument(help="Lesson ids or folders (default: every lesson under labs/)."),
    ] = None,
    tls: Annotated[
        bool, typer.Option("--tls", help="Also cert-manager's chart, which `up --tls` installs.")
    ] = False,
) -> None:
    """Download every pinned chart the lessons need into DIR (what is there is kept)."""
    import logging

    from rich.markup import escape

    from kubelab.cluster.helm import pull_chart
    from kubelab.components.localcharts import INDEX_FILE, lesson_releases, pull_charts
    from kubelab.errors import UsageError
    from kubelab.lessons.loader import available_lessons, find_lesson
    from kubelab.tools import require_tool

    opts = options(ctx)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} is not a folder", hint="Give a folder for the charts.")
    loaded = [find_lesson(name) for name in lessons] if lessons else available_lessons()
    components = [c for item in loaded for c in item.lesson.components]
    releases = lesson_releases(components, tls=tls)
    helm = require_tool("helm")
    folder = directory.expanduser().resolve()
    err = console(stderr=True)

    def puller(release: Release, staging: Path) -> Path:
        return pull_chart(
            helm, release.chart, release.repo, release.version, staging, timeout=PULL_TIMEOUT
        )

    def progress(release: Release, status: str, detail: str) -> None:
        if opts.json:
            return  # JSON runs print the result only
        what = f"{release.chart} {release.version}"
        if status == "pulling":
            err.print(f"  {escape(release.name)}: pulling {escape(what)} from {escape(detail)}")
        elif status in ("pulled", "replaced"):
            err.print(f"[green]✓[/] {escape(release.name)}: {status} {escape(detail)}")
        elif status == "present":
            err.print(f"[green]✓[/] {escape(release.name)}: {escape(detail)} already here")
        else:  # the reason is in the error printed at the end
            err.print(f"[red]✗[/] {escape(release.name)}: could not download {escape(what)}")

    # pyhelm3 logs every failed helm command; the error below says it once, with the fix.
    logging.getLogger("pyhelm3").setLevel(logging.ERROR)
    results = pull_charts(folder, releases, puller, progress)
    pulled = sum(r.action in ("pulled", "replaced") for r in results)
    present = sum(r.action == "present" for r in results)
    if opts.json:
        print_json(
            {
                "directory": str(folder),
                "index": str(folder / INDEX_FILE),
                "lessons": [item.lesson.id for item in loaded],
                "pulled": pulled,
                "present": present,
                "charts": [r.to_json() for r in results],
            }
        )
        return
    out = console()
    where = escape(str(folder))
    if pulled == 0:
        out.print(f"All {len(results)} charts are already in {where}: nothing downloaded.")
    else:
        out.print(
            f"{len(results)} charts in {where}: {pulled} downloaded, {present} already there "
            f"(index: {INDEX_FILE})."
        )
    ids = " ".join(item.lesson.id for item in loaded)
    out.print(f"Install from them with: kubelab up LESSON --charts {where}   (lessons: {ids})")
