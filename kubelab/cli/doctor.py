"""``kubelab doctor``: which tools and credentials are here, and how to get the rest."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated

import typer

from kubelab.cli.common import console, options, print_json


@dataclass
class _Row:
    name: str
    kind: str
    ok: bool
    detail: str
    needed: bool
    fix: str | None
    optional: bool = False


def doctor(
    ctx: typer.Context,
    provider: Annotated[
        str,
        typer.Option(
            "--provider", "-p", help="Provider you will use: sandbox, existing, kind, hetzner, gke."
        ),
    ] = "sandbox",
) -> None:
    """Check tools and credentials; exit 0 only if the chosen provider has what it needs."""
    from kubelab.errors import ExitCode, UsageError
    from kubelab.providers.requirements import PROVIDERS

    if provider not in PROVIDERS:
        raise UsageError(
            f"unknown provider {provider!r}", hint=f"Use one of: {', '.join(PROVIDERS)}."
        )
    opts = options(ctx)
    info = PROVIDERS[provider]
    needed = {r.name for r in info.requirements}
    optional = {r.name for r in info.optional} - needed
    every = {r.name: r for i in PROVIDERS.values() for r in (*i.requirements, *i.optional)}
    rows = []
    for name, req in every.items():
        probe = req.probe()
        rows.append(
            _Row(
                name,
                req.kind,
                probe.ok,
                probe.detail,
                name in needed,
                None if probe.ok else req.fix,
                name in optional,
            )
        )
    ready = all(r.ok for r in rows if r.needed)
    if opts.json:
        print_json(
            {"provider": provider, "ready": ready, "requirements": [asdict(r) for r in rows]}
        )
    else:
        from rich.markup import escape
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        table.add_column("STATUS", no_wrap=True)
        table.add_column("NAME", no_wrap=True)
        table.add_column(f"FOR {provider.upper()}", no_wrap=True)
        table.add_column("FOUND", overflow="fold")
        for r in rows:
            status = (
                "[green]ok[/]" if r.ok else ("[red]missing[/]" if r.needed else "[dim]absent[/]")
            )
            role = "needed" if r.needed else ("optional" if r.optional else "")
            table.add_row(status, r.name, role, escape(r.detail))
        out = console()
        out.print(table)
        for r in rows:
            if not r.ok and r.needed:
                out.print(f"[bold]fix {escape(r.name)}:[/] {escape(r.fix or '')}")
        for r in rows:
            if not r.ok and r.optional:
                out.print(f"[bold]optional, {escape(r.name)}:[/] {escape(r.fix or '')}")
        out.print(
            f"[green]ready for provider {provider}[/]"
            if ready
            else f"[red]not ready for provider {provider}[/]"
        )
    if not ready:
        raise typer.Exit(int(ExitCode.SETUP))
