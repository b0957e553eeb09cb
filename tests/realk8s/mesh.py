"""A stand-in for Istio's data plane on the real control plane, and the apps behind it.

The control plane has no kubelet and no Envoy sidecars, so nothing would answer the curl
that a traffic check runs in the tester pod. :class:`Mesh` answers for the mesh, from
what the real API server holds:

* each namespace gets an HTTP forward proxy on loopback; the node agent runs a pod's exec'ed
  commands with ``http_proxy`` pointing at it (a sidecar intercepting the pod's traffic);
* a request for ``http://<service>[.<namespace>...]/`` is routed as Istio would: the
  VirtualService of that host picks a destination by weight (Envoy's weighted clusters,
  here a smooth weighted round-robin so the split is exact), the DestinationRule's subset
  labels and the Service's selector pick the Ready pods, and one of them answers; no Ready
  pod is ``503 no healthy upstream``; a request for a pod IP goes to that pod;
* every pod answers with the real demo application (``app_backend.server.create_app``) for
  its ``version`` label and ``BUG_AFTER``, served in-process on loopback: v1 really hangs
  after its pool is used up, and a hung request ends in ``504 upstream request timeout``
  after the ``x-envoy-upstream-rq-timeout-ms`` the caller asked for, as Envoy does.

The routing reads the API through kubelab's ``Kube`` at most every ``refresh`` seconds per
namespace, about as fresh as istiod's pushes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from controlplane import free_port

from app_backend.server import create_app
from kubelab.cluster.kube import Kube

ISTIO = "networking.istio.io/v1"


@dataclass
class Snapshot:
    at: float
    services: dict[str, dict[str, Any]]
    virtual_services: list[dict[str, Any]]
    destination_rules: list[dict[str, Any]]
    pods: list[dict[str, Any]]


def _ready(pod: dict[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _pod_ip(pod: dict[str, Any]) -> str | None:
    ip = (pod.get("status") or {}).get("podIP")
    return str(ip) if ip else None


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj.get("spec") or {}
    return spec


def _matches(labels: dict[str, str], selector: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@dataclass
class Mesh:
    kube: Kube
    refresh: float = 0.5
    proxies: dict[str, int] = field(default_factory=dict)
    requests: int = 0

    def __post_init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mesh", daemon=True)
        self.thread.start()
        self._snapshots: dict[str, Snapshot] = {}
        self._apps: dict[str, tuple[web.AppRunner, int]] = {}
        self._runners: list[web.AppRunner] = []
        self._turns: dict[tuple[str, str], list[float]] = {}
        self._rr: dict[tuple[str, ...], int] = {}
        self._lock = asyncio.Lock()
        self._reading: dict[str, asyncio.Lock] = {}

    def _run(self, coroutine: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def proxy_url(self, namespace: str) -> str:
        """The forward proxy of pods in ``namespace`` (started on first use)."""
        if namespace not in self.proxies:
            self.proxies[namespace] = self._run(self._start_proxy(namespace))
        return f"http://127.0.0.1:{self.proxies[namespace]}"

    def close(self) -> None:
        async def stop() -> None:
            for runner in self._runners:
                await runner.cleanup()

        try:
            self._run(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    # -- the proxy -----------------------------------------------------------------------------

    async def _start_proxy(self, namespace: str) -> int:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._handle(namespace, request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self._runners.append(runner)
        return port

    async def _snapshot(self, namespace: str) -> Snapshot:
        cached = self._snapshots.get(namespace)
        if cached is not None and time.monotonic() - cached.at < self.refresh:
            return cached
        lock = self._reading.setdefault(namespace, asyncio.Lock())
        async with lock:  # one read at a time: a burst of requests shares it
            cached = self._snapshots.get(namespace)
            if cached is not None and time.monotonic() - cached.at < self.refresh:
                return cached
            return await self._read(namespace)

    async def _read(self, namespace: str) -> Snapshot:
        def read() -> Snapshot:
            services = {
                s["metadata"]["name"]: s for s in self.kube.list("v1", "Service", namespace)
            }
            try:
                vss = self.kube.list(ISTIO, "VirtualService", namespace)
                drs = self.kube.list(ISTIO, "DestinationRule", namespace)
            except Exception:
                vss, drs = [], []
            pods = self.kube.list("v1", "Pod", namespace)
            return Snapshot(time.monotonic(), services, vss, drs, pods)

        snapshot = await asyncio.to_thread(read)
        self._snapshots[namespace] = snapshot
        return snapshot

    def _pick_weighted(self, key: tuple[str, str], weights: list[float]) -> int:
        """Smooth weighted round-robin (nginx's): exact proportions, interleaved."""
        current = self._turns.get(key)
        if current is None or len(current) != len(weights):
            current = [0.0] * len(weights)
        total = sum(weights)
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        self._turns[key] = current
        return best

    def _round_robin(self, key: tuple[str, ...], count: int) -> int:
        turn = self._rr.get(key, 0)
        self._rr[key] = turn + 1
        return turn % count

    async def _route(self, client_ns: str, host: str) -> dict[str, Any] | str:
        """The pod that answers a request for ``host``, or why none does (503 text)."""
        try:
            ipaddress.ip_address(host)
            is_ip = True
        except ValueError:
            is_ip = False
        if is_ip:
            snap = await self._snapshot(client_ns)
            for pod in snap.pods:
                if _pod_ip(pod) == host:
                    return pod
            return "no healthy upstream"
        parts = host.split(".")
        service_name = parts[0]
        namespace = parts[1] if len(parts) > 1 and parts[1] != "svc" else client_ns
        snap = await self._snapshot(namespace)
        service = snap.services.get(service_name)
        if service is None:
            return f"no service {service_name} in {namespace}"
        selector = (service.get("spec") or {}).get("selector") or {}
        names = {
            service_name,
            f"{service_name}.{namespace}",
            f"{service_name}.{namespace}.svc",
            f"{service_name}.{namespace}.svc.cluster.local",
        }
        subset_labels: dict[str, str] = {}
        vs = next(
            (v for v in snap.virtual_services if set(_spec(v).get("hosts") or []) & names), None
        )
        if vs is not None:
            http = ((vs.get("spec") or {}).get("http") or [{}])[0]
            routes = http.get("route") or []
            if not routes:
                return "no healthy upstream"
            weights = [float(r.get("weight", 100 if len(routes) == 1 else 0)) for r in routes]
            if sum(weights) <= 0:
                return "no healthy upstream"
            chosen = routes[self._pick_weighted((namespace, vs["metadata"]["name"]), weights)]
            destination = chosen.get("destination") or {}
            subset = destination.get("subset")
            if subset:
                dr = next(
                    (d for d in snap.destination_rules if _spec(d).get("host") in names), None
                )
                subsets = {
                    s.get("name"): s.get("labels") or {}
                    for s in ((dr or {}).get("spec") or {}).get("subsets") or []
                }
                if subset not in subsets:
                    return "no healthy upstream"
                subset_labels = subsets[subset]
        pods = [
            p
            for p in snap.pods
            if _ready(p)
            and _matches((p["metadata"].get("labels") or {}), {**selector, **subset_labels})
        ]
        if not pods:
            return "no healthy upstream"
        key = (namespace, service_name, repr(sorted(subset_labels.items())))
        return pods[self._round_robin(key, len(pods))]

    async def _app_port(self, pod: dict[str, Any]) -> int:
        uid = pod["metadata"]["uid"]
        async with self._lock:
            if uid not in self._apps:
                labels = pod["metadata"].get("labels") or {}
                env: dict[str, str] = {}
                for container in (pod.get("spec") or {}).get("containers") or []:
                    for item in container.get("env") or []:
                        if "value" in item:
                            env[item["name"]] = str(item["value"])
                version = env.get("APP_VERSION") or labels.get("version") or "v1"
                app = create_app(version, int(env.get("BUG_AFTER", "30")))
                runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
                await runner.setup()
                port = free_port()
                await web.TCPSite(runner, "127.0.0.1", port).start()
                self._runners.append(runner)
                self._apps[uid] = (runner, port)
            return self._apps[uid][1]

    async def _handle(self, client_ns: str, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        host = request.url.host or request.host.split(":")[0]
        target = await self._route(client_ns, host)
        if isinstance(target, str):
            return web.Response(status=503, text=target)
        port = await self._app_port(target)
        budget_ms = request.headers.get("x-envoy-upstream-rq-timeout-ms", "15000")
        try:
            budget = max(int(budget_ms), 1) / 1000
        except ValueError:
            budget = 15.0
        started = time.monotonic()
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=budget)) as session,
                session.get(f"http://127.0.0.1:{port}{request.path_qs}") as answer,
            ):
                body = await answer.read()
                elapsed = int((time.monotonic() - started) * 1000)
                return web.Response(
                    status=answer.status,
                    body=body,
                    content_type=answer.content_type,
                    headers={"x-envoy-upstream-service-time": str(elapsed)},
                )
        except TimeoutError:
            return web.Response(status=504, text="upstream request timeout")
        except aiohttp.ClientError:
            return web.Response(status=503, text="upstream connect error or disconnect/reset")


