"""What a student may change in the workloads RBAC lets them write: a ValidatingAdmissionPolicy.

RBAC grants whole objects: a student who may patch a Deployment (``kubectl set image`` in
the Flagger lesson) or a Rollout (``kubectl argo rollouts set image``) could also give its
pods ``privileged``, a ``hostPath`` volume, ``hostNetwork``, another ServiceAccount or a
command of their own. The policy below, bound to the class's namespaces and to the
students' ServiceAccounts only, lets an update through only when

- the pod template is the same as before except for the image of the lesson's app
  containers, which must be one of the lesson's images in the class registry
  (``<registry>/kubelab/<image>:<tag>``), and the ``kubectl.kubernetes.io/restartedAt``
  annotation ``kubectl rollout restart`` sets;
- ``spec.replicas`` stays within ``MAX_REPLICAS``.

Everything else of the object (``paused``, a Rollout's strategy, status through its
subresource) is left to RBAC. The expressions avoid nested loops over containers (each
check maps or filters one list, then compares lists), so their static cost stays linear.

ValidatingAdmissionPolicy is ``admissionregistration.k8s.io/v1`` from Kubernetes 1.30; on
an older server ``class create`` says that Deployment changes are bounded by the quota only.
The fields compared are those of Kubernetes 1.30's PodSpec and Container, all of which the
Rollout CRD also has (its template is typed), so one set of expressions compiles for both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: The most replicas a student may ask of one Deployment or Rollout.
MAX_REPLICAS = 5
#: The first Kubernetes minor with admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy.
MIN_MINOR = 30
#: The annotation ``kubectl rollout restart`` (and the Argo plugin's restart) sets.
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"

#: The kinds the policy guards: (API group, resource).
GUARDED = (("apps", "deployments"), ("argoproj.io", "rollouts"))

#: PodSpec fields (Kubernetes 1.30) that must not change; ``containers`` is compared apart.
POD_FIELDS = (
    "activeDeadlineSeconds",
    "affinity",
    "automountServiceAccountToken",
    "dnsConfig",
    "dnsPolicy",
    "enableServiceLinks",
    "ephemeralContainers",
    "hostAliases",
    "hostIPC",
    "hostNetwork",
    "hostPID",
    "hostUsers",
    "hostname",
    "imagePullSecrets",
    "initContainers",
    "nodeName",
    "nodeSelector",
    "os",
    "overhead",
    "preemptionPolicy",
    "priority",
    "priorityClassName",
    "readinessGates",
    "resourceClaims",
    "restartPolicy",
    "runtimeClassName",
    "schedulerName",
    "schedulingGates",
    "securityContext",
    "serviceAccount",
    "serviceAccountName",
    "setHostnameAsFQDN",
    "shareProcessNamespace",
    "subdomain",
    "terminationGracePeriodSeconds",
    "tolerations",
    "topologySpreadConstraints",
    "volumes",
)
#: Container fields (Kubernetes 1.30) that must not change; ``image`` has its own rule.
CONTAINER_FIELDS = (
    "args",
    "command",
    "env",
    "envFrom",
    "imagePullPolicy",
    "lifecycle",
    "livenessProbe",
    "ports",
    "readinessProbe",
    "resizePolicy",
    "resources",
    "restartPolicy",
    "securityContext",
    "startupProbe",
    "stdin",
    "stdinOnce",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "tty",
    "volumeDevices",
    "volumeMounts",
    "workingDir",
)

_NEW = "object.spec.template"
_OLD = "oldObject.spec.template"


def _cel_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _same_field(new: str, old: str, name: str) -> str:
    return (
        f"has({new}.{name}) == has({old}.{name}) && "
        f"(!has({new}.{name}) || {new}.{name} == {old}.{name})"
    )


def _same_in_containers(name: str) -> str:
    new, old = f"{_NEW}.spec.containers", f"{_OLD}.spec.containers"
    return (
        f"{new}.map(c, has(c.{name})) == {old}.map(c, has(c.{name})) && "
        f"{new}.filter(c, has(c.{name})).map(c, c.{name}) == "
        f"{old}.filter(c, has(c.{name})).map(c, c.{name})"
    )


def _same_map_except(new: str, old: str, allowed: str | None = None) -> str:
    """Two string maps (labels, annotations) equal, except for the key ``allowed``."""
    skip = f"k == {_cel_string(allowed)} || " if allowed else ""
    new_map = f"(has({new}) ? {new} : {{}})"
    old_map = f"(has({old}) ? {old} : {{}})"
    return (
        f"{new_map}.all(k, {skip}(k in {old_map} && {new_map}[k] == {old_map}[k])) && "
        f"{old_map}.all(k, {skip}k in {new_map})"
    )


def app_containers(objects: Iterable[Mapping[str, Any]], registry: str) -> list[str]:
    """Names of the containers, in the lesson's Deployments and Rollouts, that run one of
    the lesson's images from ``registry``: the only ones whose image a student may set."""
    names = set()
    for obj in objects:
        if obj.get("kind") not in ("Deployment", "Rollout"):
            continue
        spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        for container in spec.get("containers") or []:
            if str(container.get("image", "")).startswith(registry.rstrip("/") + "/"):
                names.add(str(container.get("name")))
    return sorted(names)


