"""The sandbox API against the real kubectl binary and the official Python client.

Each test gets a fresh server on 127.0.0.1 (random port, its own event loop thread),
a kubeconfig for it and a private HOME for kubectl's discovery cache. kubectl is the one
kubelab uses (``find_tool``: PATH, then .tools/bin); CI pins 1.31.9.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelab.sandbox import resources
from kubelab.sandbox.api_tables import human_duration
from kubelab.sandbox.errors import ApiError
from kubelab.sandbox.threaded import ThreadedApi
from kubelab.tools import find_tool

TOKEN = "test-token-0123456789"
KUBECTL = find_tool("kubectl")

pytestmark = pytest.mark.timeout(60)

APP_MANIFESTS = """
apiVersion: v1
kind: Namespace
metadata:
  name: istio
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-backend-v1
  namespace: istio
  labels: {app: app-backend, version: v1}
spec:
  replicas: 1
  selector:
    matchLabels: {app: app-backend, version: v1}
  template:
    metadata:
      labels: {app: app-backend, version: v1}
    spec:
      containers:
      - name: app
        image: app-backend:v1
        ports: [{containerPort: 8080}]
        env:
        - {name: BUG_AFTER, value: "20"}
        - {name: LOG_LEVEL, value: info}
---
apiVersion: v1
kind: Service
metadata:
  name: app-backend
  namespace: istio
  labels: {app: app-backend}
spec:
  selector: {app: app-backend}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: app-backend
  namespace: istio
spec:
  hosts: ["*"]
  gateways: [app-backend-gateway]
  http:
  - route:
    - destination: {host: app-backend, subset: v1}
      weight: 90
    - destination: {host: app-backend, subset: v2}
      weight: 10
