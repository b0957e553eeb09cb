"""``Kube`` against the real kube-apiserver: server-side apply (field removal, ownership),
zero-write re-applies, waits that the real controllers finish, delete by label with real
finalization, port-forward, tokens, and retries through faults injected between the
client and the server (:mod:`faultproxy`).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy

from kubelab.cluster.kube import (
    APPLIED_HASH_ANNOTATION,
    ClusterUnreachable,
    Kube,
    kubelab_labels,
    lesson_selector,
)
from kubelab.errors import KubelabError, SetupError
from kubelab.retry import RetryPolicy

pytestmark = pytest.mark.timeout(120)

ISTIO_API = "networking.istio.io/v1beta1"


def lesson_id() -> str:
    """A lesson label of the test's own: the session's cluster is shared."""
    return f"lesson-{uuid.uuid4().hex[:6]}"


def deployment(name: str, namespace: str, version: str = "v1", **spec: Any) -> dict[str, Any]:
    labels = {"app": name, "version": version}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": f"app-backend:{version}",
                            "ports": [{"containerPort": 8080}],
                            "env": [
                                {"name": "BUG_AFTER", "value": "30"},
                                {"name": "LOG_LEVEL", "value": "INFO"},
                            ],
                        }
                    ]
                },
            },
            **spec,
        },
    }


def service(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
        },
    }


def virtualservice(namespace: str, weights: tuple[int, int] = (90, 10)) -> dict[str, Any]:
    return {
        "apiVersion": ISTIO_API,
        "kind": "VirtualService",
        "metadata": {"name": "app-backend", "namespace": namespace},
        "spec": {
            "hosts": ["app-backend"],
            "http": [
                {
                    "route": [
                        {"destination": {"host": "app-backend", "subset": s}, "weight": w}
                        for s, w in zip(("v1", "v2"), weights, strict=True)
                    ]
                }
            ],
        },
    }


def lesson_objects(namespace: str) -> list[dict[str, Any]]:
    # Deliberately out of order: apply_all must put the Namespace first.
    return [
        virtualservice(namespace),
        deployment("app-backend-v1", namespace),
        deployment("app-backend-v2", namespace, version="v2"),
        service("app-backend", namespace),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    ]


KINDS = [
    ("v1", "Namespace"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    (ISTIO_API, "VirtualService"),
    ("v1", "ConfigMap"),
]


@pytest.fixture
def proxy(control_plane) -> Iterator[FaultProxy]:  # type: ignore[no-untyped-def]
    box = FaultProxy(control_plane.plane)
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def via_proxy(proxy: FaultProxy, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Kubes that talk to the real server through the recording, fault-injecting proxy."""

    def make(**kwargs: Any) -> Kube:
        kwargs.setdefault("poll", 0.05)
        kwargs.setdefault("retry", RetryPolicy(deadline=20, initial_delay=0.01, max_delay=0.1))
        return Kube(proxy.kubeconfig(tmp_path / "proxy.kubeconfig"), **kwargs)

    return make


