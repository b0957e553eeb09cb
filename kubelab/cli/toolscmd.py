"""``kubelab tools install``: pinned helm and kubectl for a kubelab installed as a package."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kubelab.cli.common import console, options, print_json

app = typer.Typer(
    name="tools",
    help="The helm and kubectl kubelab drives: pinned releases, checked by SHA-256.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


@app.command("install")
def install(
    ctx: typer.Context,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Install here (default: kubelab's own tools folder)."),
    ] = None,
) -> None:
    """Download the pinned helm and kubectl, check their SHA-256, install them."""
    import os

    from kubelab import paths, toolinstall

    opts = options(ctx)
    folder = directory or paths.user_tools_dir()
    err = console(stderr=True)
    done = toolinstall.install(
        folder,
        toolinstall.pins_here(),
        mirror=os.environ.get(toolinstall.MIRROR_ENV),
        report=(lambda line: None) if opts.json else (lambda line: err.print(f"[dim]{line}[/]")),
    )
    if opts.json:
        print_json({"folder": str(folder), "tools": done})
        return
    out = console()
    for line in done.values():
        out.print(f"[green]✓[/] {line}")
    if directory is not None:
        out.print(f"kubelab finds them there with: export KUBELAB_TOOLS_DIR={folder}")
