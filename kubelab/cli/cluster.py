"""``kubelab cluster create|delete|status|kubeconfig|leftovers``: clusters in the cloud.

Before creating, the plan and its hourly and monthly cost are printed and confirmed
(unless ``--yes``). ``delete`` removes everything the provider labelled for the cluster,
including load balancers and volumes made from inside it; ``leftovers`` lists what still
exists and costs money. No token, key or kubeconfig content is ever printed.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from kubelab.cli.common import console, options, print_json

app = typer.Typer(
    name="cluster",
    help="Create and delete lesson clusters on Hetzner Cloud or GKE.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

CLOUD_PROVIDERS = ("hetzner", "gke")
ProviderOption = Annotated[str, typer.Option("--provider", "-p", help="hetzner or gke.")]
NameOption = Annotated[str, typer.Option("--name", help="Cluster name.")]


def _cloud(provider: str) -> Any:
    """The provider's cluster manager (imported on demand: each pulls its cloud client)."""
    from kubelab.errors import UsageError

    if provider == "hetzner":
        from kubelab.providers.hetzner import HetznerCluster

        return HetznerCluster()
    if provider == "gke":
        from kubelab.providers.gke import GkeCluster

        return GkeCluster()
    raise UsageError(f"unknown cloud provider {provider!r}", hint="Use hetzner or gke.")


def _plan_lines(provider: str, plan: Any) -> list[str]:
    if provider == "hetzner":
        from kubelab.providers.hetzner import iter_plan_lines

        return list(iter_plan_lines(plan))
    return list(plan.lines())


def _leftover_json(item: Any) -> dict[str, Any]:
    if hasattr(item, "monthly_cost"):
        return {"kind": item.kind, "name": item.name, "monthly_cost": str(item.monthly_cost)}
    hourly = getattr(item, "hourly", None)
    return {"kind": "cluster", "name": item.name, "hourly_cost": str(hourly)}


def _leftover_line(item: Any) -> str:
    if hasattr(item, "line"):
        return str(item.line())
    return f"{item.kind:<14} {item.name:<30} {item.monthly_cost}/month"


def _note(provider: str) -> str | None:
    if provider == "gke":
        from kubelab.providers.gke import LEFTOVER_NOTE

        return LEFTOVER_NOTE
    return None


# More nodes than a course needs is a typo (and a bill): `--nodes 10000` was priced.
MAX_NODES = 50


def _defaults(provider: str) -> dict[str, Any]:
    if provider == "hetzner":
        from kubelab.providers import hetzner

        return {
            "name": hetzner.DEFAULT_NAME,
            "nodes": hetzner.DEFAULT_WORKERS,
            "size": hetzner.DEFAULT_SERVER_TYPE,
            "location": hetzner.DEFAULT_LOCATION,
        }
    from kubelab.providers import gke

    return {
        "name": gke.DEFAULT_NAME,
        "nodes": gke.DEFAULT_NODES,
        "size": gke.DEFAULT_MACHINE_TYPE,
        "location": gke.DEFAULT_LOCATION,
    }


@app.command("create")
def create(
    ctx: typer.Context,
    provider: ProviderOption,
    name: Annotated[str | None, typer.Option("--name", help="Cluster name.")] = None,
    nodes: Annotated[
        int | None, typer.Option("--nodes", help="Worker nodes (Hetzner 0-50, GKE 1-50).")
    ] = None,
    size: Annotated[str | None, typer.Option("--size", help="Server/machine type.")] = None,
    location: Annotated[str | None, typer.Option("--location", help="Location/region.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    allow_from: Annotated[
        str | None,
        typer.Option(
            "--allow-from",
            help="Hetzner: the IP or CIDR allowed to SSH and the Kubernetes API "
            "(default: your public IP, detected).",
        ),
    ] = None,
) -> None:
    """Print what will be created and its cost, confirm, then create the cluster."""
    import sys

    from kubelab.errors import UsageError

    opts = options(ctx)
    defaults = _defaults(provider)
    name = name or defaults["name"]
    nodes = defaults["nodes"] if nodes is None else nodes
    fewest = 0 if provider == "hetzner" else 1  # k3s's server runs pods too; GKE needs one
    if not fewest <= nodes <= MAX_NODES:
        what = "worker nodes" if provider == "hetzner" else "nodes"
        raise UsageError(
            f"--nodes {nodes}: a {provider} cluster has {fewest} to {MAX_NODES} {what}",
            hint=f"Give --nodes between {fewest} and {MAX_NODES} (one or two serve a class).",
        )
    size = size or defaults["size"]
    location = location or defaults["location"]
    cloud = _cloud(provider)
    plan = cloud.plan(name, nodes, size, location)
    out = console(stderr=opts.json)
    out.print(f"{provider} cluster {name} will be made of:")
    for line in _plan_lines(provider, plan):
        out.print(f"  {line}", markup=False)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                "creating a cluster costs money and needs a confirmation",
                hint="Run it in a terminal, or add --yes.",
            )
        typer.confirm(f"Create {provider} cluster {name}?", abort=True)
    if provider == "hetzner":
        created = cloud.create(name, nodes, size, location, allowed_ip=allow_from)
    else:
        if allow_from:
            raise UsageError("--allow-from is for Hetzner clusters only")
        created = cloud.create(name, nodes, size, location)
    kubeconfig = str(created.kubeconfig)
    if opts.json:
        print_json({"provider": provider, "name": name, "kubeconfig": kubeconfig})
        return
    console().print(f"[green]cluster {name} is ready[/]. export KUBECONFIG={kubeconfig}")
    console().print(
        f"Then: kubelab up istio-traffic-splitting --provider existing; "
        f"`kubelab cluster delete --provider {provider} --name {name}` removes it."
    )


