"""DAG installer budget: wall time within 1.15x of the longest dependency chain.

Run by hand: ``python benchmarks/bench_dag_installer.py [--scale 0.3]``. Every release of
the component catalog is "installed" by a fake helm that sleeps a set time per release
(proportional to what the real charts take on a small cluster); the installer runs them
with their real dependencies. Serial installation would take the sum of the times; the
budget is 1.15x the longest chain of dependent releases.
"""

from __future__ import annotations

import argparse
import sys
import time

# Seconds a release takes to become ready on a small cluster (rough real-world figures).
TYPICAL = {
    "istio-base": 4,
    "istiod": 25,
    "istio-ingressgateway": 15,
    "victoria-metrics": 20,
    "kiali": 25,
    "jaeger": 20,
    "gitea": 45,
    "cert-manager": 30,
    "flagger": 15,
    "flagger-loadtester": 10,
    "argo-rollouts": 20,
}


def main() -> int:
    from kubelab.components.catalog import CATALOG
    from kubelab.components.installer import Node, run_dag

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=0.1, help="seconds per typical second")
    args = parser.parse_args()
    releases = [r for c in CATALOG.values() for r in c.releases]
    duration = {r.name: TYPICAL.get(r.name, 15) * args.scale for r in releases}
    deps = {r.name: tuple(r.depends_on) for r in releases}

    def fake_helm(name: str):
        return lambda: time.sleep(duration[name]) or "installed"

    chain: dict[str, float] = {}

    def longest(name: str) -> float:
        if name not in chain:
            chain[name] = duration[name] + max((longest(d) for d in deps[name]), default=0.0)
        return chain[name]

    critical = max(longest(n) for n in duration)
    serial = sum(duration.values())
    started = time.monotonic()
    # The installer's own default parallelism, as `kubelab up` uses it.
    run_dag([Node(n, deps[n], fake_helm(n)) for n in duration])
    wall = time.monotonic() - started
    ratio = wall / critical
    print(
        f"{len(duration)} releases: serial {serial:.2f} s, longest chain {critical:.2f} s, "
        f"DAG wall {wall:.2f} s = {ratio:.3f}x the chain (budget 1.15x)"
    )
    return 0 if ratio <= 1.15 else 1


if __name__ == "__main__":
    sys.exit(main())
