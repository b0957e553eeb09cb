"""``kubelab doctor``: which tools and credentials are here, and how to get the rest."""

from __future__ import annotations

from typing import Annotated

import typer

from kubelab.cli.common import console, options, print_json


def doctor(
    ctx: typer.Context,
    provider: Annotated[
        str,
        typer.Option(
            "--provider", "-p", help="Provider you will use: existing, kind, hetzner or gke."
        ),
    ] = "existing",
) -> None:
    """Check tools and credentials; exit 0 only if the chosen provider has what it needs."""
    from kubelab.errors import ExitCode, UsageError
    from kubelab.providers.requirements import PROVIDERS

    if provider not in PROVIDERS:
        raise UsageError(
            f"unknown provider {provider!r}", hint=f"Use one of: {', '.join(PROVIDERS)}."
        )
    opts = options(ctx)
    needed = {r.name for r in PROVIDERS[provider].requirements}
    every = {r.name: r for info in PROVIDERS.values() for r in info.requirements}
    rows = []
    for name, req in every.items():
        probe = req.probe()
        rows.append(
            {
                "name": name,
                "kind": req.kind,
                "ok": probe.ok,
                "detail": probe.detail,
                "needed": name in needed,
                "fix": None if probe.ok else req.fix,
            }
        )
    ready = all(r["ok"] for r in rows if r["needed"])
    if opts.json:
        print_json({"provider": provider, "ready": ready, "requirements": rows})
    else:
        from rich.markup import escape
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for column in ("", "NAME", "KIND", f"NEEDED BY {provider.upper()}", "FOUND"):
            table.add_column(column)
        for r in rows:
            mark = "[green]ok[/]" if r["ok"] else ("[red]missing[/]" if r["needed"] else "[dim]-[/]")
            table.add_row(
                mark, r["name"], r["kind"], "yes" if r["needed"] else "", escape(r["detail"])
            )
        out = console()
        out.print(table)
        for r in rows:
            if not r["ok"] and r["needed"]:
                out.print(f"[bold]fix {escape(r['name'])}:[/] {escape(r['fix'] or '')}")
        out.print(
            f"[green]ready for provider {provider}[/]"
            if ready
            else f"[red]not ready for provider {provider}[/]"
        )
    if not ready:
        raise typer.Exit(int(ExitCode.SETUP))
