"""The sandbox's kubelet and deployment controller, and the glue to its Envoy.

It watches the in-memory store and makes the objects real on this machine:

* a Deployment gets Pod objects (labels from its template, an ``istio-proxy`` container
  and an ``istio-validation`` init container when its namespace has
  ``istio-injection=enabled``, as Istio's webhook adds them with Istio CNI), and
  every pod of an ``app-backend`` image runs as a real ``python -m app_backend`` process
  with the container's env; its Ready condition follows ``/readyz``;
* a changed pod template (``kubectl rollout restart``, a new env) rolls the pods over, a
  deleted pod is replaced, a process that exits is restarted (restartCount counts it);
* pods of other images (the in-mesh ``curl-test`` tester) run no process: they are Ready
  shells that ``kubectl exec`` runs commands in, on this machine, with ``http_proxy``
  pointing at the Envoy so ``curl http://app-backend/`` goes through the mesh;
* every change to Services, DestinationRules, VirtualServices, Gateways or pod readiness
  rebuilds the Envoy configuration.

PIDs of every process started are kept in ``processes.json`` so a crashed sandbox can be
cleaned up by the next ``up`` or ``down``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubelab import childenv
from kubelab.sandbox import ptyproc
from kubelab.sandbox.envoy import Endpoint as EnvoyEndpoint
from kubelab.sandbox.envoy import EnvoyProcess, build_config
from kubelab.sandbox.errors import ApiError
from kubelab.sandbox.resources import by_kind
from kubelab.sandbox.store import Store, WatchEvent
from kubelab.sandbox.telemetry import Destination, MeshView, Workload, parse_cluster

log = logging.getLogger("kubelab.sandbox")

APP_IMAGE_HINT = "app-backend"
SIDECAR = "istio-proxy"
VALIDATION = "istio-validation"  # the init container Istio CNI clusters inject
_ROUTING_KINDS = {"Service", "VirtualService", "DestinationRule", "Gateway", "Pod"}
_PR_SET_PDEATHSIG = 1


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM this child when the sandbox daemon dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _without_times(status: dict[str, Any]) -> Any:
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not k.endswith("Time")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(status)


# Kubernetes' alphabet for generated names and hashes (no vowels, no look-alikes).
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
REVISION = "deployment.kubernetes.io/revision"


def template_hash(template: dict[str, Any]) -> str:
    """The pod-template-hash of a template: 10 characters of Kubernetes' alphabet."""
    number = int(hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest(), 16)
    out = []
    for _ in range(10):
        number, digit = divmod(number, len(_ALPHABET))
        out.append(_ALPHABET[digit])
    return "".join(out)


def _suffix() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(5))


def _revision(obj: dict[str, Any]) -> int:
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION, "0")
    return int(value) if str(value).isdigit() else 0


