"""k3s on remote servers through the Ansible playbooks in ``playbooks/`` (ansible-runner).

:func:`run_playbook` runs one playbook quietly and maps a failure to a
:class:`~kubelab.errors.SetupError` naming the task, the host and the fix. Secret extravars
(tokens) never reach the command line, a log line or an error: they are written to the
runner's ``env/extravars`` file (0600, in a private directory removed afterwards) and masked
in every text kubelab builds from the run's events. :func:`install_k3s` is what the Hetzner
provider calls: control plane + agents, the Hetzner cloud controller manager and CSI driver,
and the admin kubeconfig returned pointed at the server's public IP.

ansible-runner runs ``ansible-playbook`` as a subprocess, so the virtualenv's ``bin`` (where
pip put it) is put first on its PATH.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kubelab.errors import ExitCode, SetupError
from kubelab.paths import write_private

log = logging.getLogger(__name__)

# Pinned versions (see playbooks/vars.yml for where each was read).
K3S_VERSION = "v1.35.5+k3s1"
HCLOUD_CCM_CHART_VERSION = "1.35.0"
HCLOUD_CSI_CHART_VERSION = "2.22.1"

SERVER_GROUP = "k3s_server"
AGENT_GROUP = "k3s_agents"
CONTROL_PLANE_ROLES = frozenset({"control-plane", "server", "controlplane"})

# Extravars whose values never appear in anything kubelab prints, logs or raises.
SECRET_KEYS = frozenset({"hcloud_token", "k3s_token", "k3s_node_token"})
MASK = "********"

DEFAULT_TIMEOUT = 1800
# Times ssh is retried when a connection fails (refused while a server boots).
SSH_RETRIES = 5

UNREACHABLE_HINT = (
    "SSH unreachable: check the firewall allows your IP on port 22 (kubelab cluster create "
    "--allow-from YOUR_IP/32 if your public IP changed), that the server is running, and "
    "that the SSH key kubelab generated is the one on the server; then run the same command "
    "again."
)
FAILED_HINT = (
    "The playbooks are idempotent: fix the cause above and run the same command again; "
    "`kubelab cluster delete` removes everything if you give up."
)


def playbooks_dir() -> Path:
    """``playbooks/`` of this checkout (or of the installed package's data)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent.parent / "playbooks", here.parent / "_data" / "playbooks"):
        if (candidate / "site.yml").is_file():
            return candidate
    raise SetupError(
        "kubelab's Ansible playbooks (playbooks/site.yml) are missing",
        hint="Reinstall kubelab from a complete checkout.",
    )


class K3sNode(Protocol):
    """A server to install k3s on (``kubelab.providers.hetzner.NodeInfo`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def public_ip(self) -> str: ...

    @property
    def private_ip(self) -> str | None: ...


@dataclass
class Result:
    """What a playbook run did: status, per-host stats and the failures seen."""

    status: str
    rc: int
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def total(self, key: str) -> int:
        """Sum over hosts of one stats counter (``ok``, ``changed``, ``failures``, ``dark``)."""
        return sum(self.stats.get(key, {}).values())

    @property
    def changed(self) -> int:
        return self.total("changed")


# --------------------------------------------------------------------------- secrets


def secret_values(extravars: Mapping[str, Any], secret_keys: Collection[str]) -> list[str]:
    """The non-empty string values of the secret extravars, longest first."""
    values = {str(extravars[k]) for k in secret_keys if extravars.get(k)}
    return sorted((v for v in values if v.strip()), key=len, reverse=True)


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by :data:`MASK`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


# --------------------------------------------------------------------------- runner


def _ansible_runner() -> Any:
    try:
        return importlib.import_module("ansible_runner")
    except ImportError as exc:
        raise SetupError(
            "ansible-runner is not installed in kubelab's environment",
            hint="pip install ansible-core ansible-runner (in kubelab's virtualenv)",
        ) from exc


def _runner_env(private: Path) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    return {
        "PATH": f"{venv_bin}{os.pathsep}{path}" if path else venv_bin,
        # Keep Ansible's own files inside the private directory, and its output plain.
        "ANSIBLE_HOME": str(private / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(private / "ansible-tmp"),
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "ANSIBLE_NOCOLOR": "true",
        "ANSIBLE_HOST_KEY_CHECKING": "true",
        "ANSIBLE_PIPELINING": "true",
        "ANSIBLE_DEPRECATION_WARNINGS": "false",
    }


def _failure_text(event: Mapping[str, Any]) -> tuple[str, str, str, bool]:
    """(task, host, message, unreachable) of a failed/unreachable runner event."""
    data = event.get("event_data") or {}
    res = data.get("res") or {}
    task = str(data.get("task") or "?")
    host = str(data.get("host") or data.get("remote_addr") or "?")
    unreachable = event.get("event") == "runner_on_unreachable"
    message = ""
    if isinstance(res, Mapping):
        parts = [str(res.get("msg") or "")]
        stderr = str(res.get("stderr") or "").strip()
        if stderr and stderr not in parts[0]:
            parts.append(stderr.splitlines()[-1])
        message = ": ".join(p for p in parts if p)
    return task, host, message.strip() or "failed", unreachable


def run_playbook(
    playbook: str | Path,
    inventory: Mapping[str, Any],
    extravars: Mapping[str, Any],
    private_dir: Path | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    *,
    tags: Sequence[str] = (),
    secret_keys: Collection[str] = SECRET_KEYS,
) -> Result:
    """Run ``playbook`` (a path, or a name in :func:`playbooks_dir`) through ansible-runner.

    Without ``private_dir`` a temporary one is used and removed afterwards (it holds the
    extravars file, secrets included). Raises :class:`SetupError` naming the failing task
    and host, with the fix, when the run fails or times out.
    """
    runner = _ansible_runner()
    path = Path(playbook)
    if not path.is_absolute() and not path.exists():
        path = playbooks_dir() / path
    path = path.resolve()
    if not path.is_file():
        raise SetupError(f"playbook {path} does not exist")
    secrets = secret_values(extravars, secret_keys)

    own_dir = private_dir is None
    private = Path(tempfile.mkdtemp(prefix="kubelab-ansible-")) if own_dir else private_dir
    assert private is not None
    try:
        private.mkdir(parents=True, exist_ok=True)
        # Extravars go through env/extravars (0600), never the command line (ps, artifacts).
        write_private(private / "env" / "extravars", json.dumps(dict(extravars)))
        kwargs: dict[str, Any] = {
            "private_data_dir": str(private),
            "playbook": str(path),
            "inventory": json.loads(json.dumps(dict(inventory))),
            "envvars": _runner_env(private),
            "quiet": True,
            "suppress_env_files": True,
            "timeout": timeout,
        }
        if tags:
            kwargs["tags"] = ",".join(tags)
        log.info("ansible: running %s", path.name)
        outcome = runner.run(**kwargs)
        result = Result(
            status=str(outcome.status),
            rc=int(outcome.rc if outcome.rc is not None else -1),
            stats={k: dict(v) for k, v in (outcome.stats or {}).items() if isinstance(v, dict)},
        )
        first: tuple[str, str, str, bool] | None = None
        for event in outcome.events:
            if event.get("event") in ("runner_on_failed", "runner_on_unreachable"):
                data = event.get("event_data") or {}
                if data.get("ignore_errors"):
                    continue
                task, host, message, unreachable = _failure_text(event)
                line = mask(f"{host}: task '{task}': {message}", secrets)
                result.failures.append(line)
                log.debug("ansible: %s", line)
                first = first or (task, host, message, unreachable)
    finally:
        if own_dir:
            shutil.rmtree(private, ignore_errors=True)

    log.info("ansible: %s %s (changed=%d)", path.name, result.status, result.changed)
    if result.status == "timeout":
        raise SetupError(
            f"{path.name} did not finish within {timeout} s",
            hint="Check the servers are reachable and run the same command again.",
            exit_code=ExitCode.TIMEOUT,
        )
    if result.status != "successful" or result.rc != 0:
        if first is None:
            raise SetupError(
                f"{path.name} failed (status {result.status}, rc {result.rc})",
                hint=FAILED_HINT,
            )
        task, host, message, unreachable = first
        what = "unreachable" if unreachable else "failed"
        raise SetupError(
            mask(f"Ansible task '{task}' {what} on {host}: {message}", secrets),
            hint=UNREACHABLE_HINT if unreachable else FAILED_HINT,
            details=result.failures[1:],
        )
    return result


# --------------------------------------------------------------------------- k3s


def known_hosts_file(ssh_key_path: Path) -> Path:
    """The cluster's known-hosts file: beside its SSH key, so it goes with the cluster."""
    return ssh_key_path.parent / "known_hosts"


def inventory_for(servers: Sequence[K3sNode], ssh_key_path: Path) -> dict[str, Any]:
    """Ansible inventory: the first control-plane server in ``k3s_server``, the rest in
    ``k3s_agents``; root over SSH with kubelab's key, new host keys accepted once into the
    cluster's own known-hosts file beside the key (never the user's ``~/.ssh/known_hosts``:
    a Hetzner IP reused by a later server must not be refused as a changed host key).
    Connections refused while a server boots are retried (``ansible_ssh_retries``)."""
    if not servers:
        raise SetupError("no servers to install k3s on")
    control = [s for s in servers if s.role in CONTROL_PLANE_ROLES]
    server = control[0] if control else servers[0]
    agents = [s for s in servers if s is not server]

    def host(node: K3sNode) -> dict[str, Any]:
        return {
            "ansible_host": node.public_ip,
            "public_ip": node.public_ip,
            "private_ip": node.private_ip or node.public_ip,
        }

    return {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(ssh_key_path),
                "ansible_ssh_common_args": (
                    f"-o UserKnownHostsFile={shlex.quote(str(known_hosts_file(ssh_key_path)))} "
                    "-o StrictHostKeyChecking=accept-new -o ConnectTimeout=20 "
                    "-o ServerAliveInterval=15"
                ),
                "ansible_ssh_retries": SSH_RETRIES,
                "ansible_python_interpreter": "auto_silent",
            },
            "children": {
                SERVER_GROUP: {"hosts": {server.name: host(server)}},
                AGENT_GROUP: {"hosts": {a.name: host(a) for a in agents}},
            },
        }
    }


