"""kubelab.providers.k3s without SSH: inventory, extravars, kubeconfig and secret masking."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelab.errors import SetupError
from kubelab.providers import k3s

FAKE_TOKEN = "hc-FAKE-TOKEN-1f2e3d4c5b6a79880123456789abcdef0123456789abcdef0123456789ab"


@dataclass(frozen=True)
class Node:
    name: str
    role: str
    public_ip: str
    private_ip: str | None


SERVERS = [
    Node("lab-cp", "control-plane", "203.0.113.10", "10.0.1.2"),
    Node("lab-w1", "worker", "203.0.113.11", "10.0.1.3"),
    Node("lab-w2", "worker", "203.0.113.12", None),
]

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: Q0E=
    server: https://127.0.0.1:6443
  name: default
contexts:
- context: {cluster: default, user: default}
  name: default
current-context: default
users:
- name: default
  user: {client-certificate-data: Q0VSVA==, client-key-data: S0VZ}
"""


def test_inventory_groups_control_plane_and_agents(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    inv = k3s.inventory_for(SERVERS, key)
    variables = inv["all"]["vars"]
    assert variables["ansible_user"] == "root"
    assert variables["ansible_ssh_private_key_file"] == str(key)
    assert "StrictHostKeyChecking=accept-new" in variables["ansible_ssh_common_args"]
    children = inv["all"]["children"]
    assert children["k3s_server"]["hosts"] == {
        "lab-cp": {
            "ansible_host": "203.0.113.10",
            "public_ip": "203.0.113.10",
            "private_ip": "10.0.1.2",
        },
    }
    agents = children["k3s_agents"]["hosts"]
    assert set(agents) == {"lab-w1", "lab-w2"}
    # No private network: the public IP stands in.
    assert agents["lab-w2"]["private_ip"] == "203.0.113.12"


def test_inventory_picks_the_control_plane_wherever_it_is(tmp_path: Path) -> None:
    inv = k3s.inventory_for([SERVERS[1], SERVERS[0]], tmp_path / "key")
    assert list(inv["all"]["children"]["k3s_server"]["hosts"]) == ["lab-cp"]
    assert list(inv["all"]["children"]["k3s_agents"]["hosts"]) == ["lab-w1"]


def test_inventory_needs_servers(tmp_path: Path) -> None:
    with pytest.raises(SetupError):
        k3s.inventory_for([], tmp_path / "key")


def test_install_extravars_pin_versions() -> None:
    extravars = k3s.install_extravars(
        registry_host="gitea.lab:30300",
        registry_endpoint="http://10.0.1.2:30300",
        hcloud_token=FAKE_TOKEN,
        network_id=4711,
        k3s_version=k3s.K3S_VERSION,
    )
    assert extravars["k3s_version"] == "v1.35.5+k3s1"
    assert extravars["hcloud_network_id"] == "4711"
    assert extravars["hcloud_ccm_chart_version"] == k3s.HCLOUD_CCM_CHART_VERSION
    assert extravars["hcloud_csi_chart_version"] == k3s.HCLOUD_CSI_CHART_VERSION
    assert extravars["k3s_registry_host"] == "gitea.lab:30300"
    assert "k3s_kubeconfig_dest" not in extravars
    assert "hcloud_token" in k3s.SECRET_KEYS


def test_python_pins_match_the_playbook_defaults() -> None:
    defaults = yaml.safe_load((k3s.playbooks_dir() / "vars.yml").read_text())
    assert defaults["k3s_version"] == k3s.K3S_VERSION
    assert defaults["hcloud_ccm_chart_version"] == k3s.HCLOUD_CCM_CHART_VERSION
    assert defaults["hcloud_csi_chart_version"] == k3s.HCLOUD_CSI_CHART_VERSION


def test_kubeconfig_points_at_public_ip() -> None:
    doc = yaml.safe_load(k3s.kubeconfig_for(KUBECONFIG, "203.0.113.10"))
    assert doc["clusters"][0]["cluster"]["server"] == "https://203.0.113.10:6443"


def test_mask_hides_secrets() -> None:
    secrets = k3s.secret_values({"hcloud_token": FAKE_TOKEN, "other": "x"}, k3s.SECRET_KEYS)
    assert secrets == [FAKE_TOKEN]
    assert FAKE_TOKEN not in k3s.mask(f"boom {FAKE_TOKEN} boom", secrets)
    assert k3s.secret_values({"hcloud_token": ""}, k3s.SECRET_KEYS) == []


def test_install_k3s_runs_site_and_returns_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_run(
        playbook: str,
        inventory: dict[str, Any],
        extravars: dict[str, Any],
        private_dir: Path | None = None,
        timeout: int = 0,
    ) -> k3s.Result:
        calls.append(
            {
                "playbook": playbook,
                "inventory": inventory,
                "extravars": extravars,
                "private_dir": private_dir,
                "timeout": timeout,
            }
        )
        dest = Path(extravars["k3s_kubeconfig_dest"])
        dest.parent.mkdir(parents=True)
        dest.write_text(KUBECONFIG)
        return k3s.Result(status="successful", rc=0)

    monkeypatch.setattr(k3s, "run_playbook", fake_run)
    text = k3s.install_k3s(
        SERVERS,
        tmp_path / "id_ed25519",
        registry_host="gitea.lab:30300",
        registry_endpoint="http://10.0.1.2:30300",
        hcloud_token=FAKE_TOKEN,
        network_id=4711,
        k3s_version="v1.35.5+k3s1",
    )
    assert "https://203.0.113.10:6443" in text and "127.0.0.1" not in text
    [call] = calls
    assert call["playbook"] == "site.yml"
    assert call["extravars"]["hcloud_token"] == FAKE_TOKEN
    assert call["extravars"]["hcloud_network_id"] == "4711"
    assert call["inventory"]["all"]["vars"]["ansible_ssh_private_key_file"].endswith("id_ed25519")
    # The temporary directory with the fetched kubeconfig is gone.
    assert not Path(call["extravars"]["k3s_kubeconfig_dest"]).exists()


def test_install_k3s_token_defaults_to_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_run(playbook: str, inventory: Any, extravars: dict[str, Any], *a: Any) -> k3s.Result:
        seen.update(extravars)
        return k3s.Result(status="successful", rc=0)

    monkeypatch.setattr(k3s, "run_playbook", fake_run)
    monkeypatch.setenv("HCLOUD_TOKEN", FAKE_TOKEN)
    # Called like the Hetzner provider's Installer protocol: (servers, key).
    with pytest.raises(SetupError, match="kubeconfig was not fetched") as info:
        k3s.install_k3s(SERVERS, tmp_path / "key")
    assert seen["hcloud_token"] == FAKE_TOKEN
    assert FAKE_TOKEN not in str(info.value) + str(info.value.hint)
