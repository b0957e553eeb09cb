"""``kubelab up istio-traffic-splitting --provider existing`` as an instructor types it, in a
subprocess, against the real kube-apiserver; then the same ``up`` again, then ``down``.

Every step runs for real except what needs the internet or a container runtime:

* components: real helm installs stand-in charts at the pinned versions from a local chart
  folder (``--charts``, laid out as ``kubelab charts pull`` leaves it);
* images: Gitea is the stub of ``tests/integration/test_gitea_api.py`` (Gitea's API and
  registry shapes), reached through a real port-forward (API server -> node agent ->
  stub); there is no Docker engine, so kaniko Jobs build in the cluster, and the node agent
  completes their pods;
* deploy: the project's own chart rendered by helm, applied by kubelab, rolled out by the
  real controllers, Istio's sidecars added by the real injection webhook;
* the first exercise's checks: exec in the tester pod through the API server, answered by
  the mesh stand-in and the real app.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from faultproxy import FaultProxy
from registry_checks import assert_one_registry_address
from standin_charts import standin_folder

from kubelab.cluster.kube import Kube
from kubelab.components import catalog
from kubelab.components.localcharts import lesson_releases
from kubelab.lessons.loader import find_lesson
from kubelab.lessons.runner import LessonRunner
from kubelab.providers.existing import ExistingProvider
from kubelab.state import StateStore
from kubelab.tools import find_tool

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from support import run_cli  # noqa: E402
from test_gitea_api import PASSWORD, StubState  # noqa: E402

LESSON = "istio-traffic-splitting"
#: The existing provider's registry address: Gitea's NodePort on the nodes' loopback.
REGISTRY = "localhost:30300"
HELM = find_tool("helm")

pytestmark = [
    pytest.mark.skipif(HELM is None, reason="helm missing: scripts/install-tools.sh"),
    pytest.mark.timeout(900),
]


def up_json(env: dict[str, str], *extra: str) -> dict[str, Any]:
    proc = run_cli(
        "up", LESSON, "--provider", "existing", *extra, "-o", "json", env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def test_up_twice_then_down_on_the_real_server(  # type: ignore[no-untyped-def]
    control_plane, mesh, gitea: StubState, tmp_path: Path, _isolated_home: Path
) -> None:
    assert HELM is not None
    kube = control_plane.kube()
    charts = tmp_path / "charts"
    releases = lesson_releases(find_lesson(LESSON).lesson.components)
    standin_folder(HELM, releases, charts, tmp_path / "standin-src")
    env = {
        "KUBELAB_HOME": str(_isolated_home),
        "KUBECONFIG": str(control_plane.kubeconfig),
        "PATH": f"{ROOT / '.tools' / 'bin'}:{os.environ['PATH']}",
        "HELM_CACHE_HOME": str(tmp_path / "helm-cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "helm-config"),
        "HELM_DATA_HOME": str(tmp_path / "helm-data"),
        "KUBECACHEDIR": str(tmp_path / "kube-cache"),
    }
    try:
        first = up_json(env, "--charts", str(charts))
        assert first["provider"] == "existing" and first["namespace"] == "istio"
        changes = first["changes"]
        outcomes = {c["name"]: c["outcome"] for c in changes["components"]}
        assert {outcomes[r.name] for r in releases} == {"installed"}
        # The CNI node agent is part of Istio, and up read the cluster's platform from
        # its version (a plain v1.20.2: the usual /opt/cni/bin layout).
        assert "istio-cni" in outcomes
        facts = StateStore().load().lesson(LESSON).details["cluster_facts"]
        assert facts["mesh_platform"] == ""
        assert kube.get("apps/v1", "DaemonSet", "istio-cni-node", "istio-system") is not None
        assert changes["deploy"]["changed"] == changes["deploy"]["objects"] > 0
        assert any("kaniko" in line for line in changes["images"]), changes["images"]
        assert first["first_exercise"]["status"] == "passed", first["first_exercise"]
        # The images step configured Gitea and built in the cluster: Jobs that completed.
        assert any(r.path.endswith("/orgs") and r.method == "POST" for r in gitea.requests)
        jobs = kube.list("batch/v1", "Job", catalog.GITEA_NAMESPACE)
        assert jobs and all(j["status"].get("succeeded") == 1 for j in jobs)
        # kaniko clones the repository kubelab created, on the node's network, where the
        # registry address is Gitea as it is for the container runtime.
        assert ("kubelab", LESSON) in gitea.repos
        for job in jobs:
            pod = job["spec"]["template"]["spec"]
            assert pod["hostNetwork"] is True
            args = pod["containers"][0]["args"]
            assert f"--context=git://{REGISTRY}/kubelab/{LESSON}.git#refs/heads/main" in args
            assert any(a.startswith(f"--destination={REGISTRY}/kubelab/") for a in args)
        secret = kube.get("v1", "Secret", "kubelab-registry", "istio")
        assert secret is not None and secret["type"] == "kubernetes.io/dockerconfigjson"
        assert PASSWORD not in base64.b64decode(secret["data"][".dockerconfigjson"]).decode()
        assert_one_registry_address(kube, env, REGISTRY)
        # The app, as deployed: sidecars injected, rolled out, labelled for `down`.
        pods = kube.list("v1", "Pod", "istio", "app=app-backend")
        assert len(pods) == 2
        assert all("istio-proxy" in [c["name"] for c in p["spec"]["containers"]] for p in pods)
        deployment = kube.get("apps/v1", "Deployment", "app-backend-v1", "istio")
        assert deployment is not None
        assert deployment["metadata"]["labels"]["kubelab.dev/lesson"] == LESSON

        # Kiali asks for a token: `open --token-only` writes one to a private file (never
        # to the terminal), a real ServiceAccount token that can change nothing.
        proc = run_cli("open", "kiali", "--token-only", "-o", "json", env=env)
        assert proc.returncode == 0, proc.stderr
        token_file = Path(json.loads(proc.stdout)["token_file"])
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        assert token and token not in proc.stdout + proc.stderr
        viewer = tmp_path / "viewer.kubeconfig"  # the token only: no client certificate
        viewer.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "c",
                            "cluster": {
                                "server": control_plane.plane.server,
                                "certificate-authority": str(control_plane.plane.ca_file),
                            },
                        }
                    ],
                    "users": [{"name": "u", "user": {"token": token}}],
                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "x",
                }
            )
        )
        # The stand-in chart has no kiali-viewer ClusterRole: the real chart's (its
        # role-viewer.yaml with view_only_mode), reduced to a few of its read-only rules.
        kube.apply(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "kiali-viewer"},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["pods", "services", "namespaces"],
                        "verbs": ["get", "list", "watch"],
                    },
                    {
                        "apiGroups": ["networking.istio.io"],
                        "resources": ["*"],
                        "verbs": ["get", "list", "watch"],
                    },
                ],
            }
        )
        for verb, resource, want in [
            ("list", "pods", "yes"),
            ("get", "virtualservices.networking.istio.io", "yes"),
            ("patch", "virtualservices.networking.istio.io", "no"),
            ("delete", "deployments.apps", "no"),
            ("get", "secrets", "no"),
        ]:
            can = control_plane.kubectl(
                "auth", "can-i", verb, resource, "-A", kubeconfig=viewer, check=False
            )
            # "no" (not "Unauthorized"): the API server took the token as the viewer's.
            assert can.stdout.strip() == want, (verb, resource, can.stdout, can.stderr)

        writes_before = gitea.writes()
        second = up_json(env)  # no --charts: the recorded folder is used
        changes = second["changes"]
        assert {c["outcome"] for c in changes["components"]} <= {"unchanged"}, changes
        assert changes["deploy"]["changed"] == 0, changes
        # Nothing written: the pull Secret names the same registry address as before.
        assert changes["api_writes"] == 0, changes
        assert_one_registry_address(kube, env, REGISTRY)
        assert gitea.writes() == writes_before  # Gitea already holds everything
        assert second["first_exercise"]["status"] in ("passed", "failed")

        proc = run_cli("status", "-o", "json", env=env)
        assert proc.returncode == 0, proc.stderr
        assert LESSON in proc.stdout

        viewer = "kubelab-dashboard-viewer"
        assert kube.get("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", viewer)
        assert kube.get("telemetry.istio.io/v1", "Telemetry", "mesh-default", "istio-system")
        proc = run_cli("down", LESSON, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert kube.get("v1", "Namespace", "istio") is None  # finalized before down returned
        # What kubelab applied beside the releases goes too (cluster-scoped included).
        assert kube.get("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", viewer) is None
        assert kube.get("v1", "ServiceAccount", viewer, "istio-system") is None
        assert (
            kube.get("telemetry.istio.io/v1", "Telemetry", "mesh-default", "istio-system") is None
        )
        assert kube.list("apps/v1", "Deployment", "istio") == []
        left = [
            r.name
            for r in releases
            if kube.list("v1", "Secret", r.namespace, f"owner=helm,name={r.name}")
        ]
        assert left == []
    finally:
        run_cli("down", LESSON, env=env, timeout=600)
        control_plane.delete_namespaces({"istio", "gitea", *(r.namespace for r in releases)})
        kube.delete("rbac.authorization.k8s.io/v1", "ClusterRole", "kiali-viewer")


# -- faults and interruptions, with the lifecycle in-process ---------------------------------------


class AppOnly(ExistingProvider):
    """The existing provider on a cluster whose components and images are already there:
    `up` applies and checks the lesson's app only (its other steps are tested above)."""

    installs_components = False
    builds_images = False