@pytest.fixture
def fresh_ns(control_plane) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A namespace name nobody uses yet; whatever the test made there goes afterwards."""
    name = f"kube-{uuid.uuid4().hex[:8]}"
    yield name
    control_plane.kube().delete("v1", "Namespace", name)


def names(kube: Kube, api_version: str, kind: str, namespace: str | None = None) -> list[str]:
    return sorted(o["metadata"]["name"] for o in kube.list(api_version, kind, namespace))


# -- applying -------------------------------------------------------------------------------------


def test_apply_all_labels_every_object_and_keeps_user_labels(  # type: ignore[no-untyped-def]
    upstream_crds, via_proxy, proxy: FaultProxy, fresh_ns: str
) -> None:
    lesson = lesson_id()
    kube = via_proxy()
    applied = kube.apply_all(lesson_objects(fresh_ns), labels=kubelab_labels(lesson))
    assert [o["kind"] for o in applied] == [
        "Namespace",
        "Service",
        "Deployment",
        "Deployment",
        "VirtualService",
    ]
    for api_version, kind in KINDS[:4]:
        items = kube.list(api_version, kind, None, lesson_selector(lesson))
        assert items, kind
        for item in items:
            assert item["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubelab"
            assert item["metadata"]["labels"]["kubelab.dev/lesson"] == lesson
            assert APPLIED_HASH_ANNOTATION in item["metadata"]["annotations"]
    dep = kube.get("apps/v1", "Deployment", "app-backend-v2", fresh_ns)
    assert dep is not None
    assert dep["metadata"]["labels"]["version"] == "v2"  # the object's own label survives
    # Five objects: one server-side apply (PATCH) each, seen by the server.
    assert kube.mutations == 5
    assert [m for m, _ in proxy.mutating()] == ["PATCH"] * 5


def test_second_apply_makes_zero_mutating_calls(  # type: ignore[no-untyped-def]
    upstream_crds, via_proxy, proxy: FaultProxy, fresh_ns: str
) -> None:
    lesson = lesson_id()
    via_proxy().apply_all(lesson_objects(fresh_ns), labels=kubelab_labels(lesson))
    time.sleep(1)  # the controllers write status (not spec): that must not count as drift
    before = {
        (o["kind"], o["metadata"]["name"]): o["metadata"]["resourceVersion"]
        for o in via_proxy().apply_all(lesson_objects(fresh_ns), labels=kubelab_labels(lesson))
    }
    proxy.requests.clear()
    second = via_proxy()  # a fresh process: `kubelab up` run again
    after = second.apply_all(lesson_objects(fresh_ns), labels=kubelab_labels(lesson))
    assert second.mutations == 0
    assert proxy.mutating() == []
    assert proxy.requests  # it did look
    assert {
        (o["kind"], o["metadata"]["name"]): o["metadata"]["resourceVersion"] for o in after
    } == (before)
    # A changed field (the student moved the split) is applied again, and only that object.
    proxy.requests.clear()
    changed = [
        virtualservice(fresh_ns, (50, 50)) if o["kind"] == "VirtualService" else o
        for o in lesson_objects(fresh_ns)
    ]
    second.apply_all(changed, labels=kubelab_labels(lesson))
    assert second.mutations == 1
    assert [m for m, _ in proxy.mutating()] == ["PATCH"]
    vs = second.get(ISTIO_API, "VirtualService", "app-backend", fresh_ns)
    assert vs is not None
    assert [r["weight"] for r in vs["spec"]["http"][0]["route"]] == [50, 50]


def test_server_side_apply_removes_a_field_kubelab_stopped_setting(  # type: ignore[no-untyped-def]
    control_plane, namespace: str
) -> None:
    kube = control_plane.kube()
    lesson = lesson_id()
    kube.apply(deployment("web", namespace), labels=kubelab_labels(lesson))
    trimmed = deployment("web", namespace)
    del trimmed["metadata"]["labels"]["version"]
    env = trimmed["spec"]["template"]["spec"]["containers"][0]["env"]
    trimmed["spec"]["template"]["spec"]["containers"][0]["env"] = env[:1]  # LOG_LEVEL goes
    before = kube.mutations
    kube.apply(trimmed, labels=kubelab_labels(lesson))
    assert kube.mutations == before + 1  # a subset of the live object, yet applied
    live = kube.get("apps/v1", "Deployment", "web", namespace)
    assert live is not None
    assert "version" not in live["metadata"]["labels"]  # removed by the real server
    container = live["spec"]["template"]["spec"]["containers"][0]
    assert [e["name"] for e in container["env"]] == ["BUG_AFTER"]
    kube.apply(trimmed, labels=kubelab_labels(lesson))
    assert kube.mutations == before + 1


def test_fields_of_another_manager_are_kept_and_kubelabs_taken_back(  # type: ignore[no-untyped-def]
    control_plane, namespace: str
) -> None:
    """Someone else (kubectl, a controller) changed a field kubelab owns and added one
    kubelab does not set: kubelab's apply takes its own field back (force) and leaves the
    other alone, and the managedFields say who owns what."""
    kube = control_plane.kube()
    lesson = lesson_id()
    kube.apply(deployment("web", namespace), labels=kubelab_labels(lesson))
    other = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace, "annotations": {"team": "blue"}},
        "spec": {"replicas": 3},
    }
    # Without force the other manager's apply conflicts with kubelab's ownership of replicas.
    refused = control_plane.kubectl(
        "apply",
        "--server-side",
        "--validate=false",
        "--field-manager=student",
        "-f",
        "-",
        check=False,
        input_text=json.dumps(other),
    )
    assert refused.returncode != 0 and "conflict" in refused.stderr.lower()
    control_plane.kubectl(
        "apply",
        "--server-side",
        "--validate=false",
        "--force-conflicts",
        "--field-manager=student",
        "-f",
        "-",
        input_text=json.dumps(other),
    )
    live = kube.get("apps/v1", "Deployment", "web", namespace)
    assert live is not None and live["spec"]["replicas"] == 3
    kube.apply(deployment("web", namespace), labels=kubelab_labels(lesson))
    live = kube.get("apps/v1", "Deployment", "web", namespace)
    assert live is not None
    assert live["spec"]["replicas"] == 1
    assert live["metadata"]["annotations"]["team"] == "blue"
    owners = {
        m["manager"]: json.dumps(m.get("fieldsV1") or {})
        for m in live["metadata"]["managedFields"]
        if m.get("operation") == "Apply"
    }
    assert '"f:replicas"' in owners["kubelab"]
    assert '"f:team"' in owners["student"] and '"f:replicas"' not in owners["student"]


def test_a_custom_resource_waits_for_its_crd_in_one_apply_all(  # type: ignore[no-untyped-def]
    control_plane, fresh_ns: str
) -> None:
    group = f"t{uuid.uuid4().hex[:6]}.kubelab.test"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer"}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    widget = {
        "apiVersion": f"{group}/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": fresh_ns},
        "spec": {"size": 3},
    }
    kube = control_plane.kube()
    try:
        applied = kube.apply_all(
            [widget, crd, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": fresh_ns}}]
        )
        assert [o["kind"] for o in applied] == ["Namespace", "CustomResourceDefinition", "Widget"]
        live = kube.get(f"{group}/v1", "Widget", "w", fresh_ns)
        assert live is not None and live["spec"] == {"size": 3}
    finally:
        kube.delete("apiextensions.k8s.io/v1", "CustomResourceDefinition", f"widgets.{group}")


def test_a_kind_the_cluster_does_not_serve_is_named(control_plane) -> None:  # type: ignore[no-untyped-def]
    from kubelab.cluster.kube import KindNotServed

    with pytest.raises(KindNotServed, match=r"does not serve Rollout \(argoproj.io/v9\)"):
        control_plane.kube().get("argoproj.io/v9", "Rollout", "x", "default")


def test_a_group_whose_discovery_answers_404_does_not_hide_other_kinds(  # type: ignore[no-untyped-def]
    control_plane,
) -> None:
    """A local APIService for a group nobody serves is listed in ``/apis`` while its own
    path answers 404, as a custom resource definition being deleted is for a moment. It
    once hid Namespace from a fresh client (the search for a bare "v1" read every group)."""
    from kubernetes.client import ApiregistrationV1Api, ApisApi

    from kubelab.cluster.kube import KindNotServed

    group = f"broken{uuid.uuid4().hex[:6]}.kubelab.test"
    admin = control_plane.kube()
    # Created, not applied: v1.20's server-side apply of an APIService panics (its
    # FieldManager is not installed for that registry).
    ApiregistrationV1Api(admin.api_client()).create_api_service(
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": f"v1.{group}"},
            "spec": {
                "group": group,
                "version": "v1",
                "groupPriorityMinimum": 100,
                "versionPriority": 10,
            },
        }
    )
    try:
        deadline = time.monotonic() + 30
        apis = ApisApi(admin.api_client())
        while group not in {g.name for g in apis.get_api_versions().groups}:
            assert time.monotonic() < deadline, f"{group} never listed in /apis"
            time.sleep(0.1)
        fresh = control_plane.kube()
        assert fresh.get("v1", "Namespace", "default") is not None
        assert fresh.list("apps/v1", "Deployment", "default") == []
        with pytest.raises(KindNotServed, match=rf"does not serve Thing \({group}/v1\)"):
            fresh.get(f"{group}/v1", "Thing", "x", "default")
    finally:
        admin.delete("apiregistration.k8s.io/v1", "APIService", f"v1.{group}")


# -- waiting --------------------------------------------------------------------------------------


def test_wait_rollout_of_a_deployment_through_its_replicaset(  # type: ignore[no-untyped-def]
    control_plane, namespace: str
) -> None:
    kube = control_plane.kube()
    kube.apply(deployment("web", namespace, replicas=3))
    done = kube.wait_rollout("Deployment", "web", namespace, timeout=60)
    assert done["status"]["availableReplicas"] == 3
    rs = kube.list("apps/v1", "ReplicaSet", namespace, "app=web")
    assert len(rs) == 1 and rs[0]["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    # A new template makes a second ReplicaSet, and the wait follows the rollout to its end.
    changed = deployment("web", namespace, replicas=3)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "app-backend:v2"
    kube.apply(changed)
    kube.wait_rollout("Deployment", "web", namespace, timeout=60)
    pods = kube.list("v1", "Pod", namespace, "app=web")
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"app-backend:v2"}
    assert len(kube.list("apps/v1", "ReplicaSet", namespace, "app=web")) == 2


def test_wait_rollout_stops_at_once_when_the_progress_deadline_passed(  # type: ignore[no-untyped-def]
    control_plane, namespace: str
) -> None:
    kube = control_plane.kube()
    stuck = deployment("stuck", namespace, progressDeadlineSeconds=1)
    stuck["spec"]["template"]["metadata"]["annotations"] = {"agent.kubelab.test/ready": "false"}
    kube.apply(stuck)
    started = time.monotonic()
    with pytest.raises(KubelabError, match="deployment stuck exceeded its progress deadline"):
        kube.wait_rollout("Deployment", "stuck", namespace, timeout=60)
    assert time.monotonic() - started < 30


def test_wait_rollout_times_out_naming_what_it_saw(control_plane, namespace: str) -> None:  # type: ignore[no-untyped-def]
    kube = control_plane.kube()
    slow = deployment("slow", namespace)
    slow["spec"]["template"]["metadata"]["annotations"] = {"agent.kubelab.test/ready": "false"}
    kube.apply(slow)
    with pytest.raises(KubelabError) as info:
        kube.wait_rollout("Deployment", "slow", namespace, timeout=2)
    assert f"timed out waiting for deployment/slow in namespace {namespace} (2s)" in str(info.value)
    assert "0 of 1 updated replicas are available" in str(info.value)


def test_wait_rollout_of_a_statefulset(control_plane, namespace: str) -> None:  # type: ignore[no-untyped-def]
    kube = control_plane.kube()
    labels = {"app": "db"}
    kube.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": namespace},
            "spec": {
                "serviceName": "db",
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "db", "image": "postgres:16"}]},
                },
            },
        }
    )
    done = kube.wait_rollout("StatefulSet", "db", namespace, timeout=60)
    assert done["status"]["readyReplicas"] == 2
    assert names(kube, "v1", "Pod", namespace) == ["db-0", "db-1"]


def test_wait_for_a_job_to_complete_and_to_fail(control_plane, namespace: str) -> None:  # type: ignore[no-untyped-def]
    kube = control_plane.kube()

    def job(name: str, exit_code: int) -> dict[str, Any]:
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"annotations": {"agent.kubelab.test/exit-code": str(exit_code)}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {"name": "build", "image": "gcr.io/kaniko-project/executor"}
                        ],
                    },
                },
            },
        }

    kube.apply(job("good", 0))
    kube.apply(job("bad", 1))
    done = kube.wait_condition("batch/v1", "Job", "good", namespace, "Complete", 60)
    assert done["status"]["succeeded"] == 1
    failed = kube.wait_condition("batch/v1", "Job", "bad", namespace, "Failed", 60)
    assert failed["status"]["conditions"][0]["reason"] == "BackoffLimitExceeded"


def test_wait_condition_of_a_crd_being_established(control_plane) -> None:  # type: ignore[no-untyped-def]
    kube = control_plane.kube()
    crd = kube.wait_condition(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "virtualservices.networking.istio.io",
        None,
        "Established",
        30,
    )
    assert crd["status"]["acceptedNames"]["kind"] == "VirtualService"


# -- deleting -------------------------------------------------------------------------------------


def test_delete_by_label_removes_exactly_the_labelled_objects(  # type: ignore[no-untyped-def]
    upstream_crds, control_plane, via_proxy, proxy: FaultProxy, fresh_ns: str, namespace: str
) -> None:
    lesson = lesson_id()
    kube = via_proxy()
    kube.apply_all(lesson_objects(fresh_ns), labels=kubelab_labels(lesson))
    kube.wait_rollout("Deployment", "app-backend-v1", fresh_ns, timeout=60)
    # Not kubelab's, or another lesson's: must survive.
    kube.apply(deployment("student-app", namespace))
    kube.apply(service("other", namespace), labels=kubelab_labels("flagger-canary"))
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "keep", "namespace": namespace},
        }
    )
    proxy.requests.clear()
    deleted = kube.delete_by_label(lesson_selector(lesson), KINDS, timeout=60)
    assert sorted(deleted) == [
        f"deployment/app-backend-v1 in {fresh_ns}",
        f"deployment/app-backend-v2 in {fresh_ns}",
        f"namespace/{fresh_ns}",
        f"service/app-backend in {fresh_ns}",
        f"virtualservice/app-backend in {fresh_ns}",
    ]
    # The namespace really finalized: its pods and ReplicaSets went with it.
    admin = control_plane.kube()
    assert admin.get("v1", "Namespace", fresh_ns) is None
    assert admin.list("v1", "Pod", fresh_ns) == []
    assert names(admin, "apps/v1", "Deployment", namespace) == ["student-app"]
    assert names(admin, "v1", "Service", namespace) == ["other"]
    assert "keep" in names(admin, "v1", "ConfigMap", namespace)
    # Kinds go in reverse apply order: custom resources first, the namespace last.
    deletes = [path for method, path in proxy.requests if method == "DELETE"]
    assert "virtualservices" in deletes[0] and deletes[-1].endswith(f"/namespaces/{fresh_ns}")
    assert kube.delete_by_label(lesson_selector(lesson), KINDS, timeout=5) == []
    with pytest.raises(ValueError):
        kube.delete_by_label("  ", KINDS)


def test_delete_by_label_times_out_naming_what_a_finalizer_holds(  # type: ignore[no-untyped-def]
    control_plane, namespace: str
) -> None:
    kube = control_plane.kube()
    lesson = lesson_id()
    held = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "held", "namespace": namespace, "finalizers": ["kubelab.test/hold"]},
    }
    kube.apply(held, labels=kubelab_labels(lesson))
    try:
        with pytest.raises(KubelabError) as info:
            kube.delete_by_label(
                lesson_selector(lesson), [("v1", "ConfigMap")], namespace, timeout=1
            )
        assert str(info.value) == (
            f"timed out waiting for objects labelled {lesson_selector(lesson)} to be deleted in "
            f"namespace {namespace} (1s): 1 still there: configmap/held in {namespace}. "
            "Try: kubelab status --verbose"
        )
        live = kube.get("v1", "ConfigMap", "held", namespace)
        assert live is not None and live["metadata"]["deletionTimestamp"]
    finally:
        control_plane.kubectl(
            "patch",
            "configmap",
            "held",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
        )
    kube.wait_for(
        lambda: kube.get("v1", "ConfigMap", "held", namespace) is None, timeout=10, what="held"
    )


def test_release_cloud_resources_deletes_load_balancers_and_claims(  # type: ignore[no-untyped-def]
    control_plane, namespace: str
) -> None:
    """What `kubelab cluster delete` does inside a GKE cluster before deleting it; the PVC
    carries the real pvc-protection finalizer, which its controller lifts."""
    from kubelab.providers.incluster import release_cloud_resources

    kube = control_plane.kube()
    ports = [{"port": 80, "targetPort": 80}]
    for name, kind in (("gateway", "LoadBalancer"), ("internal", "ClusterIP")):
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"type": kind, "ports": ports, "selector": {"app": name}},
            }
        )
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    )
    claim = kube.get("v1", "PersistentVolumeClaim", "data", namespace)
    assert claim is not None and claim["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    released = release_cloud_resources(kube, timeout=10, poll=0.1)
    assert f"load balancer of service {namespace}/gateway" in released
    assert f"volume of claim {namespace}/data" in released
    assert kube.get("v1", "Service", "internal", namespace) is not None
    assert kube.get("v1", "Service", "gateway", namespace) is None
    kube.wait_for(
        lambda: kube.list("v1", "PersistentVolumeClaim", namespace) == [],
        timeout=30,
        what="the claim to go",
    )


def _claim(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def _mounting(spec: dict[str, Any], claim: str) -> dict[str, Any]:
    spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
    spec["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    return spec


def test_release_deletes_the_workload_that_mounts_a_claim_before_the_claim(  # type: ignore[no-untyped-def]
    control_plane, namespace: str
) -> None:
    """Gitea's and VictoriaMetrics' volumes on GKE: while their pod runs, the real
    pvc-protection controller keeps the claim (and the disk, billed). The Deployment goes
    first, then the claim, and the release waits until the claim is gone."""
    from kubelab.providers.incluster import release_cloud_resources

    kube = control_plane.kube()
    kube.apply(_claim("gitea-data", namespace))
    app = deployment("gitea", namespace)
    _mounting(app["spec"]["template"]["spec"], "gitea-data")
    kube.apply(app)
    kube.wait_rollout("Deployment", "gitea", namespace, timeout=60)
    released = release_cloud_resources(kube, timeout=60, poll=0.2)
    assert released.index(f"deployment {namespace}/gitea (it mounts a claim)") < released.index(
        f"volume of claim {namespace}/gitea-data"
    )
    assert kube.get("v1", "PersistentVolumeClaim", "gitea-data", namespace) is None
    assert kube.get("apps/v1", "Deployment", "gitea", namespace) is None


def test_release_fails_naming_a_claim_it_could_not_free(  # type: ignore[no-untyped-def]
    control_plane, namespace: str
) -> None:
    """A pod that does not go (a finalizer holds it) keeps its claim: the release says so,
    instead of letting the cluster be deleted over a billed disk."""
    from kubelab.providers.incluster import release_cloud_resources

    kube = control_plane.kube()
    kube.apply(_claim("held", namespace))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "holder", "namespace": namespace, "finalizers": ["kubelab.test/hold"]},
        "spec": deployment("x", namespace)["spec"]["template"]["spec"],
    }
    _mounting(pod["spec"], "held")
    kube.apply(pod)
    kube.wait_condition("v1", "Pod", "holder", namespace, "Ready", 60)
    try:
        with pytest.raises(KubelabError) as failed:
            release_cloud_resources(kube, timeout=3, poll=0.2)
        assert f"claim {namespace}/held" in failed.value.message
        assert f"still mounted by pod {namespace}/holder" in failed.value.message
        assert "stay billed" in (failed.value.hint or "")
    finally:
        control_plane.kubectl(
            "patch",
            "pod",
            "holder",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
        )


# -- faults ---------------------------------------------------------------------------------------


def ten_objects(namespace: str) -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    ]
    objs += [deployment(f"app-{i}", namespace) for i in range(3)]
    objs += [service(f"app-{i}", namespace) for i in range(3)]
    objs += [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"cm-{i}", "namespace": namespace},
            "data": {"i": str(i)},
        }
        for i in range(2)
    ]
    objs.append(virtualservice(namespace))
    return objs


@pytest.mark.parametrize("mode", ["429", "500", "slow"])
def test_apply_all_completes_through_faults(  # type: ignore[no-untyped-def]
    upstream_crds, control_plane, via_proxy, proxy: FaultProxy, fresh_ns: str, mode: str
) -> None:
    kube = via_proxy(timeout=0.5)  # stalled answers come after 1.5s: the client gives up
    kube.get("v1", "Namespace", "default")  # discovery first, without faults
    proxy.faults.mode, proxy.faults.delay = mode, 1.5
    objects = ten_objects(fresh_ns)
    kube.apply_all(objects, labels=kubelab_labels("faults"))
    assert proxy.faults.injected >= 5
    assert kube.retries == proxy.faults.injected  # every fault cost one retry, no more
    assert kube.mutations == 10
    proxy.faults.mode = ""
    admin = control_plane.kube()
    assert names(admin, "apps/v1", "Deployment", fresh_ns) == ["app-0", "app-1", "app-2"]
    assert names(admin, "v1", "Service", fresh_ns) == ["app-0", "app-1", "app-2"]
    assert {"cm-0", "cm-1"} <= set(names(admin, "v1", "ConfigMap", fresh_ns))
    assert names(admin, ISTIO_API, "VirtualService", fresh_ns) == ["app-backend"]
    again = control_plane.kube()
    again.apply_all(objects, labels=kubelab_labels("faults"))
    assert again.mutations == 0


def test_persistent_500_gives_up_at_the_deadline(via_proxy, proxy: FaultProxy) -> None:  # type: ignore[no-untyped-def]
    kube = via_proxy()
    assert kube.get("v1", "Namespace", "default") is not None  # discovery done
    proxy.faults.mode, proxy.faults.every = "500", 1
    ticks = {"now": 0.0}
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        ticks["now"] += seconds

    kube.retry = RetryPolicy(
        deadline=3.0,
        initial_delay=0.5,
        max_delay=2,
        jitter=0,
        sleep=sleep,
        clock=lambda: ticks["now"],
    )
    with pytest.raises(KubelabError, match="500"):
        kube.get("v1", "Namespace", "default")
    assert sleeps == [0.5, 1.0]  # the next (2.0s) would end after the 3s deadline


def test_non_retryable_errors_are_not_retried(control_plane, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kube = control_plane.kube()
    with pytest.raises(
        KubelabError, match=r'404 Not Found.*namespaces "no-such-namespace" not found'
    ):
        kube.apply(service("orphan", "no-such-namespace"))
    assert kube.retries == 0
    nobody = control_plane.kube(control_plane.kubeconfig_for("nobody"))
    with pytest.raises(SetupError, match=r"refused to show Namespace default \(403 Forbidden\)"):
        nobody.get("v1", "Namespace", "default")
    assert nobody.retries == 0
    bad = Kube(tmp_path / "nope", retry=RetryPolicy(deadline=1))
    with pytest.raises(KubelabError, match="cannot use"):
        bad.get("v1", "Namespace", "default")


def test_unreachable_cluster_is_a_setup_error_after_retries(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    sleeps: list[float] = []
    kube = Kube(path, retry=RetryPolicy(deadline=30, max_attempts=4, sleep=sleeps.append))
    with pytest.raises(ClusterUnreachable, match=f"127.0.0.1:{port}.*after 4 attempts"):
        kube.get("v1", "Namespace", "default")
    assert len(sleeps) == 3


# -- version, tokens, port-forward -----------------------------------------------------------------


def test_version_is_the_real_servers(control_plane) -> None:  # type: ignore[no-untyped-def]
    assert control_plane.kube().version() == "v1.20.2"


def test_create_token_is_a_real_token_request(control_plane, namespace: str) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    kube = control_plane.kube()
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "robot", "namespace": namespace},
        }
    )
    token, expires = kube.create_token(namespace, "robot", 3600)
    left = expires - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=55) < left <= dt.timedelta(hours=1, minutes=1)
    as_robot = control_plane.kube(
        control_plane.kubeconfig_for(f"robot-{namespace}", token=token, namespace=namespace)
    )
    # Authenticated (not 401) and confined by RBAC (no Role gives it anything): 403.
    with pytest.raises(SetupError, match=r"\(403 Forbidden\)"):
        as_robot.list("v1", "Pod", namespace)


def ready_pod(
    name: str, namespace: str, labels: dict[str, str], ready: bool = True
) -> dict[str, Any]:
    annotations = {} if ready else {"agent.kubelab.test/ready": "false"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "containers": [
                {
                    "name": "kiali",
                    "image": "kiali",
                    "ports": [{"name": "http", "containerPort": 20001}],
                }
            ]
        },
    }


def test_port_forward_through_the_real_server(control_plane, namespace: str) -> None:  # type: ignore[no-untyped-def]
    kube = control_plane.kube()
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kiali", "namespace": namespace},
            "spec": {
                "selector": {"app": "kiali"},
                "ports": [{"port": 20001, "targetPort": "http"}],
            },
        }
    )
    for name in ("kiali-b", "kiali-a"):
        kube.apply(ready_pod(name, namespace, {"app": "kiali"}))
    kube.apply(ready_pod("kiali-starting", namespace, {"app": "kiali"}, ready=False))
    for name in ("kiali-a", "kiali-b"):
        kube.wait_condition("v1", "Pod", name, namespace, "Ready", 30)
    kube.wait_condition("v1", "Pod", "kiali-starting", namespace, "Initialized", 30)

    assert kube.forward_target(namespace, "svc/kiali", 20001) == ("kiali-a", 20001)
    assert kube.forward_target(namespace, "kiali", 20001) == ("kiali-a", 20001)
    assert kube.forward_target(namespace, "pod/kiali-b", 9090) == ("kiali-b", 9090)
    with pytest.raises(KubelabError, match="no ready pod"):
        kube.forward_target(namespace, "pod/kiali-starting", 80)
    with pytest.raises(KubelabError, match="no service or pod named nothing"):
        kube.forward_target(namespace, "nothing", 80)
    with pytest.raises(KubelabError, match="service nothing not found"):
        kube.forward_target(namespace, "svc/nothing", 80)

    echo = socket.socket()
    echo.bind(("127.0.0.1", 0))
    echo.listen()

    def serve_echo() -> None:
        conn, _ = echo.accept()
        with conn:
            while data := conn.recv(1024):
                conn.sendall(data.upper())

    threading.Thread(target=serve_echo, daemon=True).start()
    control_plane.agent.forwards[(namespace, "kiali-a", 20001)] = echo.getsockname()
    try:
        with (
            kube.port_forward(namespace, "svc/kiali", 20001) as local_port,
            socket.create_connection(("127.0.0.1", local_port), timeout=10) as client,
        ):
            client.sendall(b"graph")
            assert client.recv(1024) == b"GRAPH"
    finally:
        echo.close()


def test_service_proxy_get_reaches_a_pod_through_the_real_server(  # type: ignore[no-untyped-def]
    control_plane, namespace: str
) -> None:
    """The API server's service proxy (how checks query VictoriaMetrics and Jaeger): the
    Service's Endpoints, made by the real endpoints controller, lead to a server here."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kube = control_plane.kube()
    try:
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "vm", "namespace": namespace},
                "spec": {"selector": {"app": "vm"}, "ports": [{"port": 8428, "targetPort": 8428}]},
            }
        )
        kube.apply(ready_pod("vm-0", namespace, {"app": "vm"}))
        control_plane.agent.pod_servers[(namespace, "vm-0", 8428)] = server.server_address[:2]
        kube.wait_for(
            lambda: bool(
                ((kube.get("v1", "Endpoints", "vm", namespace) or {}).get("subsets") or [{}])[
                    0
                ].get("addresses")
            ),
            timeout=30,
            what="the endpoints of vm",
        )
        body = kube.service_proxy_get(namespace, "vm", 8428, "/api/v1/query", {"query": "up"})
        assert json.loads(body) == {"path": "/api/v1/query?query=up"}
        with pytest.raises(KubelabError, match=r"answered 503 Service Unavailable for service"):
            kube.service_proxy_get(namespace, "vm", 9999, "/", {})
    finally:
        server.shutdown()