"""


async def local_exec(
    namespace: str, pod: str, container: str | None, command: list[str], stdin: bool, tty: bool
) -> asyncio.subprocess.Process:
    """Run the command on this machine, as the sandbox controller does."""
    if container == "forbidden":
        raise ApiError(403, "Forbidden", "exec into forbidden is not allowed")
    return await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def pod_logs(
    namespace: str, pod: str, container: str | None, follow: bool, tail_lines: int | None
) -> AsyncIterator[bytes]:
    if pod == "gone":  # the pod is in the store but the handler no longer knows it
        raise ApiError(404, "NotFound", 'pods "gone" not found')
    lines = [f"{pod}/{container} line {i}\n".encode() for i in range(1, 4)]
    for line in lines[-tail_lines:] if tail_lines else lines:
        yield line
    if follow:
        await asyncio.sleep(0.2)  # a line that comes later, while kubectl follows
        yield f"{pod}/{container} following\n".encode()


class Sandbox(ThreadedApi):
    """The sandbox API harness (ThreadedApi) with this module's exec and log handlers, and
    kubectl and the Python client pointed at it."""

    def __init__(
        self,
        home: Path,
        validate: Callable[[dict[str, Any]], list[str]] | None = None,
        **store_options: Any,
    ) -> None:
        self.home = home
        super().__init__(
            home,
            token=TOKEN,
            exec_handler=local_exec,
            log_handler=pod_logs,
            validate=validate,
            **store_options,
        )
        self.ca_file = home / "ca.crt"
        assert self.server.ca_pem is not None
        self.ca_file.write_bytes(self.server.ca_pem)

    # ------------------------------------------------------------- kubectl

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.home),  # kubectl's discovery cache goes here
            "KUBECONFIG": str(self.kubeconfig),
        }

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 20
    ) -> subprocess.CompletedProcess[str]:
        assert KUBECTL is not None
        result = subprocess.run(
            [str(KUBECTL), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        assert KUBECTL is not None
        return subprocess.Popen(
            [str(KUBECTL), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
        )

    def apply(self, manifests: str = APP_MANIFESTS) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", input=manifests)

    # ------------------------------------------------------------- python client

    def client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path)
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def kubectl_sandbox(sandbox: Sandbox) -> Sandbox:
    if KUBECTL is None:
        pytest.skip("kubectl not found on PATH or in .tools/bin (scripts/install-tools.sh)")
    return sandbox


def raw(
    box: Sandbox,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    content_type: str = "application/json",
    token: str | None = TOKEN,
    accept: str = "",
) -> tuple[int, str | None, bytes]:
    """One HTTPS request with urllib: status, Content-Type and raw body."""
    import ssl

    context = ssl.create_default_context(cafile=str(box.ca_file))
    request = urllib.request.Request(box.server.url + path, data=body, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if accept:
        request.add_header("Accept", accept)
    if body is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, response.headers.get("Content-Type"), response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def raw_get(box: Sandbox, path: str, token: str | None = TOKEN, accept: str = "") -> Any:
    status, content_type, body = raw(box, path, token=token, accept=accept)
    return status, content_type, json.loads(body)


def ready_pod(
    name: str, labels: dict[str, str], containers: tuple[str, ...] = ("app",)
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "istio", "labels": labels},
        "spec": {"containers": [{"name": c, "image": "app-backend:v1"} for c in containers]},
    }


POD_READY = {
    "phase": "Running",
    "podIP": "127.0.0.1",
    "conditions": [{"type": "Ready", "status": "True"}],
    "containerStatuses": [
        {
            "name": "app",
            "ready": True,
            "restartCount": 1,
            "image": "app-backend:v1",
            "imageID": "",
            "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}},
        }
    ],
}


# ----------------------------------------------------------------- discovery and get


def test_discovery_and_empty_get(kubectl_sandbox: Sandbox):
    box = kubectl_sandbox
    out = box.kubectl("api-resources").stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["virtualservices"][1:4] == ["vs", "networking.istio.io/v1", "true"]
    assert rows["destinationrules"][1] == "dr" and rows["gateways"][1] == "gw"
    assert rows["deployments"][1:3] == ["deploy", "apps/v1"]
    assert rows["namespaces"][1:4] == ["ns", "v1", "false"]
    empty = box.kubectl("get", "vs")
    assert empty.stdout == "" and "No resources found in default namespace." in empty.stderr
    version = box.kubectl("version", "-o", "json").stdout
    assert json.loads(version)["serverVersion"]["gitVersion"] == "v1.31.0-kubelab-sandbox"


def test_legacy_discovery_documents(sandbox: Sandbox):
    status, _, groups = raw_get(sandbox, "/apis")
    istio = next(g for g in groups["groups"] if g["name"] == "networking.istio.io")
    assert [v["version"] for v in istio["versions"]] == ["v1", "v1beta1", "v1alpha3"]
    assert istio["preferredVersion"]["version"] == "v1"
    _, _, core = raw_get(sandbox, "/api/v1")
    names = {r["name"] for r in core["resources"]}
    assert {"pods", "pods/exec", "pods/log", "pods/status", "namespaces"} <= names
    _, _, apps = raw_get(sandbox, "/apis/apps/v1")
    scale = next(r for r in apps["resources"] if r["name"] == "deployments/scale")
    assert (scale["group"], scale["kind"]) == ("autoscaling", "Scale")
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    _, content_type, aggregated = raw_get(sandbox, "/apis", accept=accept)
    assert content_type == accept and aggregated["kind"] == "APIGroupDiscoveryList"
    status, _, body = raw_get(sandbox, "/apis/nope.example/v1/things")
    assert status == 404 and body["reason"] == "NotFound"


def test_apply_twice_get_yaml_and_tables(kubectl_sandbox: Sandbox):
    box = kubectl_sandbox
    applied = box.apply()
    assert applied.stderr == ""  # no warnings (OpenAPI, validation, ...) on normal commands
    first = applied.stdout.splitlines()
    assert first == [
        "namespace/istio created",
        "deployment.apps/app-backend-v1 created",
        "service/app-backend created",
        "virtualservice.networking.istio.io/app-backend created",
    ]
    second = box.apply()
    assert second.stdout.splitlines() == [line.replace("created", "unchanged") for line in first]
    assert second.stderr == ""
    vs = yaml.safe_load(box.kubectl("get", "vs", "app-backend", "-n", "istio", "-o", "yaml").stdout)
    assert vs["apiVersion"] == "networking.istio.io/v1"
    assert [r["weight"] for r in vs["spec"]["http"][0]["route"]] == [90, 10]
    table = box.kubectl("get", "virtualservices", "-n", "istio").stdout.splitlines()
    assert table[0].split() == ["NAME", "GATEWAYS", "HOSTS", "AGE"]
    assert table[1].split()[:3] == ["app-backend", '["app-backend-gateway"]', '["*"]']
    services = box.kubectl("get", "svc", "-n", "istio").stdout.splitlines()
    assert services[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert services[1].split()[:5] == [
        "app-backend",
        "ClusterIP",
        services[1].split()[2],
        "<none>",
        "80/TCP",
    ]
    deploys = box.kubectl("get", "deploy", "-n", "istio").stdout.splitlines()
    assert deploys[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert deploys[1].split()[:4] == ["app-backend-v1", "0/1", "0", "0"]
    everything = box.kubectl("get", "all", "-n", "istio").stdout
    assert "service/app-backend" in everything and "deployment.apps/app-backend-v1" in everything
    # The same object under another served version.
    alpha = box.kubectl(
        "get",
        "virtualservices.v1alpha3.networking.istio.io",
        "app-backend",
        "-n",
        "istio",
        "-o",
        "jsonpath={.apiVersion}",
    ).stdout
    assert alpha == "networking.istio.io/v1alpha3"


def test_course_json_patch_changes_the_weights(kubectl_sandbox: Sandbox):
    box = kubectl_sandbox
    box.apply()
    # The exact command of the lesson, through a shell like a student types it.
    command = (
        f"{KUBECTL} patch virtualservice app-backend -n istio --type='json' "
        """-p='[{"op":"replace","path":"/spec/http/0/route/0/weight","value":50},"""
        """{"op":"replace","path":"/spec/http/0/route/1/weight","value":50}]'"""
    )
    result = subprocess.run(
        command, shell=True, capture_output=True, text=True, env=box.env(), timeout=20, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "virtualservice.networking.istio.io/app-backend patched\n"
    assert result.stderr == ""
    vs = box.call(box.store.get, resources.VIRTUALSERVICES, "istio", "app-backend")
    assert [r["weight"] for r in vs["spec"]["http"][0]["route"]] == [50, 50]
    assert vs["metadata"]["generation"] == 2
    # A JSON patch that does not apply is the API server's 422.
    bad = box.kubectl(
        "patch",
        "vs",
        "app-backend",
        "-n",
        "istio",
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/spec/http/5/route","value":1}]',
        check=False,
    )
    assert bad.returncode == 1 and "The request is invalid" in bad.stderr


def test_merge_and_strategic_patches(kubectl_sandbox: Sandbox):
    box = kubectl_sandbox
    box.apply()
    box.kubectl(
        "patch",
        "vs",
        "app-backend",
        "-n",
        "istio",
        "--type=merge",
        "-p",
        '{"spec":{"hosts":["app.example.com"]}}',
    )
    hosts = box.kubectl("get", "vs", "app-backend", "-n", "istio", "-o", "jsonpath={.spec.hosts}")
    assert hosts.stdout == '["app.example.com"]'
    # Strategic merge (kubectl's default) on a custom resource: refused like Kubernetes does.
    refused = box.kubectl(
        "patch", "vs", "app-backend", "-n", "istio", "-p", '{"spec":{"hosts":["x"]}}', check=False
    )
    assert refused.returncode == 1
    assert "application/strategic-merge-patch+json is not supported" in refused.stderr
    # On a Deployment, container env merges by name.
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "env": [
                                {"name": "LOG_LEVEL", "value": "debug"},
                                {"name": "NEW", "value": "1"},
                            ],
                        }
                    ]
                }
            }
        }
    }
    box.kubectl("patch", "deployment", "app-backend-v1", "-n", "istio", "-p", json.dumps(patch))
    dep = box.call(box.store.get, resources.DEPLOYMENTS, "istio", "app-backend-v1")
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [
        {"name": "BUG_AFTER", "value": "20"},
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "NEW", "value": "1"},
    ]
    unchanged = box.kubectl(
        "patch", "deployment", "app-backend-v1", "-n", "istio", "-p", json.dumps(patch)
    )
    assert unchanged.stdout.strip() == "deployment.apps/app-backend-v1 patched (no change)"


