"""What confines a student beyond RBAC, rendered and checked without a cluster.

The test control plane (Kubernetes 1.20) has no ValidatingAdmissionPolicy, enforces no
NetworkPolicy and runs no Istio: here the objects are schema-checked against the
Kubernetes 1.31 schemas and the Istio CRDs, and the policy's CEL expressions are evaluated
(with cel-python, a CEL implementation) against the lessons' own Deployments and Rollouts,
changed the way a student would change them. What the real authorizer answers is in
tests/realk8s/test_classroom_real.py; enforcement on a real cluster in tests/e2e.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import celpy
import pytest
from support import offline_class_tools

from kubelab.classroom import access, policy
from kubelab.classroom.roster import Student
from kubelab.classroom.service import ClassService
from kubelab.cluster.kube import CLASS_LABEL
from kubelab.lessons.loader import find_lesson
from kubelab.state import StateStore
from kubelab.validation.manifests import validate_object

REGISTRY = "gitea.lab.example.org"
ENV = celpy.Environment()


def service(lesson_id: str, tmp_path: Path) -> ClassService:
    return ClassService(
        find_lesson(lesson_id),
        StateStore(),
        offline_class_tools(tmp_path, REGISTRY, {"istio", "flagger", "argo-rollouts"}),
    )


ANA = Student("ana", "Ana", "ana@escola.example")


class Admission:
    """The policy's matchConditions and validations, evaluated as the API server would for
    an UPDATE of ``old`` into ``new`` by ``user`` in ``namespace``."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        vap = next(o for o in objects if o["kind"] == "ValidatingAdmissionPolicy")
        self.conditions = [
            ENV.program(ENV.compile(c["expression"])) for c in vap["spec"]["matchConditions"]
        ]
        self.rules = [
            (ENV.program(ENV.compile(v["expression"])), v["message"])
            for v in vap["spec"]["validations"]
        ]

    def refusals(
        self, old: dict[str, Any], new: dict[str, Any], user: str, namespace: str
    ) -> list[str]:
        activation = {
            "object": celpy.json_to_cel(new),
            "oldObject": celpy.json_to_cel(old),
            "request": celpy.json_to_cel(
                {"namespace": namespace, "userInfo": {"username": user}, "operation": "UPDATE"}
            ),
        }
        if not all(bool(c.evaluate(activation)) for c in self.conditions):
            return []
        return [
            message for program, message in self.rules if not bool(program.evaluate(activation))
        ]


