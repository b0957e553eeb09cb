"""The registry of check implementations, and what every check may use.

Check *types* (their parameters, validated when a lesson loads) are declared in
:mod:`kubelab.checks.types`; their *implementations* live in one module per domain and
register themselves here with :func:`implements`:

* :mod:`kubelab.checks.core`: objects and pods (resource-exists, field-equals, pods-ready);
* :mod:`kubelab.checks.mesh`: Istio (sidecar-injected, virtualservice-weights);
* :mod:`kubelab.checks.traffic`: requests through the mesh (traffic-split, http-stable);
* :mod:`kubelab.checks.metrics`: VictoriaMetrics and Jaeger (metrics-query, jaeger-traces);
* :mod:`kubelab.checks.flagger`: Flagger canaries (flagger-canary);
* :mod:`kubelab.checks.rollouts`: Argo Rollouts (rollout-status, rollout-services,
  analysisrun-result);
* :mod:`kubelab.checks.assertions`: any object against a partial object, an assertion
  tree (assert, absent; docs/assert-checks.md).

:func:`implementation` loads them, explicitly and once, the first time a check runs. Each
function reads the cluster through the :class:`CheckContext` and returns a
:class:`CheckResult`; none of them changes anything. They report every failing assertion
they find (not just the first) and tell "wrong" (failed) from "not ready yet" (pending).
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubelab.checks import types
from kubelab.checks.result import CheckResult
from kubelab.checks.sampling import Sampler
from kubelab.cluster.kube import Kube

#: The modules holding the implementations, one per domain (see the module docstring).
DOMAINS = ("core", "mesh", "traffic", "metrics", "flagger", "rollouts", "assertions")


@dataclass
class CheckContext:
    """What checks may use: the cluster, a way to send traffic, the component services."""

    kube: Kube
    sampler: Callable[[types.TrafficSplit | types.HttpStable], Sampler]
    # component name -> (namespace, service, port) of its HTTP API (metrics, traces)
    services: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    # Requests in flight at once: every sample at once up to this, so a check takes about
    # one timeout even when most requests hang (the sampler may lower it).
    concurrency: int = 500
    # Pause before re-sampling a split that looks wrong (route changes take a moment).
    settle_seconds: float = 1.5
    # The clocks a ``hold_seconds`` check samples by (tests give their own).
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    wall_clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)


Impl = Callable[[Any, CheckContext], CheckResult]
IMPLEMENTATIONS: dict[str, Impl] = {}
S = TypeVar("S", bound=types.CheckSpec)


def implements(
    spec: type[S],
) -> Callable[[Callable[[S, CheckContext], CheckResult]], Callable[[S, CheckContext], CheckResult]]:
    name = types.type_name(spec)

    def register(
        fn: Callable[[S, CheckContext], CheckResult],
    ) -> Callable[[S, CheckContext], CheckResult]:
        IMPLEMENTATIONS[name] = fn
        return fn

    return register


@functools.cache
def load() -> dict[str, Impl]:
    """Import every domain module (each registers its checks) and return the registry."""
    for domain in DOMAINS:
        importlib.import_module(f"kubelab.checks.{domain}")
    return IMPLEMENTATIONS


def implementation(check_type: str) -> Impl:
    """The function that runs checks of ``check_type``."""
    return load()[check_type]
