"""Checks on the Istio mesh's configuration: sidecar-injected, virtualservice-weights."""

from __future__ import annotations

from typing import Any

from kubelab.checks import types
from kubelab.checks.core import _containers
from kubelab.checks.registry import CheckContext, implements
from kubelab.checks.result import CheckResult, Status
from kubelab.cluster.kube import AccessDenied
from kubelab.i18n import _

ISTIO_API = "networking.istio.io/v1"


@implements(types.SidecarInjected)
def sidecar_injected(spec: types.SidecarInjected, ctx: CheckContext) -> CheckResult:
    pods = ctx.kube.list("v1", "Pod", spec.namespace, spec.selector)
    labels: dict[str, str] | None
    try:
        ns = ctx.kube.get("v1", "Namespace", spec.namespace) or {}
        labels = (ns.get("metadata") or {}).get("labels") or {}
    except AccessDenied:
        # A class student may not read Namespaces (cluster-scoped; their Role cannot grant
        # it): their pods' containers still tell whether the sidecar is there.
        labels = None
    without = [p["metadata"]["name"] for p in pods if spec.container not in _containers(p)]
    problems = []
    injection = (labels or {}).get("istio-injection")
    revision = (labels or {}).get("istio.io/rev")
    if labels is not None and injection != "enabled" and not revision:
        if injection:
            problems.append(
                _(
                    "namespace {namespace} does not have the label istio-injection=enabled "
                    "(it is {value!r})"
                ).format(namespace=spec.namespace, value=injection)
            )
        else:
            problems.append(
                _("namespace {namespace} does not have the label istio-injection=enabled").format(
                    namespace=spec.namespace
                )
            )
    if not pods:
        problems.append(
            _("no pods {selector} in {namespace}").format(
                selector=spec.selector, namespace=spec.namespace
            )
        )
    if without:
        problems.append(
            _("pods without the {container} sidecar: {pods}").format(
                container=spec.container, pods=", ".join(without)
            )
        )
    evidence = {
        "namespace_labels": labels
        if labels is not None
        else _("not readable with these credentials"),
        "pods": [p["metadata"]["name"] for p in pods],
        "without_sidecar": without,
    }
    return CheckResult.from_problems(
        problems,
        _("all {count} pods {selector} run {container}").format(
            count=len(pods), selector=spec.selector, container=spec.container
        ),
        hint=_(
            "kubectl label namespace {namespace} istio-injection=enabled --overwrite, "
            "then kubectl rollout restart deployment -n {namespace}"
        ).format(namespace=spec.namespace),
        evidence=evidence,
    )


# -- Istio routing -------------------------------------------------------------------------


def _short_host(host: str, namespace: str) -> str:
    for suffix in (f".{namespace}.svc.cluster.local", f".{namespace}.svc", f".{namespace}"):
        if host.endswith(suffix):
            return host[: -len(suffix)]
    return host


def route_weights(vs: dict[str, Any]) -> tuple[dict[str, int], list[str]]:
    """Weight per subset of the VirtualService's default HTTP route, and notes about it.

    The default route is the first without ``match`` (Envoy takes the first that
    matches); destinations are summed per subset, in any order.
    """
    notes: list[str] = []
    http = (vs.get("spec") or {}).get("http") or []
    if not http:
        return {}, [_("it has no http routes")]
    default = next((r for r in http if not r.get("match")), http[0])
    route = default.get("route") or []
    weights: dict[str, int] = {}
    for dest in route:
        subset = (dest.get("destination") or {}).get("subset") or "(no subset)"
        # Istio: a lone destination without weight gets everything.
        weight = dest.get("weight", 100 if len(route) == 1 else 0)
        weights[subset] = weights.get(subset, 0) + int(weight or 0)
    total = sum(weights.values())
    if route and total != 100:
        notes.append(_("the weights add up to {total}, not 100").format(total=total))
    return weights, notes


@implements(types.VirtualServiceWeights)
def virtualservice_weights(spec: types.VirtualServiceWeights, ctx: CheckContext) -> CheckResult:
    vs = ctx.kube.get(ISTIO_API, "VirtualService", spec.name, spec.namespace)
    where = f"VirtualService {spec.namespace}/{spec.name}"
    if vs is None:
        return CheckResult(
            Status.FAILED,
            _("{where} does not exist").format(where=where),
            hint=_(
                "kubectl get virtualservice -n {namespace}; recreate it with the "
                "lesson's solve script (kubelab solve ...) or your own manifest"
            ).format(namespace=spec.namespace),
            evidence={"expected": spec.expect},
        )
    weights, problems = route_weights(vs)
    problems = [f"{where}: {p}" for p in problems]
    for subset in sorted(set(spec.expect) | set(weights)):
        got, want = weights.get(subset, 0), spec.expect.get(subset, 0)
        if got != want:
            problems.append(
                _("subset {subset} gets {got}%, expected {want}%").format(
                    subset=subset, got=got, want=want
                )
            )
    dr_name = spec.destination_rule or spec.name
    dr = ctx.kube.get(ISTIO_API, "DestinationRule", dr_name, spec.namespace)
    defined = [s.get("name") for s in ((dr or {}).get("spec") or {}).get("subsets") or []]
    used = [s for s, w in weights.items() if s != "(no subset)"]
    if dr is None:
        problems.append(
            _(
                "DestinationRule {namespace}/{name} does not exist, so subsets {subsets} are "
                "undefined"
            ).format(namespace=spec.namespace, name=dr_name, subsets=", ".join(used) or _("(none)"))
        )
    else:
        missing = [s for s in used if s not in defined]
        defined_text = ", ".join(map(str, defined))
        if missing and defined_text:
            problems.append(
                _(
                    "DestinationRule {namespace}/{name} does not define subset {missing} "
                    "(it defines {defined})"
                ).format(
                    namespace=spec.namespace,
                    name=dr_name,
                    missing=", ".join(missing),
                    defined=defined_text,
                )
            )
        elif missing:
            problems.append(
                _(
                    "DestinationRule {namespace}/{name} does not define subset {missing} "
                    "(it defines none)"
                ).format(namespace=spec.namespace, name=dr_name, missing=", ".join(missing))
            )
    expected_text = ", ".join(f"{k} {v}%" for k, v in spec.expect.items())
    return CheckResult.from_problems(
        problems,
        _("{where} sends {weights}").format(where=where, weights=expected_text),
        hint=f"kubectl get virtualservice {spec.name} -n {spec.namespace} -o yaml",
        evidence={"weights": weights, "expected": spec.expect, "subsets_defined": defined},
    )
