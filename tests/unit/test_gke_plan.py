"""GKE cost plan (documented price table) and the kubeconfig document."""

from __future__ import annotations

import sys
from decimal import Decimal

import pytest

from kubelab.errors import UsageError
from kubelab.providers.gke import check_name, kubeconfig_document
from kubelab.providers.gke_pricing import MACHINE_HOURLY, plan


def test_zonal_plan_costs() -> None:
    p = plan("kubelab", 2, "e2-standard-4", "us-central1-a")
    kinds = {r.kind: r for r in p.resources}
    assert kinds["gke-cluster"].hourly == Decimal("0.10")
    assert kinds["node"].count == 2
    assert kinds["node"].hourly == Decimal("0.268024")
    assert p.hourly > Decimal("0.368") and p.monthly == p.hourly * 730
    text = "\n".join(p.lines())
    assert "estimate" in text and "USD" in text and "/month" in text


def test_regional_and_unknown_region_are_noted() -> None:
    p = plan("kubelab", 1, "e2-medium", "europe-west1")
    assert {r.kind: r.count for r in p.resources}["node"] == 3
    assert any("region" in n for n in p.notes)
    q = plan("kubelab", 1, "e2-medium", "southamerica-east1-a")
    assert any("not in kubelab's price table" in n for n in q.notes)
    assert any("not re-checked" in n for n in p.notes)
    assert not any("re-checked" in n for n in plan("k", 1, "e2-medium", "us-central1-a").notes)


def test_us_central1_rows_follow_the_e2_unit_rates() -> None:
    # E2 in us-central1: USD 0.021811 per vCPU-hour and 0.002923 per GB-hour (module docstring)
    vcpu, gb = Decimal("0.021811"), Decimal("0.002923")
    rows = MACHINE_HOURLY["us-central1"]
    assert rows["e2-medium"] == vcpu * 1 + gb * 4
    assert rows["e2-standard-2"] == vcpu * 2 + gb * 8
    assert rows["e2-standard-4"] == vcpu * 4 + gb * 16


def test_unknown_machine_type_and_bad_input() -> None:
    with pytest.raises(UsageError, match="no price"):
        plan("kubelab", 1, "n2-standard-64", "us-central1-a")
    with pytest.raises(UsageError):
        plan("kubelab", 0, "e2-medium", "us-central1-a")
    with pytest.raises(UsageError):
        check_name("Bad_Name")


def test_kubeconfig_exec_entry() -> None:
    doc = kubeconfig_document("c", "1.2.3.4", "Q0E=")
    user = doc["users"][0]["user"]
    assert "token" not in user
    assert user["exec"]["command"] == sys.executable
    assert user["exec"]["apiVersion"] == "client.authentication.k8s.io/v1"
    assert doc["current-context"] == "gke-c"
