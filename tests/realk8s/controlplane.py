"""A real Kubernetes control plane on loopback for the tests (the envtest pattern).

etcd, kube-apiserver and kube-controller-manager v1.20.2 run as child processes of the test
session on free 127.0.0.1 ports, with a fresh data directory, RBAC on and every piece of
PKI made here: a CA that signs the API server's serving certificate and every client
certificate (``kubeconfig_for`` mints one per user and groups, the admin is in
``system:masters``), and the key pair that signs ServiceAccount tokens (TokenRequest).

There is no kubelet and no scheduler: :mod:`nodeagent` plays both. The binaries come from
the per-machine cache that ``scripts/build-control-plane.sh`` fills; :func:`find_binaries`
says why when they are not there.

Every process is started in its own session with ``PR_SET_PDEATHSIG`` (it dies with the
test process even when that is killed) and stopped by PID in :meth:`ControlPlane.stop`.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

K8S_VERSION = "v1.20.2"
CACHE_ENV = "KUBELAB_K8S_CACHE"
BUILD_HINT = "bash scripts/build-control-plane.sh"

#: Controllers that need a kubelet, a cloud or a scheduler's help are left out.
CONTROLLERS = (
    "*,-nodeipam,-nodelifecycle,-attachdetach,-persistentvolume-binder,"
    "-persistentvolume-expander,-cloud-node-lifecycle,-route,-service"
)


def default_cache() -> Path:
    return Path(
        os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "kubelab" / f"k8s-{K8S_VERSION}"
    )


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    apiserver: Path
    controller_manager: Path
    versions: dict[str, Any]


def find_binaries(cache: Path | None = None) -> Binaries | str:
    """The cached binaries, or the reason they cannot be used (a skip message)."""
    cache = cache or default_cache()
    bin_dir = cache / "bin"
    paths = {
        "etcd": bin_dir / "etcd",
        "apiserver": bin_dir / "kube-apiserver",
        "controller_manager": bin_dir / "kube-controller-manager",
    }
    missing = [str(p) for p in paths.values() if not os.access(p, os.X_OK)]
    if missing:
        return (
            f"the real Kubernetes control plane is not built on this machine "
            f"(missing {', '.join(missing)}); build it once with `{BUILD_HINT}`"
        )
    try:
        versions = json.loads((cache / "versions.json").read_text())
    except (OSError, ValueError):
        return f"{cache}/versions.json is missing or unreadable: run `{BUILD_HINT}` again"
    if versions.get("kubernetes") != K8S_VERSION:
        return (
            f"the cache at {cache} holds Kubernetes {versions.get('kubernetes')}, the tests "
            f"need {K8S_VERSION}: run `KUBELAB_K8S_REBUILD=1 {BUILD_HINT}`"
        )
    return Binaries(versions=versions, **paths)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- PKI ---------------------------------------------------------------------------------------


def _pem_key(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Pki:
    """A CA and what it signs. Keys are P-256 (fast to make), the token key RSA."""

    ca_key: Any
    ca_cert: x509.Certificate

    @classmethod
    def create(cls) -> Pki:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubelab-test-ca")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @property
    def ca_pem(self) -> bytes:
        return _pem_cert(self.ca_cert)

    def issue(
        self,
        common_name: str,
        organizations: Sequence[str] = (),
        *,
        server: bool = False,
        hours: float = 24,
    ) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for a client (CN=user, O=groups) or a server."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=hours))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
                        x509.DNSName("localhost"),
                        x509.DNSName("kubernetes.default.svc"),
                    ]
                ),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        cert = builder.sign(self.ca_key, hashes.SHA256())
        return _pem_cert(cert), _pem_key(key)


def _write_private(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


# -- processes ---------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: its own session, and SIGKILL when the test process dies."""
    os.setsid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout)


