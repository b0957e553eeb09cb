"""`kubelab up LESSON --dry-run --out DIR` with the real helm: render, validate, write."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from support import ROOT, run_cli

from kubelab.tools import find_tool

pytestmark = pytest.mark.skipif(
    find_tool("helm") is None, reason="helm not found: run scripts/install-tools.sh"
)


def _objects(out):
    found = {}
    for path in sorted((out / "manifests").rglob("*.yaml")):
        obj = yaml.safe_load(path.read_text())
        found[(obj["kind"], obj["metadata"]["name"])] = obj
    return found


def test_dry_run_writes_valid_objects(tmp_path):
    out = tmp_path / "rendered"
    proc = run_cli("up", "istio-traffic-splitting", "--dry-run", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "objects rendered and valid" in proc.stdout
    objects = _objects(out)
    assert set(objects) >= {
        ("Namespace", "istio"),
        ("Deployment", "app-backend-v1"),
        ("Deployment", "app-backend-v2"),
        ("Service", "app-backend"),
        ("DestinationRule", "app-backend"),
        ("VirtualService", "app-backend"),
        ("Gateway", "app-backend-gateway"),
        ("Pod", "curl-test"),
    }
    vs = objects[("VirtualService", "app-backend")]
    route = vs["spec"]["http"][0]["route"]
    assert [(r["destination"]["subset"], r["weight"]) for r in route] == [("v1", 90), ("v2", 10)]
    assert objects[("Namespace", "istio")]["metadata"]["labels"]["istio-injection"] == "enabled"
    for obj in objects.values():
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "kubelab", obj["kind"]
        assert labels["kubelab.dev/lesson"] == "istio-traffic-splitting"
    values = yaml.safe_load((out / "values" / "app-backend.yaml").read_text())
    assert values["weights"] == {"v1": 90, "v2": 10}
    plan = json.loads((out / "plan.json").read_text())
    assert [s["name"] for s in plan["steps"]] == [
        "preflight",
        "cluster",
        "components",
        "images",
        "deploy",
        "exercises",
    ]


def test_written_files_validate_again(tmp_path):
    """What lands in DIR is valid on its own (not only the in-memory objects)."""
    from kubelab.validation.manifests import validate_objects

    out = tmp_path / "rendered"
    assert run_cli("up", "istio-traffic-splitting", "--dry-run", "--out", str(out)).returncode == 0
    docs = [(str(p), yaml.safe_load(p.read_text())) for p in (out / "manifests").rglob("*.yaml")]
    assert len(docs) >= 8
    assert validate_objects(docs) == []


def test_dry_run_json_plan(tmp_path):
    proc = run_cli(
        "up", "istio-traffic-splitting", "--dry-run", "--provider", "existing", "--output", "json"
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["valid"] is True and data["dry_run"] is True
    components = next(s for s in data["steps"] if s["name"] == "components")["items"]
    # dependencies come first
    assert components.index("istio (istio-system)") < next(
        i for i, c in enumerate(components) if c.startswith("kiali")
    )
    assert {"kind": "VirtualService", "name": "app-backend"}.items() <= next(
        o for o in data["objects"] if o["kind"] == "VirtualService"
    ).items()


def test_invalid_values_in_a_lesson_fail_the_dry_run(tmp_path):
    """A lesson whose values break the chart's schema is reported when it loads (before
    helm), at its line, exit 2, no traceback."""
    import shutil

    lesson = tmp_path / "istio-traffic-splitting"
    shutil.copytree(ROOT / "labs" / "istio-traffic-splitting", lesson)
    text = (lesson / "lesson.yaml").read_text()
    (lesson / "lesson.yaml").write_text(
        text.replace("weights: {v1: 90, v2: 10}", "weights: {v1: 45, v2: 50}")
    )
    proc = run_cli("up", str(lesson), "--dry-run")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert (
        "istio-traffic-splitting/lesson.yaml:41: deploy[0].values.weights: "
        "must add up to 100 (v1 45 + v2 50 = 95)"
    ) in proc.stderr
    assert "helm could not render" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_dry_run_lists_components_with_exact_versions_and_masked_values():
    proc = run_cli(
        "up", "istio-traffic-splitting", "--dry-run", "--provider", "existing", "--output", "json"
    )
    assert proc.returncode == 0, proc.stderr
    components = json.loads(proc.stdout)["components"]
    releases = {c["release"]: c for c in components}
    assert {"istio-base", "istiod", "istio-ingressgateway", "kiali", "jaeger", "gitea"} <= set(
        releases
    )
    for release in components:
        assert {"chart", "version", "repo", "namespace", "depends_on", "values"} <= set(release)
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", release["version"]), release
    assert releases["istiod"]["depends_on"] == ["istio-base", "istio-cni"]
    # The plan shows that sidecars rely on Istio CNI, and that the existing provider's
    # platform is not known before the cluster answers (up reads it from its version).
    assert releases["istiod"]["values"]["cni"] == {"enabled": True}
    assert releases["istio-cni"]["values"] == {}
    # Gitea's admin password is never in the values: it comes from a Secret (masked name).
    assert "password" not in json.dumps(releases["gitea"]["values"]).lower().replace(
        "passwordmode", ""
    )


def test_domain_serves_the_app_at_its_own_host_with_tls():
    from kubelab.components.values import InstallSettings, app_gateway_values, tls_manifests
    from kubelab.lessons.loader import find_lesson
    from kubelab.lessons.plan import render

    settings = InstallSettings(domain="lab.example.org", tls=True, email="teacher@example.org")
    rendered = render(
        find_lesson("istio-traffic-splitting"), app_values=app_gateway_values(settings)
    )
    objects = {(o.kind, o.name): o.obj for o in rendered.objects}
    gateway = objects[("Gateway", "app-backend-gateway")]
    https = next(s for s in gateway["spec"]["servers"] if s["port"]["number"] == 443)
    assert https["hosts"] == ["app.lab.example.org"]
    assert "app.lab.example.org" in objects[("VirtualService", "app-backend")]["spec"]["hosts"]
    certificate = next(o for o in tls_manifests(settings) if o["kind"] == "Certificate")
    assert "app.lab.example.org" in certificate["spec"]["dnsNames"]
    assert https["tls"]["credentialName"] == certificate["spec"]["secretName"]


def test_the_app_route_cannot_shadow_the_acme_challenge():
    """With --tls, cert-manager proves app.<domain> through a temporary Ingress of class
    istio, whose route (/.well-known/acme-challenge/<token>) istiod merges with the app's on
    the gateway's port 80. Istio 1.30.3 moves catch-all routes (prefix "/", no header or
    query match) behind the others when it merges them (pilot/pkg/networking/core/
    gateway.go: SortVHostRoutes), so the app's route must stay a catch-all: a route with a
    match of its own would keep its place and could answer the challenge instead."""
    from kubelab.components.values import InstallSettings, app_gateway_values
    from kubelab.lessons.loader import find_lesson
    from kubelab.lessons.plan import render

    settings = InstallSettings(domain="lab.example.org", tls=True, email="teacher@example.org")
    # The lesson that serves its app at app.<domain> (the others expose no app host).
    rendered = render(
        find_lesson("istio-traffic-splitting"), app_values=app_gateway_values(settings)
    )
    objects = {(o.kind, o.name): o.obj for o in rendered.objects}
    service = objects[("VirtualService", "app-backend")]
    assert "app.lab.example.org" in service["spec"]["hosts"]
    assert service["spec"]["http"], service
    for route in service["spec"]["http"]:
        for match in route.get("match") or [{}]:
            assert set(match) <= {"uri"} and match.get("uri", {"prefix": "/"}) == {"prefix": "/"}


def test_kind_dry_run_renders_exactly_what_up_on_kind_installs(tmp_path):
    """`up --dry-run --provider kind` is made from kind's own facts (its NodePort gateway
    and Gitea, its registry address), the same settings `up` on kind installs with."""
    from kubelab.components.deploy import component_plan
    from kubelab.lessons.loader import find_lesson
    from kubelab.lessons.runner import LessonRunner
    from kubelab.providers.kind import GITEA_NODE_PORT, KindProvider, registry_host
    from kubelab.state import StateStore

    lesson = find_lesson("istio-traffic-splitting")
    out = tmp_path / "out"
    proc = run_cli(
        "up", lesson.lesson.id, "--dry-run", "--provider", "kind", "-o", "json", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)["components"]
    # What the runner of a kind `up` installs with (before its first step: the provider's).
    settings = LessonRunner(lesson, KindProvider(), StateStore(tmp_path / "state.json")).settings()
    assert shown == json.loads(json.dumps(component_plan(lesson.lesson.components, settings)))
    releases = {c["release"]: c["values"] for c in shown}
    assert releases["gitea"]["service"]["http"] == {
        "type": "NodePort",
        "port": 3000,
        "clusterIP": "",
        "nodePort": GITEA_NODE_PORT,
    }
    assert (
        releases["gitea"]["gitea"]["config"]["server"]["ROOT_URL"] == f"http://{registry_host()}/"
    )
    service = releases["istio-ingressgateway"]["service"]
    assert service["type"] == "NodePort"
    assert [p.get("nodePort") for p in service["ports"]] == [None, 30080, 30443]
    objects = _objects(out)
    pod = objects[("Deployment", "app-backend-v1")]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == f"{registry_host()}/kubelab/app-backend:v1"
    assert pod["imagePullSecrets"] == [{"name": "kubelab-registry"}]
