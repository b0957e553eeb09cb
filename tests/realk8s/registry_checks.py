"""What "one registry address" means on a cluster, checked on the real API server after
an ``up``: every place that names the registry names the same one."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

from kubelab.cluster.kube import Kube
from kubelab.components import catalog
from kubelab.tools import find_tool

LESSON = "istio-traffic-splitting"


def assert_one_registry_address(kube: Kube, env: dict[str, str], registry: str) -> None:
    """The rendered Deployments' images, the pull Secret's key, Gitea's ROOT_URL (helm's
    values of the release), Gitea's NodePort and the lesson's state all name ``registry``.
    ``env`` holds KUBELAB_HOME and the KUBECONFIG/helm variables of the ``up`` checked."""
    images = {
        c["image"]
        for d in kube.list("apps/v1", "Deployment", "istio", "kubelab.dev/lesson")
        for c in d["spec"]["template"]["spec"]["containers"]
        if c["name"] == "app-backend"
    }
    assert images == {f"{registry}/kubelab/app-backend:v1", f"{registry}/kubelab/app-backend:v2"}
    pull = kube.get("v1", "Secret", "kubelab-registry", "istio")
    assert pull is not None
    auths = json.loads(base64.b64decode(pull["data"][".dockerconfigjson"]))["auths"]
    assert list(auths) == [registry]
    helm = find_tool("helm")
    assert helm is not None
    values = subprocess.run(
        [str(helm), "get", "values", "gitea", "-n", catalog.GITEA_NAMESPACE, "-o", "json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    server = json.loads(values.stdout)["gitea"]["config"]["server"]
    assert server["ROOT_URL"] == f"http://{registry}/"
    gitea_http = kube.get("v1", "Service", catalog.GITEA_SERVICE, catalog.GITEA_NAMESPACE)
    assert gitea_http is not None and gitea_http["spec"]["type"] == "NodePort"
    port = int(registry.rsplit(":", 1)[1])
    assert [p.get("nodePort") for p in gitea_http["spec"]["ports"]] == [port]
    state = json.loads((Path(env["KUBELAB_HOME"]) / "state.json").read_text())
    assert state["lessons"][LESSON]["details"]["registry"] == registry