LESSON_KINDS = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "Pod"),
    ("networking.istio.io/v1", "VirtualService"),
    ("networking.istio.io/v1", "DestinationRule"),
    ("networking.istio.io/v1", "Gateway"),
)


def lesson_objects(kube: Kube) -> list[tuple[str, str]]:
    found = []
    for api_version, kind in LESSON_KINDS:
        found += [
            (kind, o["metadata"]["name"])
            for o in kube.list(api_version, kind, "istio", "kubelab.dev/lesson")
            if not o["metadata"].get("ownerReferences")  # what kubelab applied, not its pods
        ]
    return sorted(found)


EXPECTED = sorted(
    [
        ("Deployment", "app-backend-v1"),
        ("Deployment", "app-backend-v2"),
        ("Service", "app-backend"),
        ("Pod", "curl-test"),
        ("VirtualService", "app-backend"),
        ("DestinationRule", "app-backend"),
        ("Gateway", "app-backend-gateway"),
    ]
)


@pytest.fixture
def clean_istio(control_plane) -> Iterator[None]:  # type: ignore[no-untyped-def]
    yield
    kube = control_plane.kube()
    kube.delete("v1", "Namespace", "istio")
    kube.wait_for(
        lambda: kube.get("v1", "Namespace", "istio") is None, timeout=120, what="istio to go"
    )