class ControlPlaneError(RuntimeError):
    pass


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager in ``folder``; :meth:`start`, then
    :meth:`stop` (idempotent). ``admin_kubeconfig`` is a system:masters client certificate;
    ``kubeconfig_for`` mints others."""

    binaries: Binaries
    folder: Path
    processes: list[Process] = field(default_factory=list)
    api_port: int = 0
    etcd_port: int = 0
    started_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pki = Pki.create()
        self.pki_dir = self.folder / "pki"
        self.pki_dir.mkdir(exist_ok=True)
        self.ca_file = self.pki_dir / "ca.crt"
        self.ca_file.write_bytes(self.pki.ca_pem)
        self.admin_kubeconfig = self.folder / "admin.kubeconfig"
        self.pid_file = self.folder / "pids"
        #: The API server reaches pods, Services and kubelets through an HTTP CONNECT
        #: proxy on this socket (its egress selector's "cluster" network): the node agent
        #: serves it, so pod IPs exist without any network of their own.
        self.pod_network = self.folder / "pod-network.sock"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    # -- kubeconfigs ---------------------------------------------------------------------------

    def kubeconfig_dict(
        self,
        user: str,
        *,
        cert: bytes | None = None,
        key: bytes | None = None,
        token: str | None = None,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        import base64

        credentials: dict[str, Any] = {}
        if token is not None:
            credentials["token"] = token
        if cert is not None and key is not None:
            credentials["client-certificate-data"] = base64.b64encode(cert).decode()
            credentials["client-key-data"] = base64.b64encode(key).decode()
        context: dict[str, Any] = {"cluster": "realk8s", "user": user}
        if namespace:
            context["namespace"] = namespace
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "realk8s",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": base64.b64encode(self.pki.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": user, "context": context}],
            "current-context": user,
        }

    def kubeconfig_for(
        self,
        user: str,
        groups: Sequence[str] = (),
        *,
        token: str | None = None,
        namespace: str | None = None,
        path: Path | None = None,
    ) -> Path:
        """A kubeconfig file for ``user`` in ``groups`` (a client certificate from the test
        CA), or carrying ``token`` (a ServiceAccount's) when given."""
        cert = key = None
        if token is None:
            cert, key = self.pki.issue(user, groups)
        config = self.kubeconfig_dict(user, cert=cert, key=key, token=token, namespace=namespace)
        safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in user)
        target = path or self.folder / "kubeconfigs" / f"{safe}.kubeconfig"
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_private(target, yaml.safe_dump(config).encode())
        return target

    def session(self) -> requests.Session:
        """A requests session authenticated as the admin (client certificate)."""
        if not hasattr(self, "_admin_cert"):
            raise ControlPlaneError("not started")
        s = requests.Session()
        # REQUESTS_CA_BUNDLE (set on many machines) would override ``verify`` otherwise.
        s.trust_env = False
        s.verify = str(self.ca_file)
        s.cert = (str(self._admin_cert), str(self._admin_key))
        return s

    # -- lifecycle -----------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> Process:
        log = self.folder / f"{name}.log"
        handle = log.open("wb")
        try:
            popen = subprocess.Popen(
                argv,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.folder,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.folder)},
                preexec_fn=_die_with_parent,
            )
        finally:
            handle.close()
        process = Process(name, popen, log)
        self.processes.append(process)
        with self.pid_file.open("a") as f:
            f.write(f"{name} {popen.pid}\n")
        return process

    def _wait(self, process: Process, ready: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise ControlPlaneError(
                    f"{process.name} exited with {process.popen.returncode} while starting; "
                    f"its log ({process.log}):\n{process.tail()}"
                )
            try:
                if ready():
                    return
            except (requests.RequestException, OSError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise ControlPlaneError(
            f"{what} not ready after {timeout:.0f}s ({last}); {process.name} log:\n{process.tail()}"
        )

    def start(self, timeout: float = 90.0) -> ControlPlane:
        started = time.monotonic()
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        self.started_seconds = time.monotonic() - started
        return self

    def _start(self, timeout: float) -> None:
        pki = self.pki_dir
        serving_cert, serving_key = self.pki.issue("kube-apiserver", server=True)
        _write_private(pki / "apiserver.crt", serving_cert)
        _write_private(pki / "apiserver.key", serving_key)
        admin_cert, admin_key = self.pki.issue("kubelab-test-admin", ["system:masters"])
        self._admin_cert = _write_private(pki / "admin.crt", admin_cert)
        self._admin_key = _write_private(pki / "admin.key", admin_key)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(pki / "sa.key", _pem_key(sa_key))
        (pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self.sa_key = sa_key

        self.etcd_port = free_port()
        peer_port = free_port()
        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        etcd = self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                "--data-dir",
                str(self.folder / "etcd"),
                "--listen-client-urls",
                etcd_url,
                "--advertise-client-urls",
                etcd_url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )
        self._wait(
            etcd,
            lambda: requests.get(f"{etcd_url}/health", timeout=2, proxies={"http": ""}).ok,
            timeout,
            "etcd",
        )

        self.api_port = free_port()
        egress = self.folder / "egress-selector.yaml"
        egress.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "apiserver.k8s.io/v1beta1",
                    "kind": "EgressSelectorConfiguration",
                    "egressSelections": [
                        {
                            "name": "cluster",
                            "connection": {
                                "proxyProtocol": "HTTPConnect",
                                "transport": {"uds": {"udsName": str(self.pod_network)}},
                            },
                        }
                    ],
                }
            )
        )
        _write_private(
            self.admin_kubeconfig,
            yaml.safe_dump(
                self.kubeconfig_dict("kubelab-test-admin", cert=admin_cert, key=admin_key)
            ).encode(),
        )
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(self.binaries.apiserver),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # The `kubernetes` Service's endpoints may not be a loopback address.
                "--endpoint-reconciler-type=none",
                f"--secure-port={self.api_port}",
                "--insecure-port=0",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={self.ca_file}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.96.0.0/12",
                "--allow-privileged=true",
                "--kubelet-preferred-address-types=InternalIP",
                f"--egress-selector-config-file={egress}",
                "--profiling=false",
                "--v=1",
            ],
        )
        session = self.session()
        self._wait(
            apiserver,
            lambda: session.get(f"{self.server}/readyz", timeout=2).status_code == 200,
            timeout,
            "kube-apiserver",
        )

        controller_manager = self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries.controller_manager),
                f"--kubeconfig={self.admin_kubeconfig}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                "--leader-elect=false",
                "--secure-port=0",
                "--port=0",
                f"--controllers={CONTROLLERS}",
                "--concurrent-gc-syncs=5",
                "--profiling=false",
                "--v=1",
            ],
        )

        def default_sa() -> bool:
            # The ServiceAccount controller makes `default`, the token controller its
            # Secret: pods in a namespace can be created only after both.
            r = session.get(f"{self.server}/api/v1/namespaces/default/serviceaccounts/default")
            return r.status_code == 200 and bool(r.json().get("secrets"))

        self._wait(controller_manager, default_sa, timeout, "kube-controller-manager")

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def stop(self) -> None:
        # The controller manager first (it would log the API server going away), etcd last.
        for process in reversed(self.processes):
            process.stop()

    def alive(self) -> list[str]:
        return [p.name for p in self.processes if p.popen.poll() is None]


def chart_for_v120(chart: Path, folder: Path) -> Path:
    """A copy of ``chart`` that helm installs on v1.20: without its ``kubeVersion``
    constraint (the project's charts ask for >=1.25, the oldest Kubernetes Istio 1.30
    supports; helm refuses them on this control plane otherwise)."""
    import shutil

    target = folder / chart.name
    shutil.copytree(chart, target, dirs_exist_ok=True)
    meta = target / "Chart.yaml"
    lines = meta.read_text().splitlines(keepends=True)
    meta.write_text("".join(line for line in lines if not line.startswith("kubeVersion:")))
    return target
