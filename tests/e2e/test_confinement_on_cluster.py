"""What confines a student, enforced by a real cluster: the admission policy on the pods
students shape, their Role, and the Pod Security level their namespace enforces.

Opt-in like every e2e test: ``KUBELAB_E2E_KUBECONFIG`` names a disposable cluster of
Kubernetes 1.30 or later (ValidatingAdmissionPolicy v1). Nothing of a lesson is installed:
the test applies a student's namespace, identity and policy as ``kubelab class create``
renders them for the Flagger lesson (the one whose students patch a Deployment), then
patches the Deployment with the student's own token. The objects are removed afterwards.
The test control plane (1.20) cannot run this; the same expressions are evaluated offline
in tests/integration/test_class_confinement.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelab.classroom import access, policy
from kubelab.classroom.roster import Student
from kubelab.cluster.kube import CLASS_LABEL, Kube
from kubelab.tools import find_tool

KUBECONFIG = os.environ.get("KUBELAB_E2E_KUBECONFIG")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not KUBECONFIG, reason="KUBELAB_E2E_KUBECONFIG is not set: no real cluster to test on"
    ),
]

LESSON = f"e2e-confinement-{uuid.uuid4().hex[:6]}"
IMAGE = "registry.invalid/kubelab/app-backend"


def deployment(namespace: str) -> dict[str, Any]:
    labels = {"app": "app-backend", "version": "v1"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "app-backend", "namespace": namespace},
        "spec": {
            "replicas": 0,  # never pulled: admission is what is tested
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app-backend", "image": f"{IMAGE}:v1"}]},
            },
        },
    }


@pytest.fixture
def student_kube(tmp_path: Path) -> Iterator[tuple[Kube, Path, str]]:
    assert KUBECONFIG
    admin = Kube(Path(KUBECONFIG))
    version = admin.version()
    if not policy.supported(version):
        pytest.fail(f"the e2e cluster runs {version}: ValidatingAdmissionPolicy needs 1.30+")
    student = Student("e2e", "E2E", "e2e@example.org")
    namespace = f"{LESSON}-{student.id}"
    app = [deployment(namespace)]
    rules = access.student_rules(["istio", "flagger"], app)
    objects = access.access_objects(LESSON, student, namespace, rules, istio_injection=False)
    guard = policy.workload_policy(
        LESSON,
        class_label=CLASS_LABEL,
        labels=access.class_labels(LESSON),
        image_prefixes=[f"{IMAGE}:"],
        containers=policy.app_containers(app, "registry.invalid"),
        identity=access.IDENTITY,
    )
    try:
        for obj in [*guard, *objects, *app]:
            admin.apply(obj)
        token, expires = admin.create_token(namespace, access.IDENTITY, 3600)
        config = yaml.safe_load(Path(KUBECONFIG).read_text())
        kubeconfig = access.student_kubeconfig(
            config,
            LESSON,
            student,
            namespace,
            access.IssuedToken(token, expires),
            folder=Path(KUBECONFIG).parent,
        )
        path = tmp_path / "student.kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig))
        path.chmod(0o600)
        yield admin, path, namespace
    finally:
        admin.delete("v1", "Namespace", namespace)
        for kind in ("ValidatingAdmissionPolicyBinding", "ValidatingAdmissionPolicy"):
            admin.delete("admissionregistration.k8s.io/v1", kind, policy.policy_name(LESSON))


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    tool = find_tool("kubectl")
    assert tool is not None, "kubectl missing: scripts/install-tools.sh"
    return subprocess.run(
        [str(tool), f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
    )


def test_the_cluster_lets_a_student_change_only_the_image_and_replicas(
    student_kube: tuple[Kube, Path, str],
) -> None:
    _admin, config, namespace = student_kube
    patch = ["patch", "deployment/app-backend", "-n", namespace, "--type=merge", "-p"]

    def as_student(body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return kubectl(config, *patch, json.dumps(body))

    allowed = kubectl(
        config, "set", "image", "deployment/app-backend", f"app-backend={IMAGE}:v2", "-n", namespace
    )
    assert allowed.returncode == 0, allowed.stderr
    restarted = kubectl(config, "rollout", "restart", "deployment/app-backend", "-n", namespace)
    assert restarted.returncode == 0, restarted.stderr
    assert as_student({"spec": {"replicas": 3}}).returncode == 0

    refused = {
        "replicas 1000": ({"spec": {"replicas": 1000}}, "at most 5 replicas"),
        "another image": (
            {"spec": {"template": {"spec": {"containers": [
                {"name": "app-backend", "image": "docker.io/library/busybox"}]}}}},
            "only set the app container's image",
        ),
        "privileged": (
            {"spec": {"template": {"spec": {"containers": [
                {"name": "app-backend", "securityContext": {"privileged": True}}]}}}},
            "the rest of the pod template",
        ),
        "hostPath": (
            {"spec": {"template": {"spec": {"volumes": [
                {"name": "root", "hostPath": {"path": "/"}}]}}}},
            "the rest of the pod template",
        ),
        "hostNetwork": (
            {"spec": {"template": {"spec": {"hostNetwork": True}}}},
            "the rest of the pod template",
        ),
    }  # fmt: skip
    for what, (body, message) in refused.items():
        result = as_student(body)
        assert result.returncode != 0, what
        assert message in result.stderr, (what, result.stderr)
    # Pod Security baseline is enforced: not even the admin gets a privileged pod there.
    admin_result = kubectl(
        Path(os.environ["KUBELAB_E2E_KUBECONFIG"]),
        "run", "psa-probe", "-n", namespace, "--image=busybox", "--restart=Never",
        "--dry-run=server", "--overrides",
        json.dumps({"spec": {"containers": [{"name": "psa-probe", "image": "busybox",
                                              "securityContext": {"privileged": True}}]}}),
    )  # fmt: skip
    assert admin_result.returncode != 0, admin_result.stdout
    assert "violates PodSecurity" in admin_result.stderr, admin_result.stderr
    # RBAC: no pods of one's own, and the isolation stays.
    for args in (
        ["run", "x", "-n", namespace, "--image=busybox"],
        ["delete", "networkpolicy/student", "-n", namespace],
    ):
        result = kubectl(config, *args)
        assert result.returncode != 0 and "forbidden" in result.stderr, (args, result.stderr)