def install_extravars(
    *,
    registry_host: str,
    registry_endpoint: str,
    hcloud_token: str,
    network_id: int | str | None,
    k3s_version: str,
    hcloud_location: str = "",
    cluster_name: str = "",
    kubeconfig_dest: Path | None = None,
) -> dict[str, Any]:
    """The extravars of ``site.yml`` (``hcloud_token`` is secret: see :data:`SECRET_KEYS`)."""
    extravars: dict[str, Any] = {
        "k3s_version": k3s_version,
        "k3s_registry_host": registry_host,
        "k3s_registry_endpoint": registry_endpoint,
        "hcloud_location": hcloud_location,
        "kubelab_cluster": cluster_name,
        "hcloud_token": hcloud_token,
        "hcloud_network_id": "" if network_id is None else str(network_id),
        "hcloud_ccm_chart_version": HCLOUD_CCM_CHART_VERSION,
        "hcloud_csi_chart_version": HCLOUD_CSI_CHART_VERSION,
    }
    if kubeconfig_dest is not None:
        extravars["k3s_kubeconfig_dest"] = str(kubeconfig_dest)
    return extravars


def kubeconfig_for(text: str, public_ip: str) -> str:
    """k3s's kubeconfig (server https://127.0.0.1:6443) pointed at ``public_ip``."""
    for local in ("127.0.0.1", "localhost", "[::1]"):
        text = text.replace(f"https://{local}:", f"https://{public_ip}:")
    return text