def test_label_annotate_and_label_selectors(kubectl_sandbox: Sandbox):
    box = kubectl_sandbox
    box.apply()
    assert box.kubectl("label", "ns", "istio", "istio-injection=enabled").stdout == (
        "namespace/istio labeled\n"
    )
    assert box.kubectl("annotate", "ns", "istio", "owner=kubelab").stdout == (
        "namespace/istio annotated\n"
    )
    ns = box.call(box.store.get, resources.NAMESPACES, None, "istio")["metadata"]
    assert ns["labels"]["istio-injection"] == "enabled"
    assert ns["annotations"]["owner"] == "kubelab"
    for name, version in (("a", "v1"), ("b", "v2"), ("c", "v3")):
        box.call(
            box.store.create, resources.PODS, ready_pod(name, {"app": "x", "version": version})
        )
    box.call(box.store.create, resources.PODS, ready_pod("d", {"app": "y"}))
    selected = box.kubectl("get", "pods", "-n", "istio", "-l", "app=x,version!=v1", "-o", "name")
    assert selected.stdout.split() == ["pod/b", "pod/c"]
    selected = box.kubectl("get", "pods", "-A", "-l", "version in (v1,v3)", "-o", "name")
    assert selected.stdout.split() == ["pod/a", "pod/c"]