def workload(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    return next(
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    )


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def _app(obj: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in _pod(obj)["containers"] if c["image"].startswith(REGISTRY))


def set_image(tag: str) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        app = _app(obj)
        app["image"] = app["image"].rsplit(":", 1)[0] + f":{tag}"

    return change


CHANGES: list[tuple[str, Callable[[dict[str, Any]], None], str | None]] = [
    ("kubectl set image to the lesson's v2", set_image("v2"), None),
    (
        "kubectl rollout restart",
        lambda o: (
            o["spec"]["template"]["metadata"]
            .setdefault("annotations", {})
            .update({policy.RESTARTED_AT: "2026-12-03T10:00:00Z"})
        ),
        None,
    ),
    ("scale to 3", lambda o: o["spec"].update(replicas=3), None),
    ("scale to 1000", lambda o: o["spec"].update(replicas=1000), "at most 5 replicas"),
    (
        "an image from elsewhere",
        lambda o: _app(o).update(image="docker.io/evil/miner:latest"),
        "only set the app container's image",
    ),
    (
        "a privileged container",
        lambda o: _app(o).update(securityContext={"privileged": True}),
        "the rest of the pod template",
    ),
    (
        "a hostPath volume",
        lambda o: _pod(o).update(volumes=[{"name": "root", "hostPath": {"path": "/"}}]),
        "the rest of the pod template",
    ),
    (
        "the node's network",
        lambda o: _pod(o).update(hostNetwork=True),
        "the rest of the pod template",
    ),
    (
        "another ServiceAccount",
        lambda o: _pod(o).update(serviceAccountName="default"),
        "the rest of the pod template",
    ),
    (
        "a command of one's own",
        lambda o: _app(o).update(command=["sh", "-c", "sleep 1d"]),
        "the rest of the pod template",
    ),
    (
        "an env var that fixes v1",
        lambda o: _app(o).setdefault("env", []).append({"name": "HANG_AFTER", "value": "0"}),
        "the rest of the pod template",
    ),
    (
        "a Secret mounted",
        lambda o: _app(o).setdefault("envFrom", []).append({"secretRef": {"name": "gitea-admin"}}),
        "the rest of the pod template",
    ),
    (
        "a second container",
        lambda o: _pod(o)["containers"].append(
            {"name": "x", "image": f"{REGISTRY}/kubelab/app-backend:v2"}
        ),
        "only set the app container's image",
    ),
    (
        "a pod label (another Service's selector)",
        lambda o: o["spec"]["template"]["metadata"]["labels"].update(app="someone-else"),
        "labels or annotations",
    ),
    (
        "an annotation that skips the sidecar",
        lambda o: (
            o["spec"]["template"]["metadata"]
            .setdefault("annotations", {})
            .update({"sidecar.istio.io/inject": "false"})
        ),
        "labels or annotations",
    ),
]


@pytest.mark.parametrize(
    ("lesson_id", "kind"), [("flagger-canary", "Deployment"), ("argo-rollouts", "Rollout")]
)
@pytest.mark.parametrize(("what", "change", "refused"), CHANGES, ids=[c[0] for c in CHANGES])
def test_the_policy_lets_a_student_change_only_the_app_image_and_replicas(
    tmp_path: Path, lesson_id: str, kind: str, what: str, change: Any, refused: str | None
) -> None:
    svc = service(lesson_id, tmp_path)
    objects = svc.workload_policy(*svc.student_parts(ANA))
    assert [o["kind"] for o in objects] == [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    _, app = svc.student_parts(ANA)
    namespace = ANA.namespace(svc.namespace)
    old = workload(app, kind)
    new = copy.deepcopy(old)
    change(new)
    assert new != old, what
    admission = Admission(objects)
    student = f"system:serviceaccount:{namespace}:{access.IDENTITY}"
    found = admission.refusals(old, new, student, namespace)
    if refused is None:
        assert found == [], (what, found)
    else:
        assert found and refused in found[0], (what, found)
    # The instructor (and the controllers) are not students: the policy does not apply.
    assert admission.refusals(old, new, "kubernetes-admin", namespace) == []
    assert (
        admission.refusals(old, new, f"system:serviceaccount:{namespace}:default", namespace) == []
    )


def test_policy_and_isolation_objects_are_valid_and_bound_to_the_class(tmp_path: Path) -> None:
    svc = service("flagger-canary", tmp_path)
    vap, binding = svc.workload_policy(*svc.student_parts(ANA))
    for obj in (vap, binding):
        assert validate_object(obj, "policy") == [], obj["kind"]
    assert (
        binding["spec"]["policyName"]
        == vap["metadata"]["name"]
        == "kubelab-students-flagger-canary"
    )
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["matchResources"]["namespaceSelector"] == {
        "matchLabels": {CLASS_LABEL: "flagger-canary"}
    }
    rules = vap["spec"]["matchConstraints"]["resourceRules"]
    assert {(r["apiGroups"][0], r["resources"][0]) for r in rules} == set(policy.GUARDED)
    assert all(r["operations"] == ["UPDATE"] for r in rules)
    # Only the lesson's images, by the class registry.
    assert f"'{REGISTRY}/kubelab/app-backend:'" in vap["spec"]["validations"][1]["expression"]

    identity, _ = svc.student_parts(ANA)
    namespace = ANA.namespace(svc.namespace)
    by_kind = {o["kind"]: o for o in identity}
    for obj in identity:
        assert validate_object(obj, "identity") == [], (
            obj["kind"],
            validate_object(obj, "identity"),
        )
    assert by_kind["AuthorizationPolicy"]["spec"] == {
        "action": "ALLOW",
        "rules": [
            {"from": [{"source": {"namespaces": [namespace, "istio-system", "monitoring"]}}]}
        ],
    }
    peers = by_kind["NetworkPolicy"]["spec"]["ingress"][0]["from"][0]["namespaceSelector"]
    assert peers["matchExpressions"][0]["values"] == [namespace, "istio-system", "monitoring"]
    labels = by_kind["Namespace"]["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "baseline", mode


def test_deployments_are_written_only_where_an_exercise_changes_them(tmp_path: Path) -> None:
    for lesson_id, deployments, guarded in [
        ("istio-traffic-splitting", False, False),
        ("flagger-canary", True, True),
        ("argo-rollouts", False, True),  # Rollouts, not Deployments
    ]:
        svc = service(lesson_id, tmp_path)
        identity, _ = svc.student_parts(ANA)
        rules = next(o for o in identity if o["kind"] == "Role")["rules"]
        assert access.writes(rules, "apps", "deployments") is deployments, lesson_id
        assert bool(svc.workload_policy(*svc.student_parts(ANA))) is guarded, lesson_id


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        ("v1.20.2", False),
        ("v1.29.9", False),
        ("v1.30.0", True),
        ("v1.31.4-gke.1000", True),
        ("v2.0.0", True),
        ("", False),
    ],
)
def test_the_policy_needs_kubernetes_1_30(version: str, supported: bool) -> None:
    assert policy.supported(version) is supported