@pytest.mark.parametrize("mode", ["429", "500"])
def test_up_completes_when_the_api_fails_every_fifth_call(  # type: ignore[no-untyped-def]
    control_plane, mesh, clean_istio, tmp_path: Path, _isolated_home: Path, mode: str
) -> None:
    proxy = FaultProxy(control_plane.plane)
    try:
        proxy.faults.mode, proxy.faults.every = mode, 5
        store = StateStore()
        provider = AppOnly(proxy.kubeconfig(tmp_path / "proxy.kubeconfig"))
        runner = LessonRunner(find_lesson(LESSON), provider, store, poll=0.1)
        result = runner.up()
        assert result.first is not None and str(result.first.status) == "passed"
        assert proxy.faults.injected > 0 and runner.kube.retries > 0
        assert lesson_objects(control_plane.kube()) == EXPECTED  # each exactly once
    finally:
        proxy.close()


def test_interrupted_up_resumes_without_duplicates(  # type: ignore[no-untyped-def]
    control_plane, mesh, clean_istio, monkeypatch: pytest.MonkeyPatch, _isolated_home: Path
) -> None:
    store = StateStore()
    loaded = find_lesson(LESSON)
    provider = AppOnly(control_plane.kubeconfig)
    # The deploy step applies each object through Kube.apply_keeping_changes.
    real_apply = Kube.apply_keeping_changes
    calls = {"n": 0}

    def apply_then_ctrl_c(self: Kube, obj: Any, *args: Any, **kwargs: Any) -> Any:
        if obj.get("kind") == "Service" and not calls["n"]:
            calls["n"] += 1
            raise KeyboardInterrupt  # Ctrl-C half-way through the deploy step
        return real_apply(self, obj, *args, **kwargs)

    monkeypatch.setattr(Kube, "apply_keeping_changes", apply_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        LessonRunner(loaded, provider, store, poll=0.1).up()
    record = store.load().lesson(LESSON)
    assert "cluster" in record.steps_done and "deploy" not in record.steps_done
    monkeypatch.setattr(Kube, "apply_keeping_changes", real_apply)
    resumed = LessonRunner(loaded, provider, store, poll=0.1)
    result = resumed.up()
    assert lesson_objects(control_plane.kube()) == EXPECTED
    assert "deploy" in store.load().lesson(LESSON).steps_done
    assert result.first is not None and str(result.first.status) == "passed"
    # `down` on a cluster with components: the lesson's objects by label, then its releases
    # (none were installed here, and helm says so quietly).
    removed = LessonRunner(loaded, ExistingProvider(control_plane.kubeconfig), store).down()
    assert lesson_objects(control_plane.kube()) == []
    assert "namespace/istio" in removed