# -- sidecar injection -------------------------------------------------------------------------

INJECTOR = "kubelab-test-sidecar-injector"
PROXY_IMAGE = "docker.io/istio/proxyv2:1.30.3"


#: The sidecars' security contexts as istiod 1.30 injects them with ``pilot.cni.enabled``
#: (istio-discovery/files/injection-template.yaml, global.proxy.privileged false): the init
#: container only validates the redirection the CNI node agent made, with no capabilities.
NON_ROOT_NO_CAPABILITIES = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "privileged": False,
    "readOnlyRootFilesystem": True,
    "runAsGroup": 1337,
    "runAsNonRoot": True,
    "runAsUser": 1337,
}


def sidecar_patch(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch Istio's injector (1.30 with Istio CNI, on a cluster without native
    sidecars) makes: ``istio-validation`` first among the init containers, ``istio-proxy``
    last among the containers, and the annotations kubectl and Istio's tools read."""
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    containers = spec.get("containers") or []
    init = {
        "name": "istio-validation",
        "image": PROXY_IMAGE,
        "args": [
            "istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
            "--run-validation", "--skip-rule-apply",
        ],
        "securityContext": NON_ROOT_NO_CAPABILITIES,
    }  # fmt: skip
    proxy = {
        "name": "istio-proxy",
        "image": PROXY_IMAGE,
        "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
        "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
        "securityContext": NON_ROOT_NO_CAPABILITIES,
    }
    annotations = {
        **(meta.get("annotations") or {}),
        "sidecar.istio.io/status": (
            '{"initContainers":["istio-validation"],"containers":["istio-proxy"]}'
        ),
        "kubectl.kubernetes.io/default-container": containers[0]["name"] if containers else "",
    }
    labels = {**(meta.get("labels") or {}), "security.istio.io/tlsMode": "istio"}
    patch: list[dict[str, Any]] = []
    if spec.get("initContainers"):
        patch.append({"op": "add", "path": "/spec/initContainers/0", "value": init})
    else:
        patch.append({"op": "add", "path": "/spec/initContainers", "value": [init]})
    patch += [
        {"op": "add", "path": "/spec/containers/-", "value": proxy},
        {"op": "add", "path": "/metadata/annotations", "value": annotations},
        {"op": "add", "path": "/metadata/labels", "value": labels},
    ]
    return patch


