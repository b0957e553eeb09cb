"""Fixtures for the tests on the real control plane (``tests/realk8s``).

One control plane per test session (:mod:`controlplane`: etcd, kube-apiserver and
kube-controller-manager v1.20.2 on loopback, RBAC on) with one node (:mod:`nodeagent`).
Every test here is marked ``realk8s``. Without the binaries the tests skip with the
reason and the command that builds them; under ``CI=true`` that is an error instead, so
CI cannot pass by skipping them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from controlplane import ControlPlane, find_binaries
from mesh import INJECTOR, Injector, Mesh
from nodeagent import NodeAgent

from kubelab.cluster.kube import Kube
from kubelab.components import catalog
from kubelab.retry import RetryPolicy
from kubelab.tools import find_tool

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
if TYPE_CHECKING:
    from test_gitea_api import StubState

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.realk8s)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The sandbox's fidelity figure, when the fidelity suite ran."""
    import fidelity

    lines = fidelity.report_lines()
    if lines:
        terminalreporter.section("sandbox fidelity (same answer as kube-apiserver v1.20.2)")
        for line in lines:
            terminalreporter.write_line(line)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@dataclass
class Cluster:
    """The running control plane, its node, and helpers to talk to it."""

    plane: ControlPlane
    agent: NodeAgent

    @property
    def kubeconfig(self) -> Path:
        return self.plane.admin_kubeconfig

    def kube(self, kubeconfig: Path | None = None, **kwargs: Any) -> Kube:
        """kubelab's client as the admin (or as ``kubeconfig``), polling fast."""
        kwargs.setdefault("poll", 0.05)
        kwargs.setdefault("retry", RetryPolicy(deadline=20.0, initial_delay=0.05, max_delay=0.5))
        return Kube(kubeconfig or self.kubeconfig, **kwargs)

    def kubeconfig_for(self, user: str, groups: tuple[str, ...] = (), **kwargs: Any) -> Path:
        return self.plane.kubeconfig_for(user, groups, **kwargs)

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        check: bool = True,
        timeout: float = 60,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        kubectl = find_tool("kubectl")
        assert kubectl is not None, "kubectl missing: scripts/install-tools.sh"
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig or self.kubeconfig),
            # kubectl's discovery cache, per API server port: not in the developer's home.
            "KUBECACHEDIR": str(self.plane.folder / "kubectl-cache"),
        }
        result = subprocess.run(
            [str(kubectl), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            input=input_text,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> str:
        meta = {"name": name, "labels": labels or {}}
        self.kube().apply({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
        # Pods can be made in a namespace once its default ServiceAccount has its token.
        self.kube().wait_for(
            lambda: bool(
                (self.kube().get("v1", "ServiceAccount", "default", name) or {}).get("secrets")
            ),
            timeout=30,
            what=f"the default ServiceAccount of {name}",
        )
        # The root CA ConfigMap is published just as asynchronously; a case that lists
        # ConfigMaps must see it on both sides.
        self.kube().wait_for(
            lambda: self.kube().get("v1", "ConfigMap", "kube-root-ca.crt", name) is not None,
            timeout=30,
            what=f"kube-root-ca.crt in {name}",
        )
        return name

    def delete_namespaces(self, names: set[str], timeout: float = 120) -> None:
        """Delete ``names`` and wait until they are finalized: the next test may install
        into the same namespaces."""
        kube = self.kube()
        for name in names:
            kube.delete("v1", "Namespace", name)
        kube.wait_for(
            lambda: all(kube.get("v1", "Namespace", n) is None for n in names),
            timeout=timeout,
            what=f"namespaces {', '.join(sorted(names))} to finalize",
        )


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    found = find_binaries()
    if isinstance(found, str):
        if _in_ci():
            pytest.fail(f"CI=true and {found}", pytrace=False)
        pytest.skip(found)
    plane = ControlPlane(found, tmp_path_factory.mktemp("realk8s"))
    agent: NodeAgent | None = None
    try:
        plane.start()
        agent = NodeAgent(plane).start()
        yield Cluster(plane, agent)
    finally:
        if agent is not None:
            agent.stop()
        plane.stop()


@pytest.fixture(scope="session")
def upstream_crds(control_plane: Cluster) -> list[str]:
    """Istio's, Flagger's and Argo Rollouts' CRDs installed (adapted to v1.20)."""
    import crds

    if not crds.SHARED_CRDS.is_dir():
        pytest.skip(f"{crds.SHARED_CRDS} is missing (the upstream CRDs live in ../shared)")
    return crds.install(control_plane.kube(), crds.load())


@pytest.fixture(scope="session")
def mesh(control_plane: Cluster, upstream_crds: list[str]) -> Iterator[Mesh]:
    """Istio stand-ins: the sidecar injector (a real mutating webhook of the API server)
    and the data plane that commands exec'ed in pods reach through ``http_proxy``."""
    injector = Injector(control_plane.plane).start(control_plane.kube())
    data_plane = Mesh(control_plane.kube(timeout=10))
    control_plane.agent.exec_env = lambda namespace, pod: {
        "http_proxy": data_plane.proxy_url(namespace)
    }
    try:
        yield data_plane
    finally:
        control_plane.agent.exec_env = lambda namespace, pod: {}
        control_plane.kube().delete(
            "admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", INJECTOR
        )
        data_plane.close()
        injector.close()


def _dns_label(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:40].strip("-")


@pytest.fixture
def namespace(control_plane: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted afterwards (not waited for)."""
    name = f"{_dns_label(request.node.name)}-{uuid.uuid4().hex[:5]}"
    control_plane.create_namespace(name)
    yield name
    control_plane.kube().delete("v1", "Namespace", name)


#: The registry address of every real provider: Gitea's NodePort on the nodes' loopback.
REGISTRY_HOST = "localhost:30300"


@pytest.fixture
def gitea(control_plane: Cluster) -> Iterator[StubState]:
    """The Gitea stub of ``tests/integration/test_gitea_api.py``, where a port-forward to
    Gitea's pods arrives; a kaniko build pod that succeeds leaves its image in it."""
    from test_gitea_api import ADMIN, PASSWORD, StubServer, StubState

    # The admin Secret Gitea's chart reads: kubelab makes it once (random) and keeps an
    # existing one; the stub knows one password.
    kube = control_plane.kube()
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gitea"}})
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "gitea-admin", "namespace": "gitea"},
            "stringData": {"username": ADMIN, "password": PASSWORD},
        }
    )
    state = StubState()
    server = StubServer(state)
    state.root_url = f"http://{REGISTRY_HOST}/"  # what kubelab's values make Gitea's ROOT_URL
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    address = server.server_address[:2]
    control_plane.agent.forward_to = lambda ns, pod, port: (
        address if ns == catalog.GITEA_NAMESPACE and port == catalog.GITEA_PORT else None
    )

    def kaniko_pushed(pod: dict[str, Any]) -> None:
        # What kaniko's run ends with: the image in Gitea's registry.
        for container in pod["spec"]["containers"]:
            for arg in container.get("args") or []:
                if arg.startswith("--destination="):
                    repository, _, tag = arg.split("=", 1)[1].split("/", 1)[1].rpartition(":")
                    state.manifests[(repository, tag)] = "sha256:" + "c" * 64

    control_plane.agent.on_success = kaniko_pushed
    try:
        yield state
    finally:
        control_plane.agent.on_success = lambda pod: None
        control_plane.agent.forward_to = lambda ns, pod, port: None
        server.shutdown()
        server.server_close()