def test_pod_table_columns(kubectl_sandbox: Sandbox):
    box = kubectl_sandbox
    box.apply()
    box.call(box.store.create, resources.PODS, ready_pod("web", {"app": "web"}))
    pending = box.kubectl("get", "pods", "-n", "istio").stdout.splitlines()
    assert pending[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert pending[1].split()[:4] == ["web", "0/1", "Pending", "0"]
    box.call(box.store.update_status, resources.PODS, "istio", "web", POD_READY)
    running = box.kubectl("get", "pods", "-n", "istio", "-o", "wide").stdout.splitlines()
    assert running[0].split()[:6] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP"]
    assert running[1].split()[:5] == ["web", "1/1", "Running", "1", running[1].split()[4]]
    described = box.kubectl("describe", "pod", "web", "-n", "istio").stdout
    assert re.search(r"^Status:\s+Running$", described, re.M) and "app-backend:v1" in described


def test_errors_are_kubernetes_statuses(kubectl_sandbox: Sandbox):
    box = kubectl_sandbox
    box.apply()
    assert box.kubectl("delete", "vs", "app-backend", "-n", "istio").stdout == (
        'virtualservice.networking.istio.io "app-backend" deleted\n'
    )
    missing = box.kubectl("get", "vs", "app-backend", "-n", "istio", check=False)
    assert missing.returncode == 1
    assert missing.stderr == (
        'Error from server (NotFound): virtualservices.networking.istio.io "app-backend" '
        "not found\n"
    )
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, namespace: istio}\n"
    box.kubectl("create", "-f", "-", input=manifest)
    twice = box.kubectl("create", "-f", "-", input=manifest, check=False)
    assert twice.returncode == 1
    assert (
        'Error from server (AlreadyExists): error when creating "STDIN": '
        'configmaps "cm" already exists'
    ) in twice.stderr
    nowhere = box.kubectl("create", "configmap", "x", "-n", "nowhere", check=False)
    assert 'namespaces "nowhere" not found' in nowhere.stderr


def test_python_client_crud_conflict_and_401(sandbox: Sandbox):
    from kubernetes import client

    api = sandbox.client()
    core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
    core.create_namespace({"metadata": {"name": "istio"}})
    docs = list(yaml.safe_load_all(APP_MANIFESTS))
    dep = apps.create_namespaced_deployment("istio", docs[1])
    assert dep.metadata.generation == 1 and dep.spec.replicas == 1
    created = custom.create_namespaced_custom_object(
        "networking.istio.io", "v1beta1", "istio", "virtualservices", docs[3]
    )
    assert created["apiVersion"] == "networking.istio.io/v1beta1"
    listed = custom.list_namespaced_custom_object(
        "networking.istio.io", "v1", "istio", "virtualservices"
    )
    assert listed["kind"] == "VirtualServiceList" and len(listed["items"]) == 1
    assert listed["items"][0]["kind"] == "VirtualService"
    custom.patch_namespaced_custom_object(
        "networking.istio.io",
        "v1",
        "istio",
        "virtualservices",
        "app-backend",
        [{"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 70}],
        _content_type="application/json-patch+json",
    )
    # Replacing with a stale resourceVersion is a 409 Conflict.
    stale = apps.read_namespaced_deployment("app-backend-v1", "istio")
    apps.patch_namespaced_deployment("app-backend-v1", "istio", {"spec": {"replicas": 2}})
    stale.spec.replicas = 5
    with pytest.raises(client.ApiException) as conflict:
        apps.replace_namespaced_deployment("app-backend-v1", "istio", stale)
    assert conflict.value.status == 409
    assert json.loads(conflict.value.body)["reason"] == "Conflict"
    assert apps.read_namespaced_deployment_scale("app-backend-v1", "istio").spec.replicas == 2
    pods = core.list_pod_for_all_namespaces(label_selector="app=nothing")
    assert pods.items == []
    with pytest.raises(client.ApiException) as missing:
        core.read_namespaced_service("nope", "istio")
    assert missing.value.status == 404
    # Without the token: 401 for everything.
    status, _, body = raw_get(sandbox, "/api/v1/namespaces", token=None)
    assert (status, body["reason"]) == (401, "Unauthorized")
    status, _, _ = raw_get(sandbox, "/version", token="wrong")
    assert status == 401


def test_kubectl_without_the_token_is_unauthorized(kubectl_sandbox: Sandbox):
    box = kubectl_sandbox
    config = json.loads(box.kubeconfig.read_text())
    config["users"][0]["user"]["token"] = "wrong"
    box.kubeconfig.write_text(json.dumps(config))
    result = box.kubectl("get", "ns", check=False)
    assert result.returncode == 1 and "You must be logged in to the server" in result.stderr


def test_python_watch_sees_added_modified_deleted(sandbox: Sandbox):
    from kubernetes import client, watch

    core = client.CoreV1Api(sandbox.client())
    _, resource_version = sandbox.call(sandbox.store.list, resources.CONFIGMAPS, "default")
    seen: list[tuple[str, str, str]] = []
    stream = watch.Watch()

    def collect() -> None:
        for event in stream.stream(
            core.list_namespaced_config_map,
            "default",
            resource_version=resource_version,
            timeout_seconds=10,
        ):
            obj = event["object"]
            seen.append((event["type"], obj.metadata.name, obj.data["k"]))
            if event["type"] == "DELETED":
                stream.stop()

    watcher = threading.Thread(target=collect)
    watcher.start()
    core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}, "data": {"k": "1"}})
    core.patch_namespaced_config_map("cm", "default", {"data": {"k": "2"}})
    other = {"metadata": {"name": "x"}, "data": {"k": "0"}}
    core.create_namespaced_config_map("kube-system", other)  # another namespace: not seen
    core.delete_namespaced_config_map("cm", "default")
    watcher.join(10)
    assert not watcher.is_alive()
    assert seen == [("ADDED", "cm", "1"), ("MODIFIED", "cm", "2"), ("DELETED", "cm", "2")]


