"""``site.yml`` over real SSH to a server that is still booting: the first connection
attempts are refused (no sshd yet, as during cloud-init), the wait play keeps trying, and
the run succeeds once sshd answers. The host key goes into the cluster's own known-hosts
file beside its key, never the user's ``~/.ssh/known_hosts``.

sshd is Debian's ``openssh-server`` (``.ci/run`` installs it), run by this test on a
loopback port with its own host key and config, and stopped by PID.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ansible_runner", reason="ansible-runner is not installed")

from kubelab.providers import k3s
from kubelab.providers.hetzner import NodeInfo, cluster_ssh_key

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen")
BOOT_SECONDS = 6.0  # how long "cloud-init" keeps sshd down after the run starts

pytestmark = pytest.mark.timeout(240)


def _require_sshd() -> None:
    if SSHD.exists() and SSH_KEYGEN and shutil.which("ssh"):
        return
    reason = "sshd/ssh not installed: apt-get install openssh-server openssh-client"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize(
    "ssh_retries",
    [
        # The wait play alone (wait_for_connection) carries the run over the boot...
        0,
        # ...and so do kubelab's ssh retries, for a connection dropped later on.
        k3s.SSH_RETRIES,
    ],
    ids=["wait-play", "ssh-retries"],
)
def test_site_waits_for_ssh_and_keeps_host_keys_per_cluster(
    tmp_path: Path, ssh_retries: int
) -> None:
    _require_sshd()
    assert SSH_KEYGEN is not None
    cluster_dir = tmp_path / "clusters" / "lab"
    cluster_dir.mkdir(parents=True, mode=0o700)
    key_path, public_key = cluster_ssh_key(cluster_dir, "kubelab-lab")
    server = tmp_path / "server"
    server.mkdir(mode=0o700)
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(server / "host_key")], check=True
    )
    (server / "authorized_keys").write_text(public_key + "\n")
    port = _free_port()
    config = server / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {server / 'host_key'}\n"
        f"AuthorizedKeysFile {server / 'authorized_keys'}\nPidFile {server / 'sshd.pid'}\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    user_known_hosts = Path.home() / ".ssh" / "known_hosts"
    before = user_known_hosts.read_text() if user_known_hosts.exists() else None

    started: list[subprocess.Popen[bytes]] = []
    attempts_refused: list[bool] = []

    def boot() -> None:
        # The server exists but refuses SSH for a while, as during cloud-init.
        time.sleep(BOOT_SECONDS)
        attempts_refused.append(_refused(port))
        started.append(
            subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=open(server / "sshd.log", "wb"),  # noqa: SIM115
            )
        )

    inventory = k3s.inventory_for(
        [NodeInfo("lab-cp", "control-plane", 1, "127.0.0.1", "127.0.0.1")], key_path
    )
    inventory["all"]["vars"]["ansible_user"] = getpass.getuser()
    assert inventory["all"]["vars"]["ansible_ssh_retries"] == k3s.SSH_RETRIES
    inventory["all"]["vars"]["ansible_ssh_retries"] = ssh_retries
    host = inventory["all"]["children"]["k3s_server"]["hosts"]["lab-cp"]
    host.update(ansible_port=port, ansible_become=False, ansible_python_interpreter=sys.executable)
    extravars = {
        "k3s_config_dir": str(tmp_path / "etc-k3s"),
        "k3s_manifests_dir": str(tmp_path / "manifests"),
        "k3s_manage_service": False,
        "k3s_flannel_iface": "lo",
        "k3s_connect_timeout": 120,
    }
    booting = threading.Thread(target=boot, daemon=True)
    assert _refused(port)
    began = time.monotonic()
    booting.start()
    try:
        result = k3s.run_playbook("site.yml", inventory, extravars, tags=["config"], timeout=180)
        took = time.monotonic() - began
    finally:
        booting.join(BOOT_SECONDS + 5)
        for proc in started:
            proc.terminate()
            proc.wait(10)
    assert result.status == "successful"
    assert attempts_refused == [True]  # nothing answered until "cloud-init" was done
    assert took >= BOOT_SECONDS  # the run waited instead of failing UNREACHABLE
    assert (tmp_path / "etc-k3s" / "config.yaml").is_file()  # and then did its work
    known = k3s.known_hosts_file(key_path)
    assert known == cluster_dir / "known_hosts"
    # This server's key, under its address (hashed, as Debian's ssh_config has it).
    host_key = (server / "host_key.pub").read_text().split()[1]
    assert host_key in known.read_text()
    found = subprocess.run(
        [SSH_KEYGEN, "-F", f"[127.0.0.1]:{port}", "-f", str(known)], capture_output=True
    )
    assert found.returncode == 0
    after = user_known_hosts.read_text() if user_known_hosts.exists() else None
    assert after == before  # the user's own known_hosts is never written