@app.command("delete")
def delete(
    ctx: typer.Context,
    provider: ProviderOption,
    name: Annotated[str | None, typer.Option("--name", help="Cluster name.")] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="GKE: delete the cluster even when its load balancers and disks could not "
            "be released from inside it first (they stay billed: see leftovers).",
        ),
    ] = False,
) -> None:
    """Delete the cluster and everything labelled for it; then list what is left."""
    opts = options(ctx)
    cloud = _cloud(provider)
    name = name or _defaults(provider)["name"]
    removed = cloud.delete(name, force=force)
    left = cloud.leftovers(name)
    if opts.json:
        print_json({"removed": removed, "leftovers": [_leftover_json(x) for x in left]})
    else:
        out = console()
        for line in removed:
            out.print(f"[green]✓[/] {line}")
        for x in left:
            out.print(f"[red]still there:[/] {_leftover_line(x)}", markup=False)
        if not left:
            out.print("Nothing is left that kubelab made for this cluster.")
        if _note(provider):
            out.print(_note(provider), markup=False)
    if left:
        from kubelab.errors import ExitCode

        raise typer.Exit(int(ExitCode.SETUP))


@app.command("leftovers")
def leftovers(
    ctx: typer.Context,
    provider: ProviderOption,
    name: Annotated[str | None, typer.Option("--name", help="Only this cluster.")] = None,
) -> None:
    """Everything kubelab made that still exists (and may cost money); exit 1 if any."""
    opts = options(ctx)
    left = _cloud(provider).leftovers(name)
    if opts.json:
        print_json([_leftover_json(x) for x in left])
    else:
        out = console()
        for x in left:
            out.print(_leftover_line(x), markup=False)
        out.print(f"{len(left)} resource(s) left." if left else "Nothing is left.")
        if _note(provider):
            out.print(_note(provider), markup=False)
    if left:
        raise typer.Exit(1)


@app.command("status")
def status(ctx: typer.Context) -> None:
    """The clusters kubelab created (from its state), with their kubeconfig paths."""
    from kubelab.state import StateStore

    opts = options(ctx)
    clusters = [
        {
            "name": c.name,
            "provider": c.provider,
            "kubeconfig": c.kubeconfig,
            "created_at": c.created_at,
            "resources": len(c.resources),
        }
        for c in StateStore().load().clusters.values()
    ]
    if opts.json:
        print_json(clusters)
        return
    out = console()
    if not clusters:
        out.print("No cluster created by kubelab. `kubelab cluster create --provider hetzner`")
    for c in clusters:
        out.print(
            f"[bold]{c['name']}[/] on {c['provider']}: {c['resources']} resources, "
            f"kubeconfig {c['kubeconfig']}"
        )


@app.command("kubeconfig")
def kubeconfig(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option("--name", help="Cluster name.")] = None,
) -> None:
    """The path of a created cluster's kubeconfig (never its content)."""
    from kubelab.errors import UsageError
    from kubelab.state import StateStore

    clusters = StateStore().load().clusters
    if name is None and len(clusters) == 1:
        name = next(iter(clusters))
    record = clusters.get(name or "")
    if record is None or not record.kubeconfig:
        raise UsageError(
            f"no cluster {name!r} created by kubelab" if name else "no single cluster to pick",
            hint="kubelab cluster status lists them; pass --name.",
        )
    if options(ctx).json:
        print_json({"name": record.name, "kubeconfig": record.kubeconfig})
    else:
        typer.echo(record.kubeconfig)