def install_k3s(
    servers: Sequence[K3sNode],
    ssh_key_path: Path,
    *,
    registry_host: str = "",
    registry_endpoint: str = "",
    hcloud_token: str | None = None,
    network_id: int | str | None = None,
    hcloud_location: str = "",
    cluster_name: str = "",
    k3s_version: str = K3S_VERSION,
    timeout: int = DEFAULT_TIMEOUT,
) -> str:
    """Install k3s on ``servers`` (``site.yml``) and return the admin kubeconfig text,
    pointed at the control-plane server's public IP. ``hcloud_token`` defaults to
    ``$HCLOUD_TOKEN``."""
    token = hcloud_token if hcloud_token is not None else os.environ.get("HCLOUD_TOKEN", "")
    inventory = inventory_for(servers, ssh_key_path)
    server_hosts = inventory["all"]["children"][SERVER_GROUP]["hosts"]
    public_ip = next(iter(server_hosts.values()))["public_ip"]
    with tempfile.TemporaryDirectory(prefix="kubelab-k3s-") as tmp:
        private = Path(tmp)
        dest = private / "fetched" / "kubeconfig"
        extravars = install_extravars(
            registry_host=registry_host,
            registry_endpoint=registry_endpoint,
            hcloud_token=token,
            network_id=network_id,
            k3s_version=k3s_version,
            hcloud_location=hcloud_location,
            cluster_name=cluster_name,
            kubeconfig_dest=dest,
        )
        run_playbook("site.yml", inventory, extravars, private / "runner", timeout)
        if not dest.is_file():
            raise SetupError(
                "k3s is installed but its kubeconfig was not fetched from the server",
                hint=f"Look for /etc/rancher/k3s/k3s.yaml on {public_ip} and run again.",
            )
        text = dest.read_text(encoding="utf-8")
    return kubeconfig_for(text, public_ip)
