"""Pure parts of the Hetzner provider: prices, names, firewall rules, errors, files."""

from __future__ import annotations

import stat
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from hcloud import APIException

from kubelab.errors import SetupError, UsageError
from kubelab.providers import hetzner
from kubelab.providers.hetzner import (
    HetznerCluster,
    Pricing,
    cluster_ssh_key,
    explain,
    firewall_rules,
    point_kubeconfig_at,
    selector_for,
    validate_name,
)
from kubelab.state import StateStore

DOC = {
    "currency": "EUR",
    "server_types": [
        {
            "name": "cx33",
            "prices": [
                {
                    "location": "fsn1",
                    "price_hourly": {"net": "0.0080", "gross": "0.0095"},
                    "price_monthly": {"net": "4.9900", "gross": "5.9381"},
                }
            ],
        }
    ],
    "primary_ips": [
        {
            "type": "ipv4",
            "prices": [
                {
                    "location": "fsn1",
                    "price_hourly": {"net": "0.0008", "gross": "0.0010"},
                    "price_monthly": {"net": "0.5000", "gross": "0.5950"},
                }
            ],
        }
    ],
    "volume": {"price_per_gb_month": {"net": "0.0440", "gross": "0.0524"}},
}


def test_pricing_reads_gross_prices_per_location() -> None:
    prices = Pricing(DOC)
    assert prices.server("cx33", "fsn1") == (Decimal("0.0095"), Decimal("5.9381"))
    assert prices.has_server_type("cx33", "fsn1")
    assert not prices.has_server_type("cx33", "sin")
    assert prices.server("cx99", "fsn1") == (Decimal(0), Decimal(0))
    assert prices.primary_ipv4("fsn1")[1] == Decimal("0.5950")
    assert prices.volume_gb_month() == Decimal("0.0524")
    assert prices.load_balancer("lb11", "fsn1") == (Decimal(0), Decimal(0))


@pytest.mark.parametrize("name", ["demo", "a", "class-2025", "x" * 32])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "Demo", "-a", "a-", "a_b", "x" * 33, "a.b"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(UsageError):
        validate_name(name)


def test_selector() -> None:
    assert selector_for("demo") == "kubelab=true,kubelab-cluster=demo"
    assert selector_for(None) == "kubelab=true"


def test_firewall_opens_ssh_and_api_only_to_the_instructor() -> None:
    rules = {r.port: r.source_ips for r in firewall_rules("203.0.113.7/32") if r.port}
    assert rules == {
        "22": ["203.0.113.7/32"],
        "6443": ["203.0.113.7/32"],
        "80": ["0.0.0.0/0", "::/0"],
        "443": ["0.0.0.0/0", "::/0"],
    }


def test_kubeconfig_points_at_public_ip() -> None:
    text = (
        "apiVersion: v1\nclusters:\n- name: default\n  cluster:\n"
        "    server: https://127.0.0.1:6443\n"
    )
    doc = yaml.safe_load(point_kubeconfig_at(text, "198.51.100.1"))
    assert doc["clusters"][0]["cluster"]["server"] == "https://198.51.100.1:6443"
    with pytest.raises(SetupError):
        point_kubeconfig_at("just text", "198.51.100.1")


def test_ssh_key_is_ed25519_and_private(tmp_path: Path) -> None:
    path, public = cluster_ssh_key(tmp_path, "kubelab-demo")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public.startswith("ssh-ed25519 ") and public.endswith(" kubelab-demo")
    assert "PRIVATE" not in public


def test_ssh_key_of_an_earlier_attempt_is_reused(tmp_path: Path) -> None:
    """Servers adopted from an interrupted create hold the first key: a second attempt
    must sign in with it, so the key pair is kept, not made again."""
    path, public = cluster_ssh_key(tmp_path, "kubelab-demo")
    private = path.read_bytes()
    again_path, again = cluster_ssh_key(tmp_path, "kubelab-demo")
    assert (again_path, again) == (path, public)
    assert path.read_bytes() == private
    path.write_text("not a key")  # damaged: a new pair, not a crash
    _, fresh = cluster_ssh_key(tmp_path, "kubelab-demo")
    assert fresh != public and fresh.startswith("ssh-ed25519 ")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("unauthorized", "HCLOUD_TOKEN is not valid"),
        ("forbidden", "the token is read-only: create a Read & Write token"),
        ("token_readonly", "the token is read-only"),
        ("resource_limit_exceeded", "quota exceeded"),
        ("resource_unavailable", "cx33 in fsn1 is not available"),
        ("rate_limit_exceeded", "rate limit"),
        ("uniqueness_error", "Hetzner API error"),
    ],
)
def test_errors_name_the_fix(code: str, expected: str) -> None:
    error = explain(
        APIException(code, "some message", None),
        "creating server x",
        server_type="cx33",
        location="fsn1",
    )
    assert expected in error.message


def test_missing_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HCLOUD_TOKEN", raising=False)
    with pytest.raises(SetupError, match="HCLOUD_TOKEN is not set"):
        HetznerCluster()


def test_endpoint_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HCLOUD_ENDPOINT", "http://127.0.0.1:1/v1")
    cluster = HetznerCluster("t0ken-value", state=StateStore(tmp_path / "s.json"))
    assert cluster.endpoint == "http://127.0.0.1:1/v1"
    assert "t0ken-value" not in repr(cluster)


def test_default_installer_is_k3s_with_token_and_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import functools

    from kubelab.providers import k3s

    installer = hetzner._default_installer("t0ken", 42, "hel1", "lab")
    assert isinstance(installer, functools.partial)
    assert installer.func is k3s.install_k3s
    # The CCM's load balancer location, and k3s's registries.yaml naming the registry.
    assert installer.keywords == {
        "hcloud_token": "t0ken",
        "network_id": 42,
        "hcloud_location": "hel1",
        "cluster_name": "lab",  # the CSI driver labels its volumes kubelab-cluster=lab
        "registry_host": "localhost:30300",
        "registry_endpoint": "http://localhost:30300",
    }
