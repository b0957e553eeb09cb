"""``Kube`` against the emulated API: labelled applies, zero-write re-applies, delete by
label, and retries through injected faults (429, 500, stalled answers).

Each test gets a fresh sandbox API (store + aiohttp app over HTTPS on 127.0.0.1) on its
own event loop thread. The app is wrapped in two middlewares of the test's own: one that
records every request the server receives (so "no mutating call" is checked where it
counts, at the server), and one that injects a fault into every n-th request.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kubelab.cluster import kube as kube_mod
from kubelab.cluster.kube import ClusterUnreachable, Kube, kubelab_labels, lesson_selector
from kubelab.cluster.retry import RetryPolicy
from kubelab.errors import KubelabError
from kubelab.sandbox import resources
from kubelab.sandbox.threaded import ThreadedApi

LESSON = "istio-traffic-splitting"

pytestmark = pytest.mark.timeout(60)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Faults:
    """Every ``every``-th request (counted over all requests) gets ``mode``."""

    mode: str = ""  # "", "429", "500", "slow"
    every: int = 3
    delay: float = 0.0  # "slow": seconds the answer is held back, after the handler ran
    seen: int = 0
    injected: int = 0


@dataclass
class Recorder:
    requests: list[tuple[str, str]] = field(default_factory=list)

    def mutating(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] not in ("GET", "HEAD")]

    def clear(self) -> None:
        self.requests.clear()


class SandboxApi(ThreadedApi):
    """A sandbox API with request recording and fault injection, on its own loop thread."""

    def __init__(self, home: Path) -> None:
        self.faults = Faults()
        self.recorder = Recorder()
        faults, recorder = self.faults, self.recorder

        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            recorder.requests.append((request.method, request.path))
            return await handler(request)

        @web.middleware
        async def inject(request: web.Request, handler: Handler) -> web.StreamResponse:
            faults.seen += 1
            if not faults.mode or faults.seen % faults.every:
                return await handler(request)
            faults.injected += 1
            if faults.mode == "slow":
                # The server acts, then the answer arrives after the client gave up: the
                # case where only an idempotent request may be sent again.
                response = await handler(request)
                await asyncio.sleep(faults.delay)
                return response
            status = int(faults.mode)
            body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status}
            headers = {"Retry-After": "0"} if status == 429 else {}
            return web.json_response(body, status=status, headers=headers)

        # Outermost first: faults hit before anything (auth included) sees the request.
        super().__init__(home, middlewares=[inject, record])

    def names(self, rt: resources.ResourceType, namespace: str | None = None) -> list[str]:
        items, _ = self.call(self.store.list, rt, namespace)
        return sorted(
            f"{o['metadata'].get('namespace', '')}/{o['metadata']['name']}" for o in items
        )


@pytest.fixture
def api(tmp_path: Path) -> Iterator[SandboxApi]:
    box = SandboxApi(tmp_path)
    try:
        yield box
    finally:
        box.close()


def deployment(name: str, namespace: str = "istio", version: str = "v1") -> dict[str, Any]:
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
                            "env": [{"name": "BUG_AFTER", "value": "30"}],
                        }
                    ]
                },
            },
        },
    }


def service(name: str, namespace: str = "istio") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
        },
    }


def virtualservice(weights: tuple[int, int] = (90, 10)) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "app-backend", "namespace": "istio"},
        "spec": {
            "hosts": ["app-backend"],
            "http": [
                {
                    "route": [
                        {
                            "destination": {"host": "app-backend", "subset": "v1"},
                            "weight": weights[0],
                        },
                        {
                            "destination": {"host": "app-backend", "subset": "v2"},
                            "weight": weights[1],
                        },
                    ]
                }
            ],
        },
    }


def lesson_objects() -> list[dict[str, Any]]:
    # Deliberately out of order: apply_all must put the Namespace first.
    return [
        virtualservice(),
        deployment("app-backend-v1"),
        deployment("app-backend-v2", version="v2"),
        service("app-backend"),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio"}},
    ]


KINDS = [
    ("v1", "Namespace"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("networking.istio.io/v1beta1", "VirtualService"),
    ("v1", "ConfigMap"),
]


def test_apply_all_labels_every_object_and_keeps_user_labels(api: SandboxApi) -> None:
    kube = api.kube()
    applied = kube.apply_all(lesson_objects(), labels=kubelab_labels(LESSON))
    assert [o["kind"] for o in applied] == [
        "Namespace",
        "Service",
        "Deployment",
        "Deployment",
        "VirtualService",
    ]
    for api_version, kind in KINDS[:4]:
        items = kube.list(api_version, kind, None, lesson_selector(LESSON))
        assert items, kind
        for item in items:
            labels = item["metadata"]["labels"]
            assert labels["app.kubernetes.io/managed-by"] == "kubelab"
            assert labels["kubelab.dev/lesson"] == LESSON
            assert kube_mod.APPLIED_HASH_ANNOTATION in item["metadata"]["annotations"]
    dep = kube.get("apps/v1", "Deployment", "app-backend-v2", "istio")
    assert dep is not None
    assert dep["metadata"]["labels"]["version"] == "v2"  # the object's own label survives
    # Namespace, then 4 objects: each one GET (absent) and one PATCH.
    assert kube.mutations == 5
    assert len(api.recorder.mutating()) == 5
    assert {m for m, _ in api.recorder.mutating()} == {"PATCH"}


def test_second_apply_makes_zero_mutating_calls(api: SandboxApi) -> None:
    first = api.kube()
    first.apply_all(lesson_objects(), labels=kubelab_labels(LESSON))
    rv = api.store.resource_version
    api.recorder.clear()

    second = api.kube()  # a fresh process: `kubelab up` run again
    second.apply_all(lesson_objects(), labels=kubelab_labels(LESSON))
    assert second.mutations == 0
    assert api.recorder.mutating() == []
    assert api.recorder.requests  # it did look
    assert api.store.resource_version == rv  # and nothing changed in the store

    # A changed field (the student moved the split) is applied again, and only that object.
    api.recorder.clear()
    changed = [
        virtualservice((50, 50)) if o["kind"] == "VirtualService" else o for o in lesson_objects()
    ]
    second.apply_all(changed, labels=kubelab_labels(LESSON))
    assert second.mutations == 1
    assert [m for m, _ in api.recorder.mutating()] == ["PATCH"]
    vs = second.get("networking.istio.io/v1beta1", "VirtualService", "app-backend", "istio")
    assert vs is not None
    assert [r["weight"] for r in vs["spec"]["http"][0]["route"]] == [50, 50]


def test_apply_repairs_drift_and_notices_a_removed_field(api: SandboxApi) -> None:
    kube = api.kube()
    dep = deployment("web", "default")
    kube.apply(dep, labels=kubelab_labels(LESSON))
    # Someone edits a field kubelab owns: the next apply puts it back.
    api.call(
        api.store.patch, resources.DEPLOYMENTS, "default", "web", "merge", {"spec": {"replicas": 3}}
    )
    before = kube.mutations
    kube.apply(dep, labels=kubelab_labels(LESSON))
    assert kube.mutations == before + 1
    assert (kube.get("apps/v1", "Deployment", "web", "default") or {})["spec"]["replicas"] == 1
    # A label dropped from the manifest: still a subset of the live object, but the
    # applied-hash annotation differs, so it is applied (a real server then removes it).
    labels_less = deployment("web", "default")
    del labels_less["metadata"]["labels"]["version"]
    kube.apply(labels_less, labels=kubelab_labels(LESSON))
    assert kube.mutations == before + 2
    kube.apply(labels_less, labels=kubelab_labels(LESSON))
    assert kube.mutations == before + 2


def test_delete_by_label_removes_exactly_the_labelled_objects(api: SandboxApi) -> None:
    kube = api.kube()
    kube.apply_all(lesson_objects(), labels=kubelab_labels(LESSON))
    # Not kubelab's, or another lesson's: must survive.
    kube.apply(deployment("student-app", "default"))
    kube.apply(service("other", "default"), labels=kubelab_labels("flagger-canary"))
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "keep", "namespace": "default"},
        }
    )
    deleted = kube.delete_by_label(lesson_selector(LESSON), KINDS, timeout=5)
    assert sorted(deleted) == [
        "deployment/app-backend-v1 in istio",
        "deployment/app-backend-v2 in istio",
        "namespace/istio",
        "service/app-backend in istio",
        "virtualservice/app-backend in istio",
    ]
    assert "/istio" not in api.names(resources.NAMESPACES)
    assert api.names(resources.DEPLOYMENTS) == ["default/student-app"]
    assert api.names(resources.SERVICES) == ["default/other"]
    assert api.names(resources.CONFIGMAPS) == ["default/keep"]
    # Kinds go in reverse apply order: custom resources first, the namespace last.
    deletes = [path for method, path in api.recorder.requests if method == "DELETE"]
    assert "virtualservices" in deletes[0] and deletes[-1].endswith("/namespaces/istio")
    # Nothing left: a second `down` deletes nothing and says so.
    assert kube.delete_by_label(lesson_selector(LESSON), KINDS, timeout=5) == []
    with pytest.raises(ValueError):
        kube.delete_by_label("  ", KINDS)


def test_delete_by_label_times_out_naming_what_is_left(
    api: SandboxApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube = api.kube()
    kube.apply(service("stuck", "default"), labels=kubelab_labels(LESSON))
    # A finalizer that never finishes: DELETE succeeds, the object stays listed.
    monkeypatch.setattr(Kube, "_delete", lambda self, resource, name, ns: True)
    with pytest.raises(KubelabError) as info:
        kube.delete_by_label(lesson_selector(LESSON), [("v1", "Service")], "default", timeout=0)
    assert str(info.value) == (
        "timed out waiting for objects labelled "
        f"{lesson_selector(LESSON)} to be deleted in namespace default (0s): "
        "1 still there: service/stuck in default. Try: kubelab status --verbose"
    )


def ten_objects() -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio"}}
    ]
    objs += [deployment(f"app-{i}") for i in range(3)]
    objs += [service(f"app-{i}") for i in range(3)]
    objs += [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"cm-{i}", "namespace": "istio"},
            "data": {"i": str(i)},
        }
        for i in range(2)
    ]
    objs.append(virtualservice())
    return objs


@pytest.mark.parametrize("mode", ["429", "500", "slow"])
def test_apply_all_completes_through_faults(api: SandboxApi, mode: str) -> None:
    api.faults.mode = mode
    api.faults.delay = 0.5
    # Requests time out after 0.2s; the stalled answers come after 0.5s.
    kube = api.kube(timeout=0.2)
    objects = ten_objects()
    kube.apply_all(objects, labels=kubelab_labels(LESSON))
    assert api.faults.injected >= 5
    assert kube.retries == api.faults.injected  # every fault cost one retry, no more
    assert kube.mutations == 10
    api.faults.mode = ""
    assert api.names(resources.NAMESPACES).count("/istio") == 1
    assert api.names(resources.DEPLOYMENTS, "istio") == [f"istio/app-{i}" for i in range(3)]
    assert api.names(resources.SERVICES, "istio") == [f"istio/app-{i}" for i in range(3)]
    assert api.names(resources.CONFIGMAPS, "istio") == ["istio/cm-0", "istio/cm-1"]
    assert api.names(resources.VIRTUALSERVICES, "istio") == ["istio/app-backend"]
    # And it is all there as applied: a re-run finds nothing to do.
    again = api.kube()
    again.apply_all(objects, labels=kubelab_labels(LESSON))
    assert again.mutations == 0


def test_non_retryable_errors_are_not_retried(api: SandboxApi) -> None:
    kube = api.kube()
    with pytest.raises(KubelabError, match=r"404 .*no-such-namespace"):
        kube.apply(service("orphan", "no-such-namespace"))
    assert kube.retries == 0
    bad = Kube(api.kubeconfig.with_name("nope"), retry=RetryPolicy(deadline=1))
    with pytest.raises(KubelabError, match="cannot use"):
        bad.get("v1", "Namespace", "default")


def test_persistent_500_gives_up_at_the_deadline(api: SandboxApi) -> None:
    kube = api.kube()
    assert kube.get("v1", "Namespace", "default") is not None  # discovery done
    api.faults.mode, api.faults.every = "500", 1
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


def test_version_and_wait_rollout_against_the_sandbox(api: SandboxApi) -> None:
    kube = api.kube()
    assert kube.version().startswith("v1.")
    kube.apply(deployment("web", "default"))
    with pytest.raises(KubelabError, match=r"deployment/web in namespace default \(0s\)"):
        kube.wait_rollout("Deployment", "web", "default", timeout=0)
    api.call(
        api.store.update_status,
        resources.DEPLOYMENTS,
        "default",
        "web",
        {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1},
    )
    assert kube.wait_rollout("Deployment", "web", "default", timeout=1)["metadata"]["name"] == "web"


def ready_pod(name: str, labels: dict[str, str], port_name: str = "http") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "istio", "labels": labels},
        "spec": {
            "containers": [
                {
                    "name": "kiali",
                    "image": "kiali",
                    "ports": [{"name": port_name, "containerPort": 20001}],
                }
            ]
        },
    }


def test_port_forward_finds_the_pod_behind_a_service(
    api: SandboxApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sandbox API does not serve port-forward: the pod/port choice runs against it,
    the stream opener is replaced by a local echo server."""
    kube = api.kube()
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio"}})
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kiali", "namespace": "istio"},
            "spec": {
                "selector": {"app": "kiali"},
                "ports": [{"port": 20001, "targetPort": "http"}],
            },
        }
    )
    for name in ("kiali-b", "kiali-a", "kiali-starting"):
        kube.apply(ready_pod(name, {"app": "kiali"}))
    for name in ("kiali-b", "kiali-a"):
        status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        api.call(api.store.update_status, resources.PODS, "istio", name, status)

    assert kube.forward_target("istio", "svc/kiali", 20001) == ("kiali-a", 20001)
    assert kube.forward_target("istio", "kiali", 20001) == ("kiali-a", 20001)
    assert kube.forward_target("istio", "pod/kiali-b", 9090) == ("kiali-b", 9090)
    with pytest.raises(KubelabError, match="no ready pod"):
        kube.forward_target("istio", "pod/kiali-starting", 80)
    with pytest.raises(KubelabError, match="no service or pod named nothing"):
        kube.forward_target("istio", "nothing", 80)
    with pytest.raises(KubelabError, match="service nothing not found"):
        kube.forward_target("istio", "svc/nothing", 80)

    echo = socket.socket()
    echo.bind(("127.0.0.1", 0))
    echo.listen()
    opened: list[tuple[str, str, int]] = []

    def open_stream(self: Kube, namespace: str, pod: str, port: int) -> socket.socket:
        opened.append((namespace, pod, port))
        return socket.create_connection(echo.getsockname())

    def serve_echo() -> None:
        conn, _ = echo.accept()
        with conn:
            while data := conn.recv(1024):
                conn.sendall(data.upper())

    threading.Thread(target=serve_echo, daemon=True).start()
    monkeypatch.setattr(Kube, "_open_forward_stream", open_stream)
    try:
        with (
            kube.port_forward("istio", "svc/kiali", 20001) as local_port,
            socket.create_connection(("127.0.0.1", local_port), timeout=5) as client,
        ):
            client.sendall(b"graph")
            assert client.recv(1024) == b"GRAPH"
        assert opened == [("istio", "kiali-a", 20001)]
    finally:
        echo.close()


def test_release_cloud_resources_deletes_load_balancers_and_claims(api: SandboxApi) -> None:
    """What `kubelab cluster delete` does inside a GKE cluster before deleting it."""
    from kubelab.providers.incluster import release_cloud_resources

    kube = api.kube()
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gitea"}})
    ports = [{"port": 80, "targetPort": 80}]
    for name, kind in (("gateway", "LoadBalancer"), ("internal", "ClusterIP")):
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": "gitea"},
                "spec": {"type": kind, "ports": ports, "selector": {"app": name}},
            }
        )
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "gitea"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    )
    released = release_cloud_resources(kube, timeout=1, poll=0, sleep=lambda s: None)
    assert released == [
        "load balancer of service gitea/gateway",
        "volume of claim gitea/data",
    ]
    assert kube.get("v1", "Service", "internal", "gitea") is not None
    assert kube.get("v1", "Service", "gateway", "gitea") is None
    assert kube.list("v1", "PersistentVolumeClaim", "gitea") == []
