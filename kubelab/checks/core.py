"""Checks on Kubernetes objects and pods: resource-exists, field-equals, pods-ready."""

from __future__ import annotations

from typing import Any

from kubelab.checks import types
from kubelab.checks.objects import object_ref
from kubelab.checks.registry import CheckContext, implements
from kubelab.checks.result import CheckResult, Status
from kubelab.i18n import _
from kubelab.k8s import jsonpath, selectors

# -- objects -------------------------------------------------------------------------------


@implements(types.ResourceExists)
def resource_exists(spec: types.ResourceExists, ctx: CheckContext) -> CheckResult:
    obj = ctx.kube.get(spec.api_version, spec.kind, spec.name, spec.namespace)
    where = object_ref(spec.kind, spec.name, spec.namespace)
    if obj is None:
        return CheckResult(Status.FAILED, _("{where} does not exist").format(where=where))
    return CheckResult(
        Status.PASSED,
        _("{where} exists").format(where=where),
        evidence={"uid": obj["metadata"]["uid"]},
    )


@implements(types.FieldEquals)
def field_equals(spec: types.FieldEquals, ctx: CheckContext) -> CheckResult:
    obj = ctx.kube.get(spec.api_version, spec.kind, spec.name, spec.namespace)
    where = object_ref(spec.kind, spec.name, spec.namespace)
    if obj is None:
        return CheckResult(Status.FAILED, _("{where} does not exist").format(where=where))
    value = jsonpath.lookup(obj, spec.jsonpath)
    if value is jsonpath.MISSING:
        return CheckResult(
            Status.FAILED,
            _("{where} has no field {path} (expected {expected!r})").format(
                where=where, path=spec.jsonpath, expected=spec.equals
            ),
            evidence={"path": spec.jsonpath},
        )
    if value != spec.equals and str(value) != str(spec.equals):
        return CheckResult(
            Status.FAILED,
            _("{where}: {path} is {value!r}, expected {expected!r}").format(
                where=where, path=spec.jsonpath, value=value, expected=spec.equals
            ),
            evidence={"path": spec.jsonpath, "value": value},
        )
    return CheckResult(
        Status.PASSED,
        _("{where}: {path} is {value!r}").format(where=where, path=spec.jsonpath, value=value),
        evidence={"path": spec.jsonpath, "value": value},
    )


# -- pods ----------------------------------------------------------------------------------


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _containers(pod: dict[str, Any]) -> list[str]:
    spec = pod.get("spec") or {}
    names = [c.get("name", "") for c in spec.get("containers") or []]
    # Native sidecars (newer Istio) are init containers that keep running.
    names += [
        c.get("name", "")
        for c in spec.get("initContainers") or []
        if c.get("restartPolicy") == "Always"
    ]
    return names


@implements(types.PodsReady)
def pods_ready(spec: types.PodsReady, ctx: CheckContext) -> CheckResult:
    pods = ctx.kube.list("v1", "Pod", spec.namespace, spec.selector)
    pods = [p for p in pods if selectors.matches(spec.selector, p["metadata"].get("labels"))]
    ready = [p["metadata"]["name"] for p in pods if pod_ready(p)]
    not_ready = [p["metadata"]["name"] for p in pods if not pod_ready(p)]
    evidence = {"ready": ready, "not_ready": not_ready, "min_ready": spec.min_ready}
    selector, namespace = spec.selector, spec.namespace
    if len(ready) >= spec.min_ready:
        return CheckResult(
            Status.PASSED,
            _("{count} pods {selector} in {namespace} ready").format(
                count=len(ready), selector=selector, namespace=namespace
            ),
            evidence=evidence,
        )
    if not pods:
        return CheckResult(
            Status.FAILED,
            _("no pods {selector} in {namespace}").format(selector=selector, namespace=namespace),
            hint=f"kubectl get pods -n {spec.namespace} --show-labels",
            evidence=evidence,
        )
    if not not_ready:  # all there are ready, but too few exist (a Deployment deleted?)
        return CheckResult(
            Status.FAILED,
            _("only {count} of {wanted} pods {selector} in {namespace} exist: {pods}").format(
                count=len(ready),
                wanted=spec.min_ready,
                selector=selector,
                namespace=namespace,
                pods=", ".join(ready),
            ),
            hint=f"kubectl get deployments,pods -n {spec.namespace} --show-labels",
            evidence=evidence,
        )
    return CheckResult(
        Status.PENDING,
        _("{count} of {wanted} pods {selector} in {namespace} ready; not ready yet: {pods}").format(
            count=len(ready),
            wanted=spec.min_ready,
            selector=selector,
            namespace=namespace,
            pods=", ".join(not_ready),
        ),
        hint=f"kubectl get pods -n {spec.namespace}; kubectl describe pod {not_ready[0]} "
        f"-n {spec.namespace}",
        evidence=evidence,
    )