def validations(image_prefixes: Iterable[str], containers: Iterable[str]) -> list[dict[str, str]]:
    """The policy's expressions, each with the message a refused student reads."""
    prefixes = sorted(set(image_prefixes))
    names = sorted(set(containers))
    allowed_image = " || ".join(f"c.image.startsWith({_cel_string(p)})" for p in prefixes)
    is_app = " || ".join(f"c.name == {_cel_string(n)}" for n in names) or "false"
    fixed = [_same_field(f"{_NEW}.spec", f"{_OLD}.spec", name) for name in POD_FIELDS]
    fixed += [_same_in_containers(name) for name in CONTAINER_FIELDS]
    return [
        {
            "expression": f"!has(object.spec.replicas) || object.spec.replicas <= {MAX_REPLICAS}",
            "message": f"students may run at most {MAX_REPLICAS} replicas",
            "reason": "Forbidden",
        },
        {
            "expression": (
                f"{_NEW}.spec.containers.map(c, c.name) == {_OLD}.spec.containers.map(c, c.name)"
                f" && {_NEW}.spec.containers.filter(c, !({is_app})).map(c, c.image) == "
                f"{_OLD}.spec.containers.filter(c, !({is_app})).map(c, c.image)"
                + (
                    f" && {_NEW}.spec.containers.filter(c, {is_app}).all(c, {allowed_image})"
                    if prefixes and names
                    else ""
                )
            ),
            "message": "students may only set the app container's image, to one of the "
            f"lesson's images ({', '.join(p + '<tag>' for p in prefixes) or 'none'})",
            "reason": "Forbidden",
        },
        {
            "expression": " && ".join(fixed),
            "message": "students may change only the app container's image: the rest of the "
            "pod template (security settings, volumes, commands, env) stays as the lesson "
            "deployed it",
            "reason": "Forbidden",
        },
        {
            "expression": (
                _same_map_except(f"{_NEW}.metadata.labels", f"{_OLD}.metadata.labels")
                + " && "
                + _same_map_except(
                    f"{_NEW}.metadata.annotations", f"{_OLD}.metadata.annotations", RESTARTED_AT
                )
            ),
            "message": "students may not change the pod template's labels or annotations "
            f"(only {RESTARTED_AT}, which kubectl rollout restart sets)",
            "reason": "Forbidden",
        },
    ]


def policy_name(lesson_id: str) -> str:
    return f"kubelab-students-{lesson_id}"


def workload_policy(
    lesson_id: str,
    *,
    class_label: str,
    labels: Mapping[str, str],
    image_prefixes: Iterable[str],
    containers: Iterable[str],
    identity: str,
) -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy and its binding for ``lesson_id``'s class: updates of
    Deployments and Rollouts by a student's ServiceAccount (``identity``) in a namespace
    labelled ``class_label=lesson_id``."""
    name = policy_name(lesson_id)
    meta = {"name": name, "labels": dict(labels)}
    student = (
        f"request.userInfo.username == 'system:serviceaccount:' + request.namespace + "
        f"{_cel_string(':' + identity)}"
    )
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": meta,
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [group],
                            "apiVersions": ["*"],
                            "operations": ["UPDATE"],
                            "resources": [resource],
                        }
                        for group, resource in GUARDED
                    ]
                },
                "matchConditions": [{"name": "a-student", "expression": student}],
                "validations": validations(image_prefixes, containers),
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": dict(meta, labels=dict(labels)),
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {class_label: lesson_id}}},
            },
        },
    ]


def remove(kube: Any, lesson_id: str) -> list[str]:
    """Delete ``lesson_id``'s class policy and binding, where the server has the API."""
    import contextlib

    from kubelab.cluster.kube import KindNotServed

    done: list[str] = []
    if not supported(kube.version()):
        return done
    name = policy_name(lesson_id)
    for kind in ("ValidatingAdmissionPolicyBinding", "ValidatingAdmissionPolicy"):
        with contextlib.suppress(KindNotServed):  # a server without the API: nothing to delete
            if kube.delete("admissionregistration.k8s.io/v1", kind, name):
                done.append(f"deleted {kind} {name}")
    return done


def supported(git_version: str) -> bool:
    """Whether a server of ``git_version`` (``v1.30.2``, ``v1.31.1-gke.100``) has the v1 API."""
    parts = git_version.lstrip("v").split(".")
    try:
        major, minor = int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()))
    except (IndexError, ValueError):
        return False
    return (major, minor) >= (1, MIN_MINOR)
