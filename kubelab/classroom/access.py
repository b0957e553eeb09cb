"""What each student of a class gets: a namespace, an identity limited to it, a kubeconfig.

Per student, in ``<lesson namespace>-<student id>``: the Namespace (labelled with the class
and the student, sidecar injection on when the lesson wants it, Pod Security ``baseline``
in warn and audit mode), a ServiceAccount ``student``, a Role ``student`` and a RoleBinding
binding the two, a ResourceQuota and LimitRange bounding what the namespace holds
(``QUOTA_HARD``), and an Istio AuthorizationPolicy and a NetworkPolicy that let in only
the namespace itself and the mesh's own namespaces (ingress gateway, Flagger's load tester,
the metrics scraper): one student's pods cannot call another student's services. The Role
is namespaced, so it grants nothing outside the student's namespace; it never names
Secrets, and it allows writes only on what the lesson's exercises change
(:func:`student_rules`). Where that includes Deployments or Rollouts,
:mod:`kubelab.classroom.policy` bounds what may change in them.

The kubeconfig carries a short-lived token from the TokenRequest API (no Secret-based
token that lives forever); ``kubelab class kubeconfigs`` issues fresh ones.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubelab.classroom.roster import Student
from kubelab.cluster.kube import (
    CLASS_LABEL,
    KUBECONFIG_EXTENSION,
    LESSON_LABEL,
    MANAGED_BY_LABEL,
    STUDENT_LABEL,
)

IDENTITY = "student"
READ = ["get", "list", "watch"]
WRITE = ["get", "list", "watch", "patch", "update"]

# What every student may read in their namespace, whatever the lesson.
BASE_READ: dict[str, list[str]] = {
    "": [
        "pods",
        "pods/log",
        "services",
        "endpoints",
        "events",
        "configmaps",
        "persistentvolumeclaims",
    ],
    "apps": ["deployments", "replicasets"],
    "batch": ["jobs"],
    "events.k8s.io": ["events"],
}
# Per component: what its exercises read, and what they change.
COMPONENT_READ: dict[str, dict[str, list[str]]] = {
    "istio": {
        "networking.istio.io": ["virtualservices", "destinationrules", "gateways"],
        "telemetry.istio.io": ["telemetries"],
    },
    "flagger": {"flagger.app": ["canaries", "metrictemplates", "alertproviders"]},
    "argo-rollouts": {
        "argoproj.io": ["rollouts", "analysisruns", "analysistemplates", "experiments"]
    },
}
COMPONENT_WRITE: dict[str, dict[str, list[str]]] = {
    "istio": {"networking.istio.io": ["virtualservices", "destinationrules"]},
    # A canary starts with `kubectl set image deployment/...` (the policy bounds it).
    "flagger": {"flagger.app": ["canaries"], "apps": ["deployments"]},
    # The plugin's promote/abort/retry patch the status subresource.
    "argo-rollouts": {"argoproj.io": ["rollouts", "rollouts/status"]},
}
# Never granted, whatever a lesson renders.
FORBIDDEN = {("", "secrets"), ("", "serviceaccounts/token")}

# What one student's namespace may hold: room for the lessons' apps (two or three
# Deployments, their canaries or rollout copies, the tester, each with the mesh's
# sidecar), not for `replicas: 1000`. Requests only, not limits: Istio's sidecar alone
# asks for a 2-CPU limit, which a limits quota would have to allow many times over.
QUOTA_HARD = {
    "pods": "30",
    "requests.cpu": "4",
    "requests.memory": "8Gi",
    "services": "10",
    "persistentvolumeclaims": "0",
    "services.loadbalancers": "0",
    "services.nodeports": "0",
}
# Containers that say nothing get these requests (a requests quota refuses pods without
# them); no container may ask for more than the max.
CONTAINER_DEFAULT_REQUEST = {"cpu": "50m", "memory": "64Mi"}
CONTAINER_DEFAULT_LIMIT = {"cpu": "1", "memory": "512Mi"}
CONTAINER_MAX = {"cpu": "2", "memory": "2Gi"}


def plural(kind: str) -> str:
    """The resource name of ``kind`` as Kubernetes forms it (Canary -> canaries)."""
    lower = kind.lower()
    if lower == "endpoints":
        return lower
    if lower.endswith("y") and lower[-2:-1] not in ("a", "e", "i", "o", "u"):
        return lower[:-1] + "ies"
    if lower.endswith(("s", "x", "ch", "sh")):
        return lower + "es"
    return lower + "s"


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def student_rules(
    components: Iterable[str], rendered: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The Role rules: read what the lesson shows, write only what its exercises change.

    Deployments are written only in lessons whose exercises change them (Flagger's: ``kubectl
    set image``, ``rollout restart``); pods may be deleted and exec'ed into (the exercises
    send traffic from the in-mesh tester pod)."""
    read: dict[str, set[str]] = {g: set(r) for g, r in BASE_READ.items()}
    write: dict[str, set[str]] = {}
    components = set(components)
    for component, groups in COMPONENT_READ.items():
        if component in components:
            for group, names in groups.items():
                read.setdefault(group, set()).update(names)
    for component, groups in COMPONENT_WRITE.items():
        if component in components:
            for group, names in groups.items():
                write.setdefault(group, set()).update(names)
    for obj in rendered:
        group = _group(str(obj.get("apiVersion", "")))
        if group.startswith("rbac.authorization.k8s.io"):
            continue
        read.setdefault(group, set()).add(plural(str(obj.get("kind", ""))))
    rules: list[dict[str, Any]] = []
    for group in sorted(read):
        names = sorted(
            n for n in read[group] - write.get(group, set()) if (group, n) not in FORBIDDEN
        )
        if names:
            rules.append({"apiGroups": [group], "resources": names, "verbs": list(READ)})
    for group in sorted(write):
        names = sorted(n for n in write[group] if (group, n) not in FORBIDDEN)
        if names:
            rules.append({"apiGroups": [group], "resources": names, "verbs": list(WRITE)})
    rules.append({"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]})
    rules.append({"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]})
    return rules


#: Namespaces whose pods may call a student's services: the ingress gateway, istiod,
#: Flagger and its load tester live in istio-system; VictoriaMetrics scrapes from monitoring.
TRUSTED_NAMESPACES = ("istio-system", "monitoring")
#: Pod Security level of student namespaces: ``baseline`` enforced (no privileged or
#: host-namespace pods, no hostPath or host ports, no added capabilities beyond the
#: default set). Istio's sidecars meet it because kubelab installs Istio CNI: the injected
#: init container is istio-validation, without the NET_ADMIN and NET_RAW of istio-init.
#: The lesson's own pods are checked against it when the lesson is rendered
#: (kubelab.validation.podsecurity). Students cannot create pods themselves; the pods they
#: shape (Deployments, Rollouts) are also bounded by kubelab.classroom.policy.
POD_SECURITY = {
    "pod-security.kubernetes.io/enforce": "baseline",
    "pod-security.kubernetes.io/warn": "baseline",
    "pod-security.kubernetes.io/audit": "baseline",
}


def writes(rules: Iterable[Mapping[str, Any]], group: str, resource: str) -> bool:
    """Whether ``rules`` let the student patch or update ``resource`` of ``group``."""
    return any(
        group in rule.get("apiGroups", ())
        and resource in rule.get("resources", ())
        and {"patch", "update"} & set(rule.get("verbs", ()))
        for rule in rules
    )


def isolation_objects(
    namespace: str, labels: Mapping[str, str], *, mesh: bool
) -> list[dict[str, Any]]:
    """Only the namespace itself and ``TRUSTED_NAMESPACES`` reach its pods: an Istio
    AuthorizationPolicy (by the caller's mTLS identity; a pod without a sidecar has none and
    is refused) when the namespace is in the mesh, and a NetworkPolicy (enforced where the
    cluster's CNI supports it) in every case."""
    allowed = [namespace, *TRUSTED_NAMESPACES]

    def meta() -> dict[str, Any]:
        return {"name": IDENTITY, "namespace": namespace, "labels": dict(labels)}

    objects: list[dict[str, Any]] = []
    if mesh:
        objects.append(
            {
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": meta(),
                "spec": {
                    "action": "ALLOW",
                    "rules": [{"from": [{"source": {"namespaces": allowed}}]}],
                },
            }
        )
    objects.append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta(),
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchExpressions": [
                                        {
                                            # Set by the API server on every namespace (1.21+).
                                            "key": "kubernetes.io/metadata.name",
                                            "operator": "In",
                                            "values": allowed,
                                        }
                                    ]
                                }
                            }
                        ]
                    }
                ],
            },
        }
    )
    return objects


