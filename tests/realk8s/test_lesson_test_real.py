"""``kubelab test`` on a shared cluster refuses, with the fix, to deploy into a lesson
namespace that someone uses, and leaves what runs there alone."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from support import run_cli  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def test_a_namespace_in_use_is_refused(control_plane, _isolated_home: Path) -> None:  # type: ignore[no-untyped-def]
    kube = control_plane.kube()
    control_plane.create_namespace("istio")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "someones-app", "namespace": "istio"},
        "spec": {"containers": [{"name": "app", "image": "app-backend:v1"}]},
    }
    kube.apply(pod)
    env = {
        "KUBELAB_HOME": str(_isolated_home),
        "KUBECONFIG": str(control_plane.kubeconfig),
        "PATH": f"{ROOT / '.tools' / 'bin'}:{os.environ['PATH']}",
    }
    try:
        proc = run_cli("test", "istio-traffic-splitting", "--provider", "existing", env=env)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "namespace istio already has pods on this cluster" in proc.stderr
        assert "kubelab test istio-traffic-splitting --provider sandbox" in proc.stderr
        assert "Traceback" not in proc.stderr
        # Nothing was deployed or removed, and no lesson is left recorded.
        assert kube.get("v1", "Pod", "someones-app", "istio") is not None
        assert kube.list("apps/v1", "Deployment", "istio") == []
        status = run_cli("status", "-o", "json", env=env)
        assert json.loads(status.stdout)["lessons"] == []
    finally:
        control_plane.delete_namespaces({"istio"})
