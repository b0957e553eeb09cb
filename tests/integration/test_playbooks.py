"""The k3s playbooks: syntax, and the parts that run on localhost through ansible-runner.

Rendering of config.yaml / registries.yaml / the Hetzner add-on manifests runs for real
(connection local, no become, paths in a temporary directory, tags config/addons), twice,
and the second run must change nothing. A failing playbook shows how errors reach the user,
and a recognisable fake token must never appear in anything kubelab logs or raises.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip(
    "ansible_runner", reason="ansible-runner is not installed (pip install ansible-runner)"
)
pytest.importorskip("ansible", reason="ansible-core is not installed (pip install ansible-core)")

from kubelab.errors import SetupError
from kubelab.providers import k3s

PLAYBOOKS = k3s.playbooks_dir()
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
FAKE_TOKEN = "hc-FAKE-TOKEN-1f2e3d4c5b6a79880123456789abcdef0123456789abcdef0123456789ab"


def _local_inventory(group: str, **hostvars: Any) -> dict[str, Any]:
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "ansible_become": False,
        **hostvars,
    }
    return {"all": {"children": {group: {"hosts": {"localhost": host}}}}}


def _local_extravars(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "k3s_config_dir": str(tmp_path / "etc-k3s"),
        "k3s_manifests_dir": str(tmp_path / "manifests"),
        "k3s_manage_service": False,
        "k3s_flannel_iface": "enp7s0",
        "k3s_registry_host": "gitea.lab.example:30300",
        "k3s_registry_endpoint": "http://10.0.1.2:30300",
        **extra,
    }


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook not in the venv")
@pytest.mark.parametrize("playbook", ["site.yml", "k3s-server.yml", "k3s-agent.yml"])
def test_syntax_check(playbook: str) -> None:
    proc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "--syntax-check", "-i", "localhost,", str(PLAYBOOKS / playbook)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{ANSIBLE_PLAYBOOK.parent}:/usr/bin:/bin", "ANSIBLE_NOCOLOR": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_server_config_rendered_and_idempotent(tmp_path: Path) -> None:
    inventory = _local_inventory("k3s_server", private_ip="10.0.1.2", public_ip="203.0.113.10")
    # What the Hetzner provider passes (hetzner._default_installer), on local paths.
    wired = k3s.install_extravars(
        registry_host="localhost:30300",
        registry_endpoint="http://localhost:30300",
        hcloud_token=FAKE_TOKEN,
        network_id=4711,
        k3s_version=k3s.K3S_VERSION,
        hcloud_location="hel1",
        cluster_name="lab",
    )
    extravars = {**wired, **_local_extravars(tmp_path)}
    for key in ("k3s_registry_host", "k3s_registry_endpoint"):
        extravars[key] = wired[key]
    first = k3s.run_playbook(
        "k3s-server.yml", inventory, extravars, tags=["config", "addons"], timeout=120
    )
    assert first.changed >= 5  # config dir, config.yaml, registries.yaml, 3 manifests...

    config = yaml.safe_load((tmp_path / "etc-k3s" / "config.yaml").read_text())
    # One default StorageClass: the CSI driver's hcloud-volumes, not k3s's local-storage.
    assert config["disable"] == ["traefik", "servicelb", "local-storage"]
    assert config["disable-cloud-controller"] is True
    assert config["kubelet-arg"] == ["cloud-provider=external"]
    assert config["node-ip"] == "10.0.1.2"
    assert config["flannel-iface"] == "enp7s0"
    assert config["tls-san"] == ["203.0.113.10"]
    assert config["write-kubeconfig-mode"] == "0600"
    assert (tmp_path / "etc-k3s" / "config.yaml").stat().st_mode & 0o777 == 0o600

    registries = yaml.safe_load((tmp_path / "etc-k3s" / "registries.yaml").read_text())
    # The registry address the images carry, pulled over plain HTTP from Gitea's NodePort.
    assert registries == {"mirrors": {"localhost:30300": {"endpoint": ["http://localhost:30300"]}}}

    manifests = tmp_path / "manifests"
    secret = yaml.safe_load((manifests / "kubelab-hcloud-secret.yaml").read_text())
    assert secret["metadata"] == {"name": "hcloud", "namespace": "kube-system"}
    assert secret["stringData"] == {"token": FAKE_TOKEN, "network": "4711"}
    assert (manifests / "kubelab-hcloud-secret.yaml").stat().st_mode & 0o777 == 0o600
    ccm = yaml.safe_load((manifests / "kubelab-hcloud-ccm.yaml").read_text())
    assert ccm["kind"] == "HelmChart"
    assert ccm["spec"]["chart"] == "hcloud-cloud-controller-manager"
    assert ccm["spec"]["version"] == k3s.HCLOUD_CCM_CHART_VERSION
    assert ccm["spec"]["repo"] == "https://charts.hetzner.cloud"
    values = yaml.safe_load(ccm["spec"]["valuesContent"])
    assert values["env"]["HCLOUD_NETWORK"]["valueFrom"]["secretKeyRef"] == {
        "name": "hcloud",
        "key": "network",
    }
    # Without a location (or network zone) the CCM makes no load balancer.
    assert values["env"]["HCLOUD_LOAD_BALANCERS_LOCATION"] == {"value": "hel1"}
    csi = yaml.safe_load((manifests / "kubelab-hcloud-csi.yaml").read_text())
    assert (csi["spec"]["chart"], csi["spec"]["version"]) == (
        "hcloud-csi",
        k3s.HCLOUD_CSI_CHART_VERSION,
    )
    # Its volumes carry kubelab's labels, so delete and leftovers find them detached too.
    csi_values = yaml.safe_load(csi["spec"]["valuesContent"])
    assert csi_values["controller"]["volumeExtraLabels"] == {
        "kubelab": "true",
        "kubelab-cluster": "lab",
    }

    second = k3s.run_playbook(
        "k3s-server.yml", inventory, extravars, tags=["config", "addons"], timeout=120
    )
    assert second.changed == 0, second.stats
    assert second.total("ok") > 0


def test_agent_config_has_no_server_options(tmp_path: Path) -> None:
    inventory = _local_inventory("k3s_agents", private_ip="10.0.1.3", public_ip="203.0.113.11")
    extravars = _local_extravars(tmp_path, k3s_registry_host="")
    k3s.run_playbook("k3s-agent.yml", inventory, extravars, tags=["config"], timeout=120)
    config = yaml.safe_load((tmp_path / "etc-k3s" / "config.yaml").read_text())
    assert config == {
        "node-ip": "10.0.1.3",
        "flannel-iface": "enp7s0",
        "kubelet-arg": ["cloud-provider=external"],
    }
    registries = yaml.safe_load((tmp_path / "etc-k3s" / "registries.yaml").read_text())
    assert registries == {"mirrors": {}}
    again = k3s.run_playbook("k3s-agent.yml", inventory, extravars, tags=["config"], timeout=120)
    assert again.changed == 0, again.stats


FAILING = """\
- name: broken on purpose
  hosts: all
  gather_facts: false
  tasks:
    - name: Fine task
      ansible.builtin.debug:
        msg: fine
    - name: Explode with the token in the message
      ansible.builtin.fail:
        msg: "cannot reach the API with token {{ hcloud_token }}"