def class_labels(lesson_id: str, student: Student | None = None) -> dict[str, str]:
    labels = {MANAGED_BY_LABEL: "kubelab", LESSON_LABEL: lesson_id, CLASS_LABEL: lesson_id}
    if student is not None:
        labels[STUDENT_LABEL] = student.id
    return labels


def access_objects(
    lesson_id: str,
    student: Student,
    namespace: str,
    rules: list[dict[str, Any]],
    *,
    istio_injection: bool = True,
) -> list[dict[str, Any]]:
    """Namespace, ServiceAccount, Role, RoleBinding, ResourceQuota, LimitRange,
    AuthorizationPolicy (in the mesh) and NetworkPolicy of one student."""
    labels = class_labels(lesson_id, student)
    ns_labels = {**labels, **POD_SECURITY}
    if istio_injection:
        ns_labels["istio-injection"] = "enabled"

    def meta(name: str) -> dict[str, Any]:
        return {"name": name, "namespace": namespace, "labels": dict(labels)}

    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": ns_labels},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(IDENTITY)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(IDENTITY),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(IDENTITY),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": IDENTITY,
            },
            "subjects": [{"kind": "ServiceAccount", "name": IDENTITY, "namespace": namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": meta(IDENTITY),
            "spec": {"hard": dict(QUOTA_HARD)},
        },
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": meta(IDENTITY),
            "spec": {
                "limits": [
                    {
                        "type": "Container",
                        "defaultRequest": dict(CONTAINER_DEFAULT_REQUEST),
                        "default": dict(CONTAINER_DEFAULT_LIMIT),
                        "max": dict(CONTAINER_MAX),
                    }
                ]
            },
        },
        *isolation_objects(namespace, labels, mesh=istio_injection),
    ]


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires: dt.datetime

    @property
    def expires_text(self) -> str:
        return self.expires.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def student_kubeconfig(
    admin: Mapping[str, Any],
    lesson_id: str,
    student: Student,
    namespace: str,
    token: IssuedToken,
    *,
    context: str | None = None,
    folder: Path | None = None,
) -> dict[str, Any]:
    """A kubeconfig for ``student``: the cluster of the admin kubeconfig's ``context``
    (default: its current one) with its CA inlined (a ``certificate-authority`` file is
    read, relative to ``folder``), the student's token, their namespace as the default, and
    when the token expires. Nothing of the admin's own credentials is copied."""
    current = context or admin.get("current-context")
    contexts = {c["name"]: c["context"] for c in admin.get("contexts") or []}
    clusters = {c["name"]: c["cluster"] for c in admin.get("clusters") or []}
    cluster_name = (contexts.get(current) or {}).get("cluster") or next(iter(clusters), None)
    if cluster_name is None or cluster_name not in clusters:
        raise ValueError("the admin kubeconfig names no cluster")
    source = clusters[cluster_name]
    cluster = {
        k: v
        for k, v in source.items()
        if k
        in (
            "server",
            "certificate-authority-data",
            "tls-server-name",
            "proxy-url",
            "insecure-skip-tls-verify",
        )
    }
    if source.get("certificate-authority") and "certificate-authority-data" not in cluster:
        ca = Path(str(source["certificate-authority"])).expanduser()
        if not ca.is_absolute() and folder is not None:
            ca = folder / ca
        cluster["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    name = f"{lesson_id}-{student.id}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token.token}}],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}
        ],
        "current-context": name,
        "extensions": [
            {
                "name": KUBECONFIG_EXTENSION,
                "extension": {
                    "lesson": lesson_id,
                    "student": student.id,
                    "namespace": namespace,
                    "expires": token.expires_text,
                },
            }
        ],
    }