def test_watch_without_resource_version_starts_with_existing_objects(sandbox: Sandbox):
    from kubernetes import client, watch

    core = client.CoreV1Api(sandbox.client())
    sandbox.call(sandbox.store.create, resources.CONFIGMAPS, {"metadata": {"name": "old"}})
    events = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(core.list_namespaced_config_map, "default", timeout_seconds=1)
    ]
    # Every namespace has the ConfigMap kube-root-ca.crt, as on a real cluster.
    assert events == [("ADDED", "kube-root-ca.crt"), ("ADDED", "old")]


def test_kubectl_wait_for_condition(kubectl_sandbox: Sandbox):
    box = kubectl_sandbox
    box.apply()
    box.call(box.store.create, resources.PODS, ready_pod("web", {"app": "web"}))
    waiting = box.popen("wait", "--for=condition=Ready", "pod/web", "-n", "istio", "--timeout=10s")
    time.sleep(0.5)  # kubectl is now watching
    assert waiting.poll() is None
    box.call(box.store.update_status, resources.PODS, "istio", "web", POD_READY)
    stdout, stderr = waiting.communicate(timeout=15)
    assert waiting.returncode == 0, stderr
    assert stdout == "pod/web condition met\n"
    timed_out = box.kubectl(
        "wait", "--for=condition=Nope", "pod/web", "-n", "istio", "--timeout=1s", check=False
    )
    assert timed_out.returncode == 1 and "timed out waiting for the condition" in timed_out.stderr


def test_rollout_status_and_restart(kubectl_sandbox: Sandbox):
    box = kubectl_sandbox
    box.apply()
    status_cmd = ("rollout", "status", "deployment/app-backend-v1", "-n", "istio", "--timeout=10s")
    rolling = box.popen(*status_cmd)
    time.sleep(0.5)
    assert rolling.poll() is None
    available = {
        "observedGeneration": 1,
        "replicas": 1,
        "updatedReplicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
    }
    box.call(box.store.update_status, resources.DEPLOYMENTS, "istio", "app-backend-v1", available)
    stdout, stderr = rolling.communicate(timeout=15)
    assert rolling.returncode == 0, stderr
    assert stdout.endswith('deployment "app-backend-v1" successfully rolled out\n')
    restarted = box.kubectl("rollout", "restart", "deployment/app-backend-v1", "-n", "istio")
    assert restarted.stdout == "deployment.apps/app-backend-v1 restarted\n"
    dep = box.call(box.store.get, resources.DEPLOYMENTS, "istio", "app-backend-v1")
    assert dep["metadata"]["generation"] == 2
    assert "kubectl.kubernetes.io/restartedAt" in dep["spec"]["template"]["metadata"]["annotations"]
    # generation 2 not observed yet: not rolled out.
    pending = box.kubectl(*status_cmd[:-1], "--timeout=1s", check=False)
    assert pending.returncode == 1 and "Waiting for deployment spec update" in pending.stdout
    scaled = box.kubectl("scale", "deployment/app-backend-v1", "-n", "istio", "--replicas=3")
    assert scaled.stdout == "deployment.apps/app-backend-v1 scaled\n"
    dep = box.call(box.store.get, resources.DEPLOYMENTS, "istio", "app-backend-v1")
    assert dep["spec"]["replicas"] == 3


