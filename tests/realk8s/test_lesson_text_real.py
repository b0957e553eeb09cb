"""The lesson's own commands, as printed, against the real API server: what a student sees
must name the sidecar whether Istio injected it as a container (Kubernetes < 1.33) or as a
native sidecar, an init container (1.33 and newer: kind v1.35, k3s v1.35)."""

from __future__ import annotations

from typing import Any

import pytest
from support import lesson_block, run_bash

pytestmark = pytest.mark.timeout(120)


def _pod(name: str, namespace: str, *, native: bool) -> dict[str, Any]:
    app = {"name": "app-backend", "image": "app-backend:v1"}
    proxy = {"name": "istio-proxy", "image": "istio/proxyv2:1.30.3"}
    init = {"name": "istio-validation", "image": "istio/proxyv2:1.30.3"}
    spec: dict[str, Any] = (
        # A native sidecar is an init container with restartPolicy: Always. v1.20 has no such
        # field (server-side apply refuses it); the layout, which kubectl reads, is the point.
        {"initContainers": [init, proxy], "containers": [app]}
        if native
        else {"initContainers": [init], "containers": [app, proxy]}
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "app-backend"}},
        "spec": spec,
    }


def test_the_container_listing_names_the_sidecar_in_both_layouts(  # type: ignore[no-untyped-def]
    control_plane, namespace: str
) -> None:
    def listing(lang: str) -> str:
        return lesson_block(
            "istio-traffic-splitting", "observe-initial-split", "custom-columns", lang
        )

    command = listing("en")
    assert command == listing("pt")  # one command, both languages
    kube = control_plane.kube()
    kube.apply(_pod("classic", namespace, native=False))
    kube.apply(_pod("native", namespace, native=True))
    # The printed command, run by bash as pasted, its namespace swapped for the test's.
    script = command.replace("-n istio", f"-n {namespace}", 1)
    proc = run_bash(script, control_plane.kubeconfig, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split()[1:] for line in proc.stdout.strip().splitlines()[1:]}
    assert rows["classic"] == ["istio-validation", "app-backend,istio-proxy"]
    assert rows["native"] == ["istio-validation,istio-proxy", "app-backend"]