def _controller_ref(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("kind") == kind and ref.get("controller"):
            return ref
    return None


@dataclass
class PodRuntime:
    """What runs for one pod: at most one app process."""

    namespace: str
    name: str
    env: dict[str, str]
    log_path: Path
    runs_app: bool
    port: int = 0
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    ready: bool = False
    started_at: str = field(default_factory=_now)
    task: asyncio.Task[None] | None = None


class Controller:
    """Reconciles Deployments into pods and processes, and pods into Envoy routes."""

    def __init__(
        self,
        store: Store,
        workdir: Path,
        envoy: EnvoyProcess,
        probe_interval: float = 0.2,
    ) -> None:
        self.store = store
        self.workdir = workdir
        self.envoy = envoy
        self.probe_interval = probe_interval
        self.pods: dict[tuple[str, str], PodRuntime] = {}
        self._queue: asyncio.Queue[WatchEvent] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._routing_dirty = asyncio.Event()
        self._stopping = False
        # Deployments are reconciled when their spec changes (generation), not when the
        # controller's own status writes come back as events.
        self._generations: dict[tuple[str, str], int] = {}
        # The last workload seen behind each Envoy cluster: metrics keep their labels while
        # a cluster has no ready endpoint for a moment (a restart, a failing probe).
        self._cluster_workloads: dict[str, Workload] = {}
        (workdir / "logs").mkdir(parents=True, exist_ok=True)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._queue = self.store.subscribe()
        self._tasks = [
            asyncio.create_task(self._events(), name="sandbox-events"),
            asyncio.create_task(self._routing(), name="sandbox-routing"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._queue is not None:
            self.store.unsubscribe(self._queue)
        await asyncio.gather(*(self._stop_pod(rt) for rt in list(self.pods.values())))
        self.pods.clear()
        self._write_pids()

    # -- events ----------------------------------------------------------------------------

    async def _events(self) -> None:
        assert self._queue is not None
        while True:
            event = await self._queue.get()
            try:
                await self._handle(event)
            except Exception:  # one bad object must not stop the sandbox
                log.exception("sandbox controller failed on %s", event.type)

    async def _handle(self, event: WatchEvent) -> None:
        kind = event.resource.kind
        obj = event.object
        meta = obj.get("metadata") or {}
        if kind == "Deployment":
            key = (meta.get("namespace", ""), meta.get("name", ""))
            if event.type == "DELETED":
                self._generations.pop(key, None)
                await self._delete_pods_of(*key)
            elif self._generations.get(key) != meta.get("generation"):
                self._generations[key] = meta.get("generation", 0)
                await self._reconcile_deployment(obj)
        elif kind == "ReplicaSet" and event.type == "DELETED" and not self._stopping:
            # A deleted ReplicaSet of a Deployment is made again, as the real controller does.
            ref = _controller_ref(obj, "Deployment")
            deployment = ref and self._get("apps/v1", "Deployment", meta["namespace"], ref["name"])
            if deployment:
                await self._reconcile_deployment(deployment)
        elif kind == "Pod":
            key = (meta.get("namespace", ""), meta.get("name", ""))
            if event.type == "DELETED":
                runtime = self.pods.pop(key, None)
                if runtime:
                    await self._stop_pod(runtime)
                    self._write_pids()
                owner = self._owner(obj)
                if owner and not self._stopping:
                    deployment = self._get("apps/v1", "Deployment", key[0], owner)
                    if deployment:
                        await self._reconcile_deployment(deployment)
            elif event.type == "ADDED" and key not in self.pods:
                await self._start_pod(obj)
        elif kind == "Namespace" and event.type == "DELETED":
            for key in [k for k in self.pods if k[0] == meta.get("name")]:
                await self._stop_pod(self.pods.pop(key))
            self._write_pids()
        if kind in _ROUTING_KINDS:
            self._routing_dirty.set()

    def _get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.store.get(by_kind(api_version, kind), namespace, name)
        except ApiError:
            return None

    def _owner(self, pod: dict[str, Any]) -> str | None:
        """The Deployment a pod belongs to, through its ReplicaSet."""
        ref = _controller_ref(pod, "ReplicaSet")
        if ref is None:
            return None
        replicaset = self._get("apps/v1", "ReplicaSet", pod["metadata"]["namespace"], ref["name"])
        owner = _controller_ref(replicaset or {}, "Deployment")
        return str(owner["name"]) if owner else None

    # -- deployments -----------------------------------------------------------------------

    async def _reconcile_deployment(self, deployment: dict[str, Any]) -> None:
        meta = deployment["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        spec = deployment.get("spec") or {}
        template = spec.get("template") or {}
        desired = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
        current_hash = template_hash(template)
        replicaset = self._sync_replicasets(deployment, current_hash, desired)
        pods_rt = by_kind("v1", "Pod")
        pods, _ = self.store.list(pods_rt, namespace)
        owned = [p for p in pods if self._owner(p) == name]
        current = [
            p for p in owned if p["metadata"]["labels"].get("pod-template-hash") == current_hash
        ]
        old = [p for p in owned if p not in current]
        for _ in range(desired - len(current)):
            self._create_pod(replicaset, template, current_hash)
        for extra in current[desired:]:
            self._delete_pod(namespace, extra["metadata"]["name"])
        # Roll over: old pods go once the new ones answer (maxUnavailable 0).
        new_ready = sum(
            1
            for p in current[:desired]
            if self.pods.get((namespace, p["metadata"]["name"]))
            and self.pods[(namespace, p["metadata"]["name"])].ready
        )
        if old and new_ready >= desired:
            for pod in old:
                self._delete_pod(namespace, pod["metadata"]["name"])
            self._scale_down_old(deployment, current_hash)
        self._update_deployment_status(deployment)

    def _replicasets_of(self, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        meta = deployment["metadata"]
        items, _ = self.store.list(by_kind("apps/v1", "ReplicaSet"), meta["namespace"])
        return [
            rs
            for rs in items
            if (_controller_ref(rs, "Deployment") or {}).get("uid") == meta.get("uid")
        ]

    def _sync_replicasets(
        self, deployment: dict[str, Any], hash_: str, desired: int
    ) -> dict[str, Any]:
        """The Deployment's ReplicaSet for its current template (made, or an old one taken
        back by a rollback), with the next revision; the Deployment says that revision."""
        rs_rt = by_kind("apps/v1", "ReplicaSet")
        meta = deployment["metadata"]
        namespace = meta["namespace"]
        owned = self._replicasets_of(deployment)
        current = next(
            (r for r in owned if r["metadata"].get("labels", {}).get("pod-template-hash") == hash_),
            None,
        )
        latest = max((_revision(r) for r in owned), default=0)
        revision = _revision(current) if current and _revision(current) == latest else latest + 1
        if current is None:
            spec = deployment.get("spec") or {}
            template = json.loads(json.dumps(spec.get("template") or {}))
            template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = (
                hash_
            )
            selector = json.loads(json.dumps(spec.get("selector") or {}))
            selector.setdefault("matchLabels", {})["pod-template-hash"] = hash_
            labels = dict((template.get("metadata") or {}).get("labels") or {})
            body = {
                "metadata": {
                    "name": f"{meta['name']}-{hash_}",
                    "namespace": namespace,
                    "labels": labels,
                    "annotations": {
                        REVISION: str(revision),
                        "deployment.kubernetes.io/desired-replicas": str(desired),
                        "deployment.kubernetes.io/max-replicas": str(desired + 1),
                    },
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": meta["name"],
                            "uid": meta.get("uid", ""),
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": {"replicas": desired, "selector": selector, "template": template},
            }
            current = self.store.create(rs_rt, body)
        else:
            patch: dict[str, Any] = {"spec": {"replicas": desired}}
            if revision != _revision(current):
                patch["metadata"] = {"annotations": {REVISION: str(revision)}}
            current = self.store.patch(
                rs_rt, namespace, current["metadata"]["name"], "merge", patch
            )
        if _revision(deployment) != revision:
            deployment_rt = by_kind("apps/v1", "Deployment")
            patch = {"metadata": {"annotations": {REVISION: str(revision)}}}
            with contextlib.suppress(ApiError):
                self.store.patch(deployment_rt, namespace, meta["name"], "merge", patch)
        self._prune_history(deployment, owned, current)
        return current

    def _scale_down_old(self, deployment: dict[str, Any], hash_: str) -> None:
        rs_rt = by_kind("apps/v1", "ReplicaSet")
        for rs in self._replicasets_of(deployment):
            if rs["metadata"].get("labels", {}).get("pod-template-hash") == hash_:
                continue
            if (rs.get("spec") or {}).get("replicas") != 0:
                with contextlib.suppress(ApiError):
                    self.store.patch(
                        rs_rt,
                        rs["metadata"]["namespace"],
                        rs["metadata"]["name"],
                        "merge",
                        {"spec": {"replicas": 0}},
                    )

    def _prune_history(
        self, deployment: dict[str, Any], owned: list[dict[str, Any]], current: dict[str, Any]
    ) -> None:
        """Old ReplicaSets beyond revisionHistoryLimit go, oldest first."""
        limit = (deployment.get("spec") or {}).get("revisionHistoryLimit", 10)
        old = [
            r
            for r in owned
            if r["metadata"]["name"] != current["metadata"]["name"]
            and (r.get("spec") or {}).get("replicas") == 0
        ]
        old.sort(key=_revision)
        for rs in old[: max(0, len(old) - int(limit))]:
            with contextlib.suppress(ApiError):
                self.store.delete(
                    by_kind("apps/v1", "ReplicaSet"),
                    rs["metadata"]["namespace"],
                    rs["metadata"]["name"],
                )

    def _create_pod(self, replicaset: dict[str, Any], template: dict[str, Any], hash_: str) -> None:
        meta = replicaset["metadata"]
        namespace = meta["namespace"]
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        labels["pod-template-hash"] = hash_
        spec = json.loads(json.dumps(template.get("spec") or {}))
        if self._injection_enabled(namespace):
            names = [c.get("name") for c in spec.get("containers") or []]
            if SIDECAR not in names:
                spec.setdefault("containers", []).append(
                    {
                        "name": SIDECAR,
                        "image": "docker.io/istio/proxyv2:sandbox",
                        "args": ["proxy", "sidecar"],
                    }
                )
                # What istiod injects beside it on kubelab's clusters (Istio CNI).
                spec.setdefault("initContainers", []).insert(
                    0,
                    {
                        "name": VALIDATION,
                        "image": "docker.io/istio/proxyv2:sandbox",
                        "args": ["istio-iptables", "--run-validation", "--skip-rule-apply"],
                    },
                )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{meta['name']}-{_suffix()}",
                "namespace": namespace,
                "labels": labels,
                "annotations": dict((template.get("metadata") or {}).get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": meta["name"],
                        "uid": meta.get("uid", ""),
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": spec,
        }
        self.store.create(by_kind("v1", "Pod"), pod)

    def _delete_pod(self, namespace: str, name: str) -> None:
        with contextlib.suppress(ApiError):
            self.store.delete(by_kind("v1", "Pod"), namespace, name)

    async def _delete_pods_of(self, namespace: str, deployment: str) -> None:
        pods, _ = self.store.list(by_kind("v1", "Pod"), namespace)
        for pod in pods:
            if self._owner(pod) == deployment:
                self._delete_pod(namespace, pod["metadata"]["name"])

    def _injection_enabled(self, namespace: str) -> bool:
        ns = self._get("v1", "Namespace", "", namespace) or {}
        labels = (ns.get("metadata") or {}).get("labels") or {}
        return labels.get("istio-injection") == "enabled"

    def _update_deployment_status(self, deployment: dict[str, Any]) -> None:
        meta = deployment["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        spec = deployment.get("spec") or {}
        desired = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
        current_hash = template_hash(spec.get("template") or {})
        pods, _ = self.store.list(by_kind("v1", "Pod"), namespace)
        owned = [p for p in pods if self._owner(p) == name]
        updated = [
            p for p in owned if p["metadata"]["labels"].get("pod-template-hash") == current_hash
        ]
        ready = [p for p in owned if self._pod_ready(namespace, p["metadata"]["name"])]
        updated_ready = [p for p in updated if p in ready]
        available = len(updated_ready) >= desired
        status = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": len(owned),
            "updatedReplicas": len(updated),
            "readyReplicas": len(ready),
            "availableReplicas": len(ready),
            "conditions": [
                {
                    "type": "Available",
                    "status": "True" if available else "False",
                    "reason": "MinimumReplicasAvailable"
                    if available
                    else "MinimumReplicasUnavailable",
                    "lastUpdateTime": _now(),
                    "lastTransitionTime": _now(),
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable" if available else "ReplicaSetUpdated",
                    "lastUpdateTime": _now(),
                    "lastTransitionTime": _now(),
                },
            ],
        }
        if len(owned) != len(ready):
            status["unavailableReplicas"] = len(owned) - len(ready)
        self._update_replicaset_status(deployment, owned, ready)
        if _without_times(status) == _without_times(deployment.get("status") or {}):
            return  # unchanged: no write, no event
        with contextlib.suppress(ApiError):
            self.store.update_status(by_kind("apps/v1", "Deployment"), namespace, name, status)

    def _update_replicaset_status(
        self, deployment: dict[str, Any], owned: list[dict[str, Any]], ready: list[dict[str, Any]]
    ) -> None:
        rs_rt = by_kind("apps/v1", "ReplicaSet")
        for rs in self._replicasets_of(deployment):
            hash_ = rs["metadata"].get("labels", {}).get("pod-template-hash")
            mine = [p for p in owned if p["metadata"]["labels"].get("pod-template-hash") == hash_]
            mine_ready = len([p for p in mine if p in ready])
            status: dict[str, Any] = {
                "replicas": len(mine),
                "fullyLabeledReplicas": len(mine),
                "observedGeneration": rs["metadata"].get("generation", 1),
            }
            if mine_ready:
                status["readyReplicas"] = status["availableReplicas"] = mine_ready
            with contextlib.suppress(ApiError):
                self.store.update_status(
                    rs_rt, rs["metadata"]["namespace"], rs["metadata"]["name"], status
                )

    def _pod_ready(self, namespace: str, name: str) -> bool:
        runtime = self.pods.get((namespace, name))
        return bool(runtime and runtime.ready)

    # -- pods and processes ----------------------------------------------------------------

    async def _start_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        containers = (pod.get("spec") or {}).get("containers") or []
        app = next((c for c in containers if APP_IMAGE_HINT in str(c.get("image", ""))), None)
        env = {
            e["name"]: str(e.get("value", ""))
            for e in (app or {}).get("env") or []
            if "name" in e and "valueFrom" not in e
        }
        runtime = PodRuntime(
            namespace, name, env, self.workdir / "logs" / f"{namespace}_{name}.log", app is not None
        )
        self.pods[(namespace, name)] = runtime
        runtime.task = asyncio.create_task(self._run_pod(runtime, pod), name=f"pod-{name}")

    async def _run_pod(self, runtime: PodRuntime, pod: dict[str, Any]) -> None:
        if not runtime.runs_app:
            runtime.ready = True
            self._set_pod_status(runtime, pod)
            return
        import aiohttp

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
            while not self._stopping:
                await self._spawn(runtime)
                self._set_pod_status(runtime, pod)
                assert runtime.process is not None
                while runtime.process.returncode is None:
                    ready = await self._probe(session, runtime.port)
                    if ready != runtime.ready:
                        runtime.ready = ready
                        self._set_pod_status(runtime, pod)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            runtime.process.wait(),
                            self.probe_interval if not runtime.ready else 2.0,
                        )
                runtime.ready = False
                runtime.restarts += 1
                self._set_pod_status(runtime, pod)
                await asyncio.sleep(min(10.0, 0.5 * runtime.restarts))

    async def _spawn(self, runtime: PodRuntime) -> None:
        runtime.port = free_port()
        env = {
            **childenv.for_pod(),
            **runtime.env,
            "HOST": "127.0.0.1",
            "PORT": str(runtime.port),
            "PYTHONUNBUFFERED": "1",
        }
        with open(runtime.log_path, "ab") as logfile:
            runtime.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "app_backend",
                env=env,
                stdout=logfile,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        runtime.started_at = _now()
        self._write_pids()

    async def _probe(self, session: Any, port: int) -> bool:
        try:
            async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                return bool(resp.status == 200)
        except Exception:
            return False

    async def _stop_pod(self, runtime: PodRuntime) -> None:
        if runtime.task is not None:
            runtime.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runtime.task
        process = runtime.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 3.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        runtime.ready = False

    def _set_pod_status(self, runtime: PodRuntime, pod: dict[str, Any]) -> None:
        containers = (pod.get("spec") or {}).get("containers") or []
        running = runtime.process is None or runtime.process.returncode is None
        statuses = [
            {
                "name": c.get("name", ""),
                "image": c.get("image", ""),
                "imageID": "",
                "ready": runtime.ready,
                "started": running,
                "restartCount": runtime.restarts,
                "state": {"running": {"startedAt": runtime.started_at}}
                if running
                else {"waiting": {"reason": "CrashLoopBackOff"}},
            }
            for c in containers
        ]
        ready = "True" if runtime.ready else "False"
        status = {
            "phase": "Running" if running else "Pending",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "hostIP": "127.0.0.1",
            "startTime": runtime.started_at,
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastTransitionTime": runtime.started_at,
                },
                {"type": "Initialized", "status": "True", "lastTransitionTime": runtime.started_at},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": _now()},
                {"type": "Ready", "status": ready, "lastTransitionTime": _now()},
            ],
            "containerStatuses": statuses,
        }
        try:
            self.store.update_status(by_kind("v1", "Pod"), runtime.namespace, runtime.name, status)
        except ApiError:
            return
        owner = self._owner(pod)
        if owner:
            deployment = self._get("apps/v1", "Deployment", runtime.namespace, owner)
            if deployment:
                self._schedule(self._reconcile_deployment(deployment))
        self._routing_dirty.set()

    def _schedule(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    def _write_pids(self) -> None:
        pids = [
            rt.process.pid
            for rt in self.pods.values()
            if rt.process is not None and rt.process.returncode is None
        ]
        if self.envoy.pid:
            pids.append(self.envoy.pid)
        # Where each pod's app listens, so a check can ask one version's pod directly.
        ports = {
            f"{rt.namespace}/{rt.name}": rt.port
            for rt in self.pods.values()
            if rt.runs_app and rt.port
        }
        path = self.workdir / "processes.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pids": pids, "ports": ports}))
        os.replace(tmp, path)

    # -- routing ---------------------------------------------------------------------------

    def endpoints(self) -> list[EnvoyEndpoint]:
        pods, _ = self.store.list(by_kind("v1", "Pod"))
        out = []
        for pod in pods:
            meta = pod["metadata"]
            runtime = self.pods.get((meta["namespace"], meta["name"]))
            if runtime is None or not runtime.runs_app or not runtime.port:
                continue
            out.append(
                EnvoyEndpoint(
                    namespace=meta["namespace"],
                    labels=dict(meta.get("labels") or {}),
                    host="127.0.0.1",
                    port=runtime.port,
                    ready=runtime.ready,
                )
            )
        return out

    def routing_objects(self) -> list[dict[str, Any]]:
        objects: list[dict[str, Any]] = []
        for api_version, kind in (
            ("v1", "Service"),
            ("networking.istio.io/v1", "VirtualService"),
            ("networking.istio.io/v1", "DestinationRule"),
            ("networking.istio.io/v1", "Gateway"),
        ):
            items, _ = self.store.list(by_kind(api_version, kind))
            for item in items:
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
            objects.extend(items)
        return objects

    def _listening(self) -> list[tuple[PodRuntime, dict[str, Any]]]:
        """Every pod whose app listens now, with its object."""
        return [
            (runtime, self._get("v1", "Pod", namespace, name) or {"metadata": {}})
            for (namespace, name), runtime in self.pods.items()
            if runtime.runs_app and runtime.port
        ]

    def app_pods(self) -> list[tuple[str, str, int, dict[str, str]]]:
        """(namespace, pod, port, labels) of every pod whose app listens now."""
        return [
            (rt.namespace, rt.name, rt.port, dict(pod["metadata"].get("labels") or {}))
            for rt, pod in self._listening()
        ]

    def mesh_view(self) -> MeshView:
        """Envoy's clusters and virtual hosts as Istio's telemetry labels name them."""
        config = self.envoy.config
        if config is None:
            return MeshView()
        by_port: dict[int, Workload] = {}
        for rt, pod in self._listening():
            labels = pod["metadata"].get("labels") or {}
            owner = self._owner(pod) or rt.name
            app, version = labels.get("app") or owner, labels.get("version") or "unknown"
            by_port[rt.port] = Workload(owner, rt.namespace, app, version)
        clusters: dict[str, Destination] = {}
        for cluster in config.clusters:
            parsed = parse_cluster(cluster["name"])
            if parsed is None:
                continue
            _, _, service, namespace = parsed
            ports = {
                lb["endpoint"]["address"]["socket_address"]["port_value"]
                for group in cluster.get("load_assignment", {}).get("endpoints", [])
                for lb in group.get("lb_endpoints", [])
            }
            workloads = {by_port[p] for p in ports if p in by_port}
            if len(workloads) == 1:
                self._cluster_workloads[cluster["name"]] = next(iter(workloads))
            elif workloads:  # several workloads behind one cluster: Istio would split them
                self._cluster_workloads.pop(cluster["name"], None)
            workload = self._cluster_workloads.get(cluster["name"])
            clusters[cluster["name"]] = Destination(service, namespace, workload)
        vhosts: dict[str, Destination | None] = {}
        for vhost in config.route_config.get("virtual_hosts", []):
            targets = set()
            for route in vhost.get("routes", []):
                action = route.get("route") or {}
                names = [action["cluster"]] if "cluster" in action else []
                weighted = action.get("weighted_clusters", {}).get("clusters", [])
                names += [c["name"] for c in weighted]
                for name in names:
                    parsed = parse_cluster(name)
                    if parsed is not None:
                        targets.add((parsed[2], parsed[3]))
            only = next(iter(targets)) if len(targets) == 1 else None
            vhosts[vhost["name"]] = Destination(only[0], only[1], None) if only else None
        return MeshView(clusters, vhosts)

    async def heal_envoy(self) -> bool:
        """Start Envoy again, serving the routes of now, if it died; True when it had to."""
        if self.envoy.running():
            return False
        code = self.envoy.returncode
        config = build_config(self.routing_objects(), self.endpoints())
        restarted = await self.envoy.restart(config)
        if restarted:
            pid = self.envoy.pid
            log.warning("Envoy had exited (code %s); started it again (pid %s)", code, pid)
            self._write_pids()
        return restarted

    async def _routing(self) -> None:
        """Rebuild Envoy's routes after changes, at most every 50 ms (changes come in bursts)."""
        while True:
            await self._routing_dirty.wait()
            await asyncio.sleep(0.05)
            self._routing_dirty.clear()
            config = build_config(self.routing_objects(), self.endpoints())
            for warning in config.warnings:
                log.info("routing: %s", warning)
            try:
                await self.envoy.update(config)
            except Exception:
                log.exception("could not update Envoy")

    # -- exec and logs ---------------------------------------------------------------------

    async def exec(
        self,
        namespace: str,
        pod: str,
        container: str | None,
        command: list[str],
        stdin: bool,
        tty: bool,
    ) -> asyncio.subprocess.Process | ptyproc.PtyProcess:
        """Run ``command`` for ``kubectl exec`` on this machine, inside the 'mesh': in its
        own process group, on a pseudo-terminal with ``-t``."""
        obj = self._get("v1", "Pod", namespace, pod)
        if obj is None:
            raise ApiError(404, "NotFound", f'pods "{pod}" not found')
        names = [c.get("name") for c in (obj.get("spec") or {}).get("containers") or []]
        if container and container not in names:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {pod}")
        proxy = f"http://127.0.0.1:{self.envoy.listen_port}"
        runtime = self.pods.get((namespace, pod))
        env = {**childenv.for_pod(), **(runtime.env if runtime else {})}
        env.update({"http_proxy": proxy, "HTTP_PROXY": proxy, "POD_NAME": pod, "HOSTNAME": pod})
        return await ptyproc.spawn(
            command,
            env=env,
            cwd=str(self.workdir),
            stdin=stdin,
            tty=tty,
            preexec=_die_with_parent,
        )

    def forward(self, namespace: str, pod: str, port: int) -> tuple[str, int] | None:
        """Where ``kubectl port-forward`` to a pod's port goes: its app process, when the
        app container declares that port (or declares none)."""
        runtime = self.pods.get((namespace, pod))
        obj = self._get("v1", "Pod", namespace, pod)
        if runtime is None or not runtime.runs_app or not runtime.port or obj is None:
            return None
        containers = (obj.get("spec") or {}).get("containers") or []
        app: dict[str, Any] = next(
            (c for c in containers if APP_IMAGE_HINT in str(c.get("image", ""))), {}
        )
        declared = {p.get("containerPort") for p in app.get("ports") or []}
        if declared and port not in declared:
            return None
        return "127.0.0.1", runtime.port

    async def logs(
        self, namespace: str, pod: str, container: str | None, follow: bool, tail_lines: int | None
    ) -> AsyncIterator[bytes]:
        runtime = self.pods.get((namespace, pod))
        if runtime is None:
            raise ApiError(404, "NotFound", f'pods "{pod}" not found')
        if container == SIDECAR:
            # The sidecar's log is the mesh's access log: the requests this pod answered
            # (Envoy wrote the pod's address as the upstream host).
            address = f'"127.0.0.1:{runtime.port}"'.encode() if runtime.port else b"\0"
            path = self.envoy.access_log_path
        else:
            address, path = b"", runtime.log_path

        def keep(line: bytes) -> bool:
            return address in line

        data = path.read_bytes() if path.exists() else b""
        lines = [line for line in data.splitlines(keepends=True) if keep(line)]
        if tail_lines is not None:
            lines = lines[-tail_lines:] if tail_lines else []
        yield b"".join(lines)
        offset = len(data)
        while follow and (namespace, pod) in self.pods:
            await asyncio.sleep(0.3)
            if path.exists() and path.stat().st_size > offset:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                # Only whole lines: a line still being written waits for the next look.
                complete = chunk[: chunk.rfind(b"\n") + 1]
                offset += len(complete)
                yield b"".join(line for line in complete.splitlines(keepends=True) if keep(line))