def test_namespace_delete_cascades(kubectl_sandbox: Sandbox):
    box = kubectl_sandbox
    box.apply()
    deleted = box.kubectl("delete", "namespace", "istio")
    assert deleted.stdout == 'namespace "istio" deleted\n'
    assert box.call(box.store.list, resources.VIRTUALSERVICES)[0] == []
    assert box.call(box.store.list, resources.DEPLOYMENTS)[0] == []
    gone = box.kubectl("get", "ns", "istio", check=False)
    assert 'namespaces "istio" not found' in gone.stderr


def test_delete_file_with_graceful_namespace_termination(tmp_path: Path):
    if KUBECTL is None:
        pytest.skip("kubectl not found")
    box = Sandbox(tmp_path, namespace_termination=0.3)
    try:
        box.apply()
        out = box.kubectl("delete", "-f", "-", input=APP_MANIFESTS).stdout.splitlines()
        assert out == [
            'namespace "istio" deleted',
            'deployment.apps "app-backend-v1" deleted',
            'service "app-backend" deleted',
            'virtualservice.networking.istio.io "app-backend" deleted',
        ]
        assert not box.call(box.store.exists, resources.NAMESPACES, None, "istio")
    finally:
        box.close()


def test_crd_validation_hook_422(tmp_path: Path):
    if KUBECTL is None:
        pytest.skip("kubectl not found")

    def validate(obj: dict[str, Any]) -> list[str]:
        if obj.get("kind") == "VirtualService" and not obj.get("spec", {}).get("hosts"):
            return ["spec.hosts: Required value"]
        return []

    box = Sandbox(tmp_path, validate)
    try:
        box.apply()
        bad = (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
            "metadata: {name: bad, namespace: istio}\nspec: {http: []}\n"
        )
        result = box.kubectl("apply", "-f", "-", input=bad, check=False)
        assert result.returncode == 1
        assert 'The VirtualService "bad" is invalid: spec.hosts: Required value' in result.stderr
        emptied = box.kubectl(
            "patch",
            "vs",
            "app-backend",
            "-n",
            "istio",
            "--type=json",
            "-p",
            '[{"op":"remove","path":"/spec/hosts"}]',
            check=False,
        )
        assert 'The VirtualService "app-backend" is invalid' in emptied.stderr
    finally:
        box.close()


def test_server_side_apply_replace_and_dry_run(kubectl_sandbox: Sandbox):
    box = kubectl_sandbox
    out = box.kubectl("apply", "--server-side", "-f", "-", input=APP_MANIFESTS).stdout
    assert "virtualservice.networking.istio.io/app-backend serverside-applied" in out
    assert box.call(box.store.exists, resources.VIRTUALSERVICES, "istio", "app-backend")
    replaced = box.kubectl(
        "replace", "-f", "-", input=APP_MANIFESTS.replace("weight: 90", "weight: 80")
    )
    assert "virtualservice.networking.istio.io/app-backend replaced" in replaced.stdout
    dry = box.kubectl("create", "configmap", "dry", "-n", "istio", "--dry-run=server")
    assert "(server dry run)" in dry.stdout
    assert not box.call(box.store.exists, resources.CONFIGMAPS, "istio", "dry")


def test_exec(kubectl_sandbox: Sandbox):
    box = kubectl_sandbox
    box.apply()
    box.call(box.store.create, resources.PODS, ready_pod("web", {"app": "web"}))
    result = box.kubectl(
        "exec", "-n", "istio", "web", "--", "sh", "-c", "echo hi; echo err >&2; exit 3", check=False
    )
    assert result.returncode == 3
    assert result.stdout == "hi\n"
    assert result.stderr.startswith("err\n")
    assert "command terminated with exit code 3" in result.stderr
    piped = box.kubectl("exec", "-i", "-n", "istio", "web", "--", "cat", input="abc\n")
    assert piped.stdout == "abc\n"
    big = "x" * 300_000 + "\n"
    assert (
        box.kubectl("exec", "-i", "-n", "istio", "web", "--", "wc", "-c", input=big).stdout.strip()
        == "300001"
    )
    wrong = box.kubectl("exec", "-n", "istio", "web", "-c", "nope", "--", "true", check=False)
    assert wrong.returncode == 1 and "container nope is not valid for pod web" in wrong.stderr
    box.call(box.store.create, resources.PODS, ready_pod("two", {}, ("app", "forbidden")))
    refused = box.kubectl(
        "exec", "-n", "istio", "two", "-c", "forbidden", "--", "true", check=False
    )
    assert refused.returncode == 1
    assert refused.stderr == "error: exec into forbidden is not allowed\n"
    missing = box.kubectl("exec", "-n", "istio", "web", "--", "/no/such/binary", check=False)
    assert missing.returncode != 0 and "/no/such/binary" in missing.stderr