"""


def test_failure_names_task_and_host_and_hides_the_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    playbook = tmp_path / "broken.yml"
    playbook.write_text(FAILING)
    private = tmp_path / "runner"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SetupError) as info:
        k3s.run_playbook(
            playbook,
            _local_inventory("k3s_server"),
            {"hcloud_token": FAKE_TOKEN},
            private_dir=private,
            timeout=120,
        )
    err = info.value
    assert "Explode with the token in the message" in err.message
    assert "localhost" in err.message
    assert "cannot reach the API" in err.message
    everything = "\n".join([err.message, str(err.hint), *err.details, str(err), caplog.text])
    assert FAKE_TOKEN not in everything
    assert k3s.MASK in err.message
    # The token never went on ansible-playbook's command line.
    for command in private.glob("artifacts/*/command"):
        assert FAKE_TOKEN not in command.read_text()
    assert (private / "env" / "extravars").stat().st_mode & 0o777 == 0o600


def test_unreachable_host_gives_the_ssh_fix(tmp_path: Path) -> None:
    playbook = tmp_path / "ping.yml"
    playbook.write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n"
    )
    inventory = {
        "all": {
            "hosts": {
                "node-1": {
                    "ansible_host": "127.0.0.1",
                    "ansible_port": 1,
                    "ansible_user": "root",
                    "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o ConnectTimeout=5",
                }
            }
        }
    }
    with pytest.raises(SetupError) as info:
        k3s.run_playbook(playbook, inventory, {}, timeout=60)
    assert "unreachable on node-1" in info.value.message
    assert "SSH unreachable" in str(info.value.hint)
    assert "firewall" in str(info.value.hint)


def test_own_private_dir_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    k3s.run_playbook(
        "k3s-agent.yml",
        _local_inventory("k3s_agents", private_ip="10.0.1.3"),
        _local_extravars(tmp_path / "cfg", k3s_token=FAKE_TOKEN),
        tags=["config"],
        timeout=120,
    )
    assert not list(tmp_path.glob("kubelab-ansible-*"))


@pytest.mark.skipif(
    not Path("/usr/sbin/ip").exists()
    and not Path("/sbin/ip").exists()
    and not Path("/usr/bin/ip").exists(),
    reason="no `ip` command here",
)
def test_flannel_interface_detected_from_private_ip(tmp_path: Path) -> None:
    inventory = _local_inventory("k3s_agents", private_ip="127.0.0.1")
    extravars = _local_extravars(tmp_path, k3s_flannel_iface="")
    k3s.run_playbook("k3s-agent.yml", inventory, extravars, tags=["config"], timeout=120)
    config = yaml.safe_load((tmp_path / "etc-k3s" / "config.yaml").read_text())
    assert config["flannel-iface"] == "lo"
