"""A node for the real control plane: scheduler and kubelet stand-in (like kwok).

The control plane of :mod:`controlplane` has no kubelet, so pods would stay Pending and
every wait of kubelab's would run out. :class:`NodeAgent`:

* registers one Ready ``Node`` whose kubelet endpoint is this agent's HTTPS server;
* binds every unscheduled pod to it (``pods/binding``, as the scheduler does);
* writes each bound pod's status as a kubelet would after starting it: a pod IP,
  ``Initialized``/``ContainersReady``/``Ready``/``PodScheduled`` conditions, init containers
  terminated with 0, containers running and ready. Pods that do not restart (Jobs' pods,
  ``restartPolicy`` Never/OnFailure) then terminate with exit code 0 and ``Succeeded``;
* gives Services of type LoadBalancer an address (a host name), as a cloud would;
* finishes graceful deletions (a pod with a ``deletionTimestamp`` is deleted with grace 0,
  as the kubelet does once its containers stopped), so namespaces and ReplicaSets really
  finalize;
* is the pod network: the API server's egress selector sends every connection to a pod,
  Service or kubelet as an HTTP CONNECT to this agent (a Unix socket), which connects
  ``podIP:port`` to what :attr:`NodeAgent.pod_servers` names (and kubelets to itself),
  so the API server's service proxy reaches servers the tests run on loopback;
* serves the kubelet API the API server proxies to: ``/exec`` and ``/portForward`` over
  websockets (channel protocols v4/v5, what the official client and kubectl 1.31 speak;
  SPDY is not implemented) and ``/containerLogs``.

What a pod "runs" is up to the test: an exec runs its command on this machine (with the
environment :attr:`NodeAgent.exec_env` gives for the pod), port-forwards connect to the
address :attr:`NodeAgent.forwards` names. Annotations on a pod steer its status:
``agent.kubelab.test/ready: "false"`` keeps it running but not Ready,
``agent.kubelab.test/exit-code: "N"`` ends a non-restarting pod with N.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from aiohttp import WSMsgType, web
from controlplane import ControlPlane, free_port

log = logging.getLogger(__name__)

NODE = "kubelab-node"
READY_ANNOTATION = "agent.kubelab.test/ready"
EXIT_ANNOTATION = "agent.kubelab.test/exit-code"
CHANNEL_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, CLOSE = 0, 1, 2, 3, 255


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ExecCall:
    """One exec the API server forwarded to the node."""

    namespace: str
    pod: str
    container: str
    command: tuple[str, ...]


@dataclass
class NodeAgent:
    plane: ControlPlane
    node: str = NODE
    #: (namespace, pod) -> extra environment of commands exec'ed "in" that pod.
    exec_env: Callable[[str, str], dict[str, str]] = lambda namespace, pod: {}
    #: (namespace, pod, port) -> (host, port) a port-forward to the pod reaches.
    forwards: dict[tuple[str, str, int], tuple[str, int]] = field(default_factory=dict)
    #: Asked when ``forwards`` names nothing: pods made by controllers have random names.
    forward_to: Callable[[str, str, int], tuple[str, int] | None] = lambda ns, pod, port: None
    #: (namespace, pod, port) -> (host, port) the API server reaches for ``podIP:port``
    #: (its service proxy: ``/api/v1/namespaces/N/services/S:P/proxy/``).
    pod_servers: dict[tuple[str, str, int], tuple[str, int]] = field(default_factory=dict)
    #: (namespace, pod, container) -> the text ``kubectl logs`` shows.
    logs: dict[tuple[str, str, str], str] = field(default_factory=dict)
    #: Called for each pod before its status is written: returning False leaves it alone.
    admit: Callable[[dict[str, Any]], bool] = lambda pod: True
    #: Called with each pod the agent ends with exit code 0 (what its program "did").
    on_success: Callable[[dict[str, Any]], None] = lambda pod: None
    execs: list[ExecCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.session: requests.Session = self.plane.session()
        self.base = self.plane.server
        self._ips: dict[str, str] = {}
        self._ips_given = 0
        self._ip_lock = threading.Lock()
        self._pods_by_ip: dict[str, tuple[str, str]] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.kubelet_port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._network: asyncio.AbstractServer | None = None
        self.errors: list[str] = []

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> NodeAgent:
        self._start_kubelet()
        self._register_node()
        watcher = threading.Thread(target=self._watch_loop, name="node-agent", daemon=True)
        watcher.start()
        balancer = threading.Thread(target=self._balancer_loop, name="node-agent-lb", daemon=True)
        balancer.start()
        self._threads += [watcher, balancer]
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._loop is not None:
            loop = self._loop

            async def shutdown() -> None:
                if self._network is not None:
                    self._network.close()
                if self._runner is not None:
                    await self._runner.cleanup()
                # Tunnels of the pod network still open: end them before the loop stops.
                others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in others:
                    task.cancel()
                await asyncio.gather(*others, return_exceptions=True)

            # Best effort at the end of the session: the loop stops either way.
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        for thread in self._threads:
            thread.join(10)

    # -- the Node ------------------------------------------------------------------------------

    def _register_node(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {
                    "kubernetes.io/hostname": self.node,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
        }
        r = self.session.post(f"{self.base}/api/v1/nodes", json=node, timeout=10)
        if r.status_code not in (201, 409):
            raise RuntimeError(f"cannot register node {self.node}: {r.status_code} {r.text}")
        resources = {"cpu": "16", "memory": "64Gi", "pods": "500", "ephemeral-storage": "100Gi"}
        status = {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "node agent of the kubelab tests",
                        "lastHeartbeatTime": _now(),
                        "lastTransitionTime": _now(),
                    }
                ],
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": self.node},
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
                "capacity": resources,
                "allocatable": resources,
                "nodeInfo": {
                    "kubeletVersion": "v1.20.2",
                    "kubeProxyVersion": "v1.20.2",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "containerRuntimeVersion": "kubelab-node-agent://1",
                    "osImage": "kubelab test node",
                    "kernelVersion": os.uname().release,
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            }
        }
        r = self.session.patch(
            f"{self.base}/api/v1/nodes/{self.node}/status",
            data=json.dumps(status),
            headers={"Content-Type": "application/merge-patch+json"},
            timeout=10,
        )
        r.raise_for_status()

    # -- load balancers -------------------------------------------------------------------------

    def _balancer_loop(self) -> None:
        """A cloud's load-balancer controller: every Service of type LoadBalancer gets an
        address, a host name (as AWS's do) under ``lb.kubelab.test``, which resolves
        nowhere: kubelab then serves dashboards through `kubelab open`, as on kind."""
        while not self._stop.wait(0.5):
            try:
                services = self.session.get(f"{self.base}/api/v1/services", timeout=10)
                services.raise_for_status()
                for svc in services.json().get("items") or []:
                    meta, spec = svc["metadata"], svc.get("spec") or {}
                    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress")
                    if spec.get("type") != "LoadBalancer" or ingress:
                        continue
                    host = f"{meta['name']}.{meta['namespace']}.lb.kubelab.test"
                    self.session.patch(
                        f"{self.base}/api/v1/namespaces/{meta['namespace']}/services/"
                        f"{meta['name']}/status",
                        data=json.dumps(
                            {"status": {"loadBalancer": {"ingress": [{"hostname": host}]}}}
                        ),
                        headers={"Content-Type": "application/merge-patch+json"},
                        timeout=10,
                    )
            except (requests.RequestException, ValueError, KeyError) as exc:
                log.debug("node agent load balancers: %s", exc)

    # -- pods ----------------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                listed = self.session.get(f"{self.base}/api/v1/pods", timeout=10)
                listed.raise_for_status()
                body = listed.json()
                for pod in body.get("items") or []:
                    self._handle(pod)
                version = body["metadata"]["resourceVersion"]
                with self.session.get(
                    f"{self.base}/api/v1/pods",
                    params={"watch": "true", "resourceVersion": version, "timeoutSeconds": "5"},
                    stream=True,
                    timeout=(5, 15),
                ) as stream:
                    for line in stream.iter_lines():
                        if self._stop.is_set():
                            return
                        if not line:
                            continue
                        event = json.loads(line)
                        if event.get("type") == "ERROR":
                            break  # 410 Gone and friends: list again
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            self._handle(event["object"])
            except (requests.RequestException, ValueError, KeyError) as exc:
                if self._stop.is_set():
                    return
                log.debug("node agent: %s; listing again", exc)
                time.sleep(0.2)

    def _handle(self, pod: dict[str, Any]) -> None:
        try:
            self._step(pod)
        except requests.RequestException as exc:
            # Conflicts (the pod changed meanwhile) and races with deletion: the next event
            # or list brings the pod again.
            log.debug("node agent: %s", exc)

    def _step(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        ns, name = meta["namespace"], meta["name"]
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        path = f"{self.base}/api/v1/namespaces/{ns}/pods/{name}"
        if meta.get("deletionTimestamp"):
            if spec.get("nodeName") in (None, "", self.node):
                # What the kubelet does once the containers stopped: the final delete.
                self.session.delete(
                    path,
                    json={
                        "kind": "DeleteOptions",
                        "apiVersion": "v1",
                        "gracePeriodSeconds": 0,
                        "preconditions": {"uid": meta["uid"]},
                    },
                    timeout=10,
                )
                self._ips.pop(meta["uid"], None)
            return
        if not spec.get("nodeName"):
            if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
                return
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name, "namespace": ns},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.node},
            }
            r = self.session.post(f"{path}/binding", json=binding, timeout=10)
            if r.status_code >= 400 and r.status_code != 409:
                self.errors.append(f"bind {ns}/{name}: {r.status_code} {r.text[:200]}")
            return
        if spec["nodeName"] != self.node or not self.admit(pod):
            return
        phase = status.get("phase")
        if phase in ("Succeeded", "Failed"):
            return
        restarts = spec.get("restartPolicy", "Always") == "Always"
        annotations = meta.get("annotations") or {}
        if phase == "Running" and restarts:
            return  # nothing more happens to a long-running pod
        if phase == "Running" and not restarts:
            code = int(annotations.get(EXIT_ANNOTATION, "0"))
            if code == 0:
                self.on_success(pod)
            self._terminate(pod, code)
            return
        self._run(pod, ready=annotations.get(READY_ANNOTATION, "true") != "false")

    def _ip(self, uid: str) -> str:
        if uid not in self._ips:
            # Never reused: a deleted pod's address given to a new pod would send the
            # traffic of a live pod that had it (still in _pods_by_ip) elsewhere.
            with self._ip_lock:
                self._ips_given += 1
                n = self._ips_given + 1
            self._ips[uid] = f"10.244.{n // 250}.{n % 250 + 1}"
        return self._ips[uid]

    def _patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
        r = self.session.patch(
            f"{self.base}/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
            data=json.dumps(body),
            headers={"Content-Type": "application/merge-patch+json"},
            timeout=10,
        )
        if r.status_code not in (200, 404, 409):
            self.errors.append(f"status {meta['namespace']}/{meta['name']}: {r.status_code}")

    def _run(self, pod: dict[str, Any], *, ready: bool) -> None:
        spec, meta = pod["spec"], pod["metadata"]
        now = _now()
        flag = "True" if ready else "False"

        def container_status(c: dict[str, Any], state: dict[str, Any], up: bool) -> dict[str, Any]:
            return {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": f"kubelab-agent://{c.get('image', '')}",
                "containerID": f"kubelab-agent://{meta['uid'][:8]}-{c['name']}",
                "ready": up,
                "started": up,
                "restartCount": 0,
                "state": state,
            }

        ip = self._ip(meta["uid"])
        self._pods_by_ip[ip] = (meta["namespace"], meta["name"])
        self._patch_status(
            pod,
            {
                "phase": "Running",
                "hostIP": "127.0.0.1",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "startTime": now,
                "qosClass": "BestEffort",
                "conditions": [
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": flag, "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                ],
                "initContainerStatuses": [
                    container_status(
                        c,
                        {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": now}},
                        False,
                    )
                    | {"ready": True}
                    for c in spec.get("initContainers") or []
                ],
                "containerStatuses": [
                    container_status(c, {"running": {"startedAt": now}}, ready)
                    for c in spec.get("containers") or []
                ],
            },
        )

    def _terminate(self, pod: dict[str, Any], code: int) -> None:
        now = _now()
        reason = "Completed" if code == 0 else "Error"
        statuses = [
            {
                **s,
                "ready": False,
                "started": False,
                "state": {"terminated": {"exitCode": code, "reason": reason, "finishedAt": now}},
            }
            for s in (pod.get("status") or {}).get("containerStatuses") or []
        ]
        self._patch_status(
            pod,
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "PodCompleted"},
                    {"type": "ContainersReady", "status": "False", "reason": "PodCompleted"},
                    {"type": "Initialized", "status": "True"},
                    {"type": "PodScheduled", "status": "True"},
                ],
                "containerStatuses": statuses,
            },
        )

    # -- the kubelet API -----------------------------------------------------------------------

    def _start_kubelet(self) -> None:
        cert, key = self.plane.pki.issue(self.node, server=True)
        folder = self.plane.folder / "node"
        folder.mkdir(exist_ok=True)
        (folder / "kubelet.crt").write_bytes(cert)
        key_file = folder / "kubelet.key"
        key_file.write_bytes(key)
        key_file.chmod(0o600)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(folder / "kubelet.crt", key_file)
        self.kubelet_port = free_port()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(context))
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        thread = threading.Thread(target=serve, name="node-agent-kubelet", daemon=True)
        thread.start()
        self._threads.append(thread)
        ready.wait(10)
        if failure:
            raise RuntimeError(f"the node agent's kubelet API did not start: {failure[0]}")

    async def _serve(self, context: ssl.SSLContext) -> None:
        self.plane.pod_network.unlink(missing_ok=True)
        self._network = await asyncio.start_unix_server(
            self._connect, path=str(self.plane.pod_network)
        )
        app = web.Application()
        app.router.add_route("*", "/exec/{ns}/{pod}/{container}", self._exec)
        app.router.add_route("*", "/portForward/{ns}/{pod}", self._port_forward)
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self._container_logs)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.kubelet_port, ssl_context=context).start()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One HTTP CONNECT from the API server's egress selector: a tunnel to a pod."""
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            host, _, port_text = target.rpartition(":")
            port = int(port_text)
            if host == "127.0.0.1":
                address: tuple[str, int] | None = (host, port)  # a kubelet: this agent
            else:
                pod = self._pods_by_ip.get(host)
                address = self.pod_servers.get((*pod, port)) if pod else None
            if method != "CONNECT" or address is None:
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
                await writer.drain()
                return
            up_reader, upstream = await asyncio.open_connection(*address)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                with contextlib.suppress(OSError):
                    while chunk := await src.read(65536):
                        dst.write(chunk)
                        await dst.drain()
                with contextlib.suppress(OSError):
                    dst.close()

            await asyncio.gather(pipe(reader, upstream), pipe(up_reader, writer))
        except (OSError, ValueError, asyncio.IncompleteReadError):
            return
        finally:
            if upstream is not None:
                upstream.close()
            writer.close()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _container_logs(self, request: web.Request) -> web.Response:
        m = request.match_info
        text = self.logs.get((m["ns"], m["pod"], m["container"]), "")
        return web.Response(text=text)

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        command = request.query.getall("command", [])
        call = ExecCall(m["ns"], m["pod"], m["container"], tuple(command))
        self.execs.append(call)
        ws = web.WebSocketResponse(protocols=CHANNEL_PROTOCOLS)
        if not ws.can_prepare(request).ok:
            return web.Response(
                status=400, text="the kubelab node agent speaks websocket channel protocols only"
            )
        await ws.prepare(request)
        v5 = ws.ws_protocol == CHANNEL_PROTOCOLS[0]
        want_stdin = request.query.get("input") in ("1", "true")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.plane.folder),
            "LANG": "C.UTF-8",
            "HOSTNAME": m["pod"],
            **self.exec_env(m["ns"], m["pod"]),
        }
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE if want_stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=str(self.plane.folder),
            )
        except OSError as exc:
            # What a container runtime says for a missing executable.
            message = (
                f"OCI runtime exec failed: exec failed: unable to start container process: "
                f'exec: "{command[0] if command else ""}": {exc.strerror}: unknown'
            )
            status = {"metadata": {}, "status": "Failure", "message": message, "reason": ""}
            await ws.send_bytes(bytes([ERROR]) + json.dumps(status).encode())
            await ws.close()
            return ws

        async def pump(reader: asyncio.StreamReader | None, channel: int) -> None:
            assert reader is not None
            while chunk := await reader.read(65536):
                await ws.send_bytes(bytes([channel]) + chunk)

        async def feed() -> None:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY or not msg.data:
                    continue
                channel, data = msg.data[0], msg.data[1:]
                if channel == STDIN and process.stdin is not None:
                    process.stdin.write(data)
                    await process.stdin.drain()
                elif v5 and channel == CLOSE and data[:1] == bytes([STDIN]) and process.stdin:
                    process.stdin.close()
            # The client went away (a killed `kubectl exec`): so does the command.
            if process.returncode is None:
                process.kill()

        feeder = asyncio.ensure_future(feed())
        await asyncio.gather(pump(process.stdout, STDOUT), pump(process.stderr, STDERR))
        code = await process.wait()
        if code == 0:
            status = {"metadata": {}, "status": "Success"}
        else:
            status = {
                "metadata": {},
                "status": "Failure",
                "message": f"command terminated with non-zero exit code: exit status {code}",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
            }
        if not ws.closed:
            await ws.send_bytes(bytes([ERROR]) + json.dumps(status).encode())
            await ws.close()
        feeder.cancel()
        return ws

    async def _port_forward(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        # The API server passes the client's ``ports`` on as ``port`` (one per port).
        values = request.query.getall("port", []) + request.query.getall("ports", [])
        ports = [int(p) for v in values for p in v.split(",") if p]
        ws = web.WebSocketResponse(protocols=CHANNEL_PROTOCOLS)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="websocket port-forward only")
        await ws.prepare(request)
        writers: dict[int, asyncio.StreamWriter] = {}
        tasks: list[asyncio.Future[Any]] = []

        async def backward(index: int, reader: asyncio.StreamReader) -> None:
            while chunk := await reader.read(65536):
                await ws.send_bytes(bytes([2 * index]) + chunk)

        for index, port in enumerate(ports):
            # Both channels of a port start with its number (little-endian), as the kubelet's.
            header = port.to_bytes(2, "little")
            await ws.send_bytes(bytes([2 * index]) + header)
            await ws.send_bytes(bytes([2 * index + 1]) + header)
        for index, port in enumerate(ports):
            target = self.forwards.get((m["ns"], m["pod"], port)) or self.forward_to(
                m["ns"], m["pod"], port
            )
            if target is None:
                await ws.send_bytes(
                    bytes([2 * index + 1])
                    + f"error forwarding port {port} to pod {m['pod']}: nothing listens".encode()
                )
                continue
            try:
                reader, writer = await asyncio.open_connection(*target)
            except OSError as exc:
                await ws.send_bytes(bytes([2 * index + 1]) + str(exc).encode())
                continue
            writers[index] = writer
            tasks.append(asyncio.ensure_future(backward(index, reader)))
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, data = msg.data[0], msg.data[1:]
            writer = writers.get(channel // 2)
            if channel % 2 == 0 and writer is not None:
                writer.write(data)
                await writer.drain()
        for task in tasks:
            task.cancel()
        for writer in writers.values():
            writer.close()
        return ws