def test_exec_with_the_python_client(sandbox: Sandbox):
    from kubernetes import client
    from kubernetes.stream import stream

    sandbox.call(sandbox.store.create, resources.NAMESPACES, {"metadata": {"name": "istio"}})
    sandbox.call(sandbox.store.create, resources.PODS, ready_pod("web", {"app": "web"}))
    core = client.CoreV1Api(sandbox.client())
    output = stream(
        core.connect_get_namespaced_pod_exec,
        "web",
        "istio",
        command=["sh", "-c", "echo out; echo err >&2"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    )
    assert sorted(output.splitlines()) == ["err", "out"]
    session = stream(
        core.connect_get_namespaced_pod_exec,
        "web",
        "istio",
        command=["sh", "-c", "read line; echo got $line; exit 4"],
        stderr=True,
        stdin=True,
        stdout=True,
        tty=False,
        _preload_content=False,
    )
    session.write_stdin("hello\n")
    session.run_forever(timeout=10)
    assert session.read_stdout().strip() == "got hello"
    assert session.returncode == 4
    session.close()


def test_logs(kubectl_sandbox: Sandbox):
    box = kubectl_sandbox
    box.apply()
    box.call(box.store.create, resources.PODS, ready_pod("web-1", {"app": "web"}))
    box.call(box.store.create, resources.PODS, ready_pod("web-2", {"app": "web"}))
    assert box.kubectl("logs", "web-1", "-n", "istio").stdout == (
        "web-1/app line 1\nweb-1/app line 2\nweb-1/app line 3\n"
    )
    assert box.kubectl("logs", "web-1", "-n", "istio", "--tail=1").stdout == "web-1/app line 3\n"
    by_label = box.kubectl("logs", "-n", "istio", "-l", "app=web", "--tail=1").stdout
    assert sorted(by_label.splitlines()) == ["web-1/app line 3", "web-2/app line 3"]
    from kubernetes import client

    core = client.CoreV1Api(box.client())
    assert core.read_namespaced_pod_log("web-2", "istio", tail_lines=2) == (
        "web-2/app line 2\nweb-2/app line 3\n"
    )
    with pytest.raises(client.ApiException) as missing:
        core.read_namespaced_pod_log("nope", "istio")
    assert missing.value.status == 404
    box.call(box.store.create, resources.PODS, ready_pod("gone", {"app": "gone"}))
    with pytest.raises(client.ApiException) as gone:
        core.read_namespaced_pod_log("gone", "istio")
    assert gone.value.status == 404 and json.loads(gone.value.body)["message"] == (
        'pods "gone" not found'
    )


def test_stop_ends_open_watches(sandbox: Sandbox):
    from kubernetes import client

    core = client.CoreV1Api(sandbox.client())
    response = core.list_namespaced_secret("default", watch=True, _preload_content=False)
    started = time.monotonic()
    sandbox.run(sandbox.server.stop())
    assert response.read() == b""
    assert time.monotonic() - started < 3


def test_http_errors_and_watch_details(sandbox: Sandbox):
    box = sandbox
    box.call(
        box.store.create, resources.CONFIGMAPS, {"metadata": {"name": "a", "labels": {"x": "1"}}}
    )
    cms = "/api/v1/namespaces/default/configmaps"

    def status_of(path: str, **kwargs: Any) -> tuple[int, str]:
        code, _, body = raw(box, path, **kwargs)
        return code, json.loads(body)["reason"]

    code, _, created = raw(box, cms, method="POST", body=b'{"metadata":{"name":"new"}}')
    assert code == 201 and json.loads(created)["metadata"]["name"] == "new"
    assert status_of(f"{cms}/a", method="POST", body=b"{}") == (405, "MethodNotAllowed")
    assert status_of(f"{cms}/a", method="PATCH", body=b"{}", content_type="text/plain") == (
        415,
        "UnsupportedMediaType",
    )
    assert status_of(cms, method="POST", body=b"{not json") == (400, "BadRequest")
    mismatch = json.dumps({"metadata": {"name": "b", "namespace": "kube-system"}}).encode()
    assert status_of(cms, method="POST", body=mismatch) == (400, "BadRequest")
    assert status_of(f"{cms}?labelSelector=x%20in%20y") == (400, "BadRequest")
    assert status_of("/api/v1/namespaces/default/pods/nope/exec?command=true") == (
        404,
        "NotFound",
    )
    # Tables for kubectl get, with the object metadata kubectl needs for -A and labels.
    table_accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    code, content_type, table = raw_get(box, cms, accept=table_accept)
    assert code == 200 and content_type is not None and "as=Table" in content_type
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert table["rows"][0]["cells"][:2] == ["a", 0]
    assert table["rows"][0]["object"]["metadata"]["labels"] == {"x": "1"}
    # Chunked lists.
    box.call(box.store.delete, resources.CONFIGMAPS, "default", "new")
    box.call(box.store.create, resources.CONFIGMAPS, {"metadata": {"name": "b"}})
    _, _, page = raw_get(box, f"{cms}?limit=2")
    assert [i["metadata"]["name"] for i in page["items"]] == ["a", "b"]
    assert page["metadata"]["remainingItemCount"] == 1
    _, _, rest = raw_get(box, f"{cms}?limit=2&continue={page['metadata']['continue']}")
    assert [i["metadata"]["name"] for i in rest["items"]] == ["kube-root-ca.crt"]
    assert "continue" not in rest["metadata"]
    # Streaming lists: initial events, then the bookmark that ends them.
    code, _, body = raw(
        box, f"{cms}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&timeoutSeconds=1"
    )
    events = [json.loads(line) for line in body.splitlines()]
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("ADDED", "kube-root-ca.crt"),
        ("BOOKMARK", None),
    ]
    assert events[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    # A resourceVersion the history no longer reaches: 410 Expired, clients relist.
    (box.home / "small").mkdir()
    small = Sandbox(box.home / "small", history=2)
    try:
        for name in ("c", "d", "e"):
            small.call(small.store.create, resources.CONFIGMAPS, {"metadata": {"name": name}})
        code, _, body = raw(small, f"{cms}?watch=1&resourceVersion=1&timeoutSeconds=1")
        event = json.loads(body.splitlines()[0])
        assert event["type"] == "ERROR" and event["object"]["code"] == 410
    finally:
        small.close()


def test_subresources_and_collections(kubectl_sandbox: Sandbox):
    from kubernetes import client

    box = kubectl_sandbox
    box.apply()
    status_patch = '{"status":{"replicas":1,"readyReplicas":1}}'
    patched = box.kubectl(
        "patch",
        "deployment",
        "app-backend-v1",
        "-n",
        "istio",
        "--subresource=status",
        "--type=merge",
        "-p",
        status_patch,
    )
    assert patched.stdout == "deployment.apps/app-backend-v1 patched\n"
    ready = box.kubectl(
        "get", "deploy", "app-backend-v1", "-n", "istio", "-o", "jsonpath={.status.readyReplicas}"
    )
    assert ready.stdout == "1"
    apps = client.AppsV1Api(box.client())
    scale = apps.read_namespaced_deployment_scale("app-backend-v1", "istio")
    assert (scale.spec.replicas, scale.status.selector) == (1, "app=app-backend,version=v1")
    scale.spec.replicas = 4
    assert (
        apps.replace_namespaced_deployment_scale("app-backend-v1", "istio", scale).spec.replicas
        == 4
    )
    core = client.CoreV1Api(box.client())
    for name in ("a", "b"):
        core.create_namespaced_config_map(
            "istio", {"metadata": {"name": name, "labels": {"t": "1"}}}
        )
    core.delete_collection_namespaced_config_map("istio", label_selector="t=1")
    left = core.list_namespaced_config_map("istio").items
    assert [c.metadata.name for c in left] == ["kube-root-ca.crt"]


def test_follow_logs(kubectl_sandbox: Sandbox):
    box = kubectl_sandbox
    box.apply()
    box.call(box.store.create, resources.PODS, ready_pod("web", {"app": "web"}))
    followed = box.kubectl("logs", "-f", "web", "-n", "istio")
    assert followed.stdout.splitlines()[-1] == "web/app following"


def test_human_duration():
    assert [
        human_duration(s) for s in (0, 59, 119, 125, 600, 3 * 3600 + 60, 9 * 3600, 3 * 86400)
    ] == [
        "0s",
        "59s",
        "119s",
        "2m5s",
        "10m",
        "3h1m",
        "9h",
        "3d",
    ]