class Injector:
    """Istio's sidecar injector as a real mutating admission webhook of the API server."""

    def __init__(self, plane: Any) -> None:
        self.plane = plane
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="injector", daemon=True)
        self.thread.start()
        self.injected: list[str] = []
        self._runner: web.AppRunner | None = None

    def start(self, kube: Kube) -> Injector:
        import base64
        import ssl

        cert, key = self.plane.pki.issue("sidecar-injector", server=True)
        folder = self.plane.folder / "injector"
        folder.mkdir(exist_ok=True)
        (folder / "tls.crt").write_bytes(cert)
        (folder / "tls.key").write_bytes(key)
        (folder / "tls.key").chmod(0o600)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(folder / "tls.crt", folder / "tls.key")
        port = free_port()
        asyncio.run_coroutine_threadsafe(self._serve(context, port), self.loop).result(10)
        kube.apply(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": INJECTOR},
                "webhooks": [
                    {
                        "name": "sidecar-injector.istio.io",
                        "clientConfig": {
                            "url": f"https://127.0.0.1:{port}/inject",
                            "caBundle": base64.b64encode(self.plane.pki.ca_pem).decode(),
                        },
                        "rules": [
                            {
                                "operations": ["CREATE"],
                                "apiGroups": [""],
                                "apiVersions": ["v1"],
                                "resources": ["pods"],
                            }
                        ],
                        "namespaceSelector": {"matchLabels": {"istio-injection": "enabled"}},
                        "objectSelector": {
                            "matchExpressions": [
                                {
                                    "key": "sidecar.istio.io/inject",
                                    "operator": "NotIn",
                                    "values": ["false"],
                                }
                            ]
                        },
                        "sideEffects": "None",
                        "admissionReviewVersions": ["v1"],
                        "failurePolicy": "Fail",
                        "timeoutSeconds": 10,
                    }
                ],
            }
        )
        return self

    async def _serve(self, context: Any, port: int) -> None:
        app = web.Application()
        app.router.add_post("/inject", self._inject)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=context).start()

    async def _inject(self, request: web.Request) -> web.Response:
        import base64
        import json

        review = await request.json()
        req = review["request"]
        pod = req["object"]
        containers = {c["name"] for c in (pod.get("spec") or {}).get("containers") or []}
        response: dict[str, Any] = {"uid": req["uid"], "allowed": True}
        if "istio-proxy" not in containers:
            patch = sidecar_patch(pod)
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
            meta = pod["metadata"]
            self.injected.append(
                f"{req.get('namespace')}/{meta.get('name') or meta.get('generateName')}"
            )
        return web.json_response(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        )

    def close(self) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
