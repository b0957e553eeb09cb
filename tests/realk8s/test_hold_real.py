"""``hold_seconds`` in real time against the real API server: a 50/50 split that stays
passes after every sample; one changed to 90/10 halfway (as a student's later patch would)
fails, naming the moment it broke."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest

from kubelab.checks import types
from kubelab.checks.registry import CheckContext
from kubelab.checks.result import Status
from kubelab.checks.runner import run_check

pytestmark = pytest.mark.timeout(120)

ISTIO = "networking.istio.io/v1beta1"


def split(namespace: str, v1: int, v2: int) -> list[dict[str, Any]]:
    subsets = [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")]
    return [
        {
            "apiVersion": ISTIO,
            "kind": "DestinationRule",
            "metadata": {"name": "app-backend", "namespace": namespace},
            "spec": {"host": "app-backend", "subsets": subsets},
        },
        {
            "apiVersion": ISTIO,
            "kind": "VirtualService",
            "metadata": {"name": "app-backend", "namespace": namespace},
            "spec": {
                "hosts": ["app-backend"],
                "http": [
                    {
                        "route": [
                            {"destination": {"host": "app-backend", "subset": "v1"}, "weight": v1},
                            {"destination": {"host": "app-backend", "subset": "v2"}, "weight": v2},
                        ]
                    }
                ],
            },
        },
    ]


def held(namespace: str) -> types.VirtualServiceWeights:
    return types.VirtualServiceWeights(
        name="app-backend",
        namespace=namespace,
        expect={"v1": 50, "v2": 50},
        hold_seconds=3,
        hold_interval=0.5,
    )


def test_a_split_that_stays_passes_the_hold(control_plane, upstream_crds, namespace) -> None:  # type: ignore[no-untyped-def]
    kube = control_plane.kube()
    kube.apply_all(split(namespace, 50, 50))
    started = time.monotonic()
    result = run_check(held(namespace), CheckContext(kube, sampler=lambda spec: None))  # type: ignore[arg-type,return-value]
    assert result.status is Status.PASSED, result.message
    assert time.monotonic() - started >= 3
    assert result.evidence["hold"]["samples"] >= 6
    assert result.message.startswith("held for 3 s (")


def test_a_split_changed_halfway_fails_naming_when(control_plane, upstream_crds, namespace) -> None:  # type: ignore[no-untyped-def]
    kube = control_plane.kube()
    kube.apply_all(split(namespace, 50, 50))

    def later_patch() -> None:
        time.sleep(1.5)
        kube.apply_all(split(namespace, 90, 10)[1:])

    patcher = threading.Thread(target=later_patch)
    patcher.start()
    try:
        result = run_check(held(namespace), CheckContext(kube, sampler=lambda spec: None))  # type: ignore[arg-type,return-value]
    finally:
        patcher.join()
    assert result.status is Status.FAILED, result.message
    broke = result.evidence["hold"]["broke_after"]
    assert 1.5 <= broke < 3, result.message
    assert re.match(
        r"broke at \d\d:\d\d:\d\d UTC, [12]\.\d s into the 3 s it must hold", result.message
    )
    assert "subset v1 gets 90%, expected 50%" in result.message
