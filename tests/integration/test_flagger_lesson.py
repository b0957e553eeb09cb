"""The flagger-canary lesson and its chart (charts/app-canary), with the real helm and bash.

What can be real without a cluster is: the lesson file through the loader, the chart through
``helm lint``/``helm template`` and kubelab's own dry run, every rendered Canary and
MetricTemplate against Flagger's upstream CRD schema (kubelab/validation/crds, synced from
../shared/schemas/crds), the Canary patches the exercises and solve scripts apply (merged
into the rendered Canary and validated the same way), the solve scripts through ``bash -n``
and shellcheck, and the names every check points at. The solve scripts also run for real,
against a stand-in kubectl with a small model of Flagger's state machine, to test the path
each takes from each starting state (idempotency, a student's half-done work). Flagger itself
only runs on a real cluster: tests/e2e/test_lesson_on_cluster.py.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import ROOT, run_cli

from kubelab.checks import types as check_types
from kubelab.components.values import metrics_url
from kubelab.lessons.loader import load_lesson
from kubelab.lessons.model import Lesson
from kubelab.tools import find_tool
from kubelab.validation import manifests

LESSON_DIR = ROOT / "labs" / "flagger-canary"
CHART = ROOT / "charts" / "app-canary"
NAMESPACE = "canary-lab"
HELM = find_tool("helm")

needs_helm = pytest.mark.skipif(HELM is None, reason="helm not found: run scripts/install-tools.sh")

Obj = dict[str, Any]


# --------------------------------------------------------------------------- helpers


def _lesson() -> Lesson:
    return load_lesson(LESSON_DIR).lesson


def _helm_template(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run(
        [str(HELM), "template", "app-backend", str(CHART), "-n", NAMESPACE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _objects(out: Path) -> dict[tuple[str, str], Obj]:
    """The lesson's objects a dry-run wrote (the components' own are in _components/)."""
    found = {}
    for path in sorted((out / "manifests").rglob("*.yaml")):
        if "_components" in path.parts:
            continue
        obj = yaml.safe_load(path.read_text())
        found[(obj["kind"], obj["metadata"]["name"])] = obj
    return found


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Obj]:
    """`kubelab up flagger-canary --dry-run --out DIR`, read back from DIR."""
    if HELM is None:
        pytest.skip("helm not found: run scripts/install-tools.sh")
    out = tmp_path_factory.mktemp("flagger-rendered")
    proc = run_cli("up", "flagger-canary", "--dry-run", "--provider", "existing", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "objects rendered and valid" in proc.stdout
    return _objects(out)


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as `kubectl patch --type merge` applies it."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


# The JSON may start on the line after -p ' (the lessons keep lines under 80 columns).
_PATCH_ARG = re.compile(r"kubectl patch canary .*?-p '\s*(\{.*?\})'", re.DOTALL)
_SCRIPT_PATCH = re.compile(
    r'k patch canary "\$CANARY" --type merge \\?\s*-p \'(\{.*?\})\'', re.DOTALL
)


def _instruction_patches(exercise_id: str, lang: str = "en") -> list[Obj]:
    exercise = _lesson().exercise(exercise_id)
    assert exercise is not None
    text = exercise.instructions.get(lang)
    return [json.loads(m) for m in _PATCH_ARG.findall(text)]


def _script_patches(script: str) -> list[Obj]:
    return [json.loads(m) for m in _SCRIPT_PATCH.findall((LESSON_DIR / script).read_text())]


def _canary_problems(canary: Obj) -> list[str]:
    return [str(p) for p in manifests.validate_object(canary, "canary.yaml")]


# --------------------------------------------------------------------------- the lesson file


def test_lesson_loads_and_validates():
    lesson = _lesson()
    assert lesson.id == "flagger-canary"
    assert lesson.components == ["istio", "victoria-metrics", "kiali", "jaeger", "gitea", "flagger"]
    assert [ns.name for ns in lesson.namespaces] == [NAMESPACE]
    assert lesson.namespaces[0].istio_injection
    assert [d.chart for d in lesson.deploy] == ["charts/app-canary"]
    assert [e.id for e in lesson.exercises] == [
        "observe-canary",
        "promote-v2",
        "automated-rollback",
        "session-affinity",
        "traffic-mirroring",
    ]
    proc = run_cli("validate", str(LESSON_DIR))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_exercise_has_both_languages_hints_and_flagger_checks():
    for exercise in _lesson().exercises:
        for text in (exercise.title, exercise.instructions, *exercise.hints):
            assert text.get("pt").strip() and text.get("en").strip()
            assert text.get("pt") != text.get("en")
        types = {c.type for c in exercise.checks}
        assert "flagger-canary" in types, exercise.id
        # Same commands in both languages (comments aside): code blocks must not drift apart.
        blocks = [
            [
                re.sub(r"\s+#.*$", "", re.sub(r"^\s*#.*\n", "", block, flags=re.M), flags=re.M)
                for block in re.findall(
                    r"```bash\n(.*?)```", exercise.instructions.get(lang), re.DOTALL
                )
            ]
            for lang in ("pt", "en")
        ]
        assert blocks[0] == blocks[1], exercise.id


def test_promotion_exercise_expects_max_weight_of_the_deployed_canary(rendered):
    canary = rendered[("Canary", "app-backend")]
    promote = _lesson().exercise("promote-v2")
    assert promote is not None
    check = next(c for c in promote.checks if isinstance(c, check_types.FlaggerCanary))
    assert check.phase == ["Succeeded"]
    assert check.primary_tag == "v2"
    assert check.reached_weight == canary["spec"]["analysis"]["maxWeight"] == 60
    rollback = _lesson().exercise("automated-rollback")
    assert rollback is not None
    check = next(c for c in rollback.checks if isinstance(c, check_types.FlaggerCanary))
    # Phase and primary only: events are aggregated and expire (see the lesson's comment).
    assert check.phase == ["Failed"] and check.events == []
    assert check.primary_tag == "v2"


def test_minimum_analysis_time_in_the_text_matches_the_canary(rendered):
    analysis = rendered[("Canary", "app-backend")]["spec"]["analysis"]
    interval = int(analysis["interval"].removesuffix("s"))
    steps = analysis["maxWeight"] // analysis["stepWeight"]
    observe = _lesson().exercise("observe-canary")
    assert observe is not None
    for lang in ("pt", "en"):
        text = observe.instructions.get(lang)
        assert f"{interval} s × ({analysis['maxWeight']} / {analysis['stepWeight']})" in text
        assert f"**{interval * steps} s**" in text
        assert f"threshold: {analysis['threshold']}" in text


def test_texts_use_the_lesson_namespace_and_explain_the_own_namespace():
    lesson = _lesson()
    for exercise in lesson.exercises:
        for lang in ("pt", "en"):
            text = exercise.instructions.get(lang)
            for ns in re.findall(r"-n ([a-z0-9-]+)", text):
                assert ns in (NAMESPACE, "istio-system"), (exercise.id, ns)
    observe = lesson.exercise("observe-canary")
    assert observe is not None
    assert "namespace" in observe.instructions.get("en") and "VirtualService" in (
        observe.instructions.get("en")
    )
    data_layer = lesson.exercise("promote-v2")
    assert data_layer is not None
    assert "expand/contract" in data_layer.instructions.get("en")
    assert "expand/contract" in data_layer.instructions.get("pt")


# --------------------------------------------------------------------------- the chart


@needs_helm
def test_helm_lint_strict():
    proc = subprocess.run(
        [str(HELM), "lint", "--strict", str(CHART)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dry_run_writes_the_canary_objects(rendered):
    assert set(rendered) == {
        ("Namespace", NAMESPACE),
        ("Deployment", "app-backend"),
        ("Canary", "app-backend"),
        ("MetricTemplate", "app-backend-error-rate"),
        ("Pod", "curl-test"),
    }
    # Services, the VirtualService and the DestinationRules are Flagger's to create.
    assert not {k for k in rendered if k[0] in ("Service", "VirtualService", "DestinationRule")}
    assert rendered[("Namespace", NAMESPACE)]["metadata"]["labels"]["istio-injection"] == "enabled"
    for obj in rendered.values():
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "kubelab", obj["kind"]
        assert labels["kubelab.dev/lesson"] == "flagger-canary"
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE


@needs_helm
def test_the_values_kubelab_injects_render_and_validate():
    """On a real cluster kubelab passes the Gitea registry and the pull Secret too."""
    from kubelab.lessons.plan import render

    result = render(
        load_lesson(LESSON_DIR), registry="gitea.example.org:3000", pull_secrets=["gitea-pull"]
    )
    objects = {(o.kind, o.name): o.obj for o in result.objects}
    pod = objects[("Deployment", "app-backend")]["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "gitea-pull"}]
    assert pod["containers"][0]["image"] == "gitea.example.org:3000/kubelab/app-backend:v1"
    values = result.values["app-backend"]
    assert values["commonLabels"]["kubelab.dev/lesson"] == "flagger-canary"


def test_deployment_runs_v1_without_replicas_or_app_version(rendered):
    deployment = rendered[("Deployment", "app-backend")]
    spec = deployment["spec"]
    assert "replicas" not in spec  # Flagger scales it
    assert spec["selector"]["matchLabels"] == {"app": "app-backend"}
    assert spec["template"]["metadata"]["labels"]["app"] == "app-backend"
    (container,) = spec["template"]["spec"]["containers"]
    assert container["name"] == "app-backend"
    # The dry run renders with the provider's registry address and its pull Secret.
    assert container["image"] == "localhost:30300/kubelab/app-backend:v1"
    assert container["env"][0] == {"name": "BUG_AFTER", "value": "30"}
    assert "APP_VERSION" not in {e["name"] for e in container["env"]}
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["runAsNonRoot"] is True


def test_canary_spec(rendered):
    canary = rendered[("Canary", "app-backend")]
    spec = canary["spec"]
    assert spec["targetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "app-backend",
    }
    assert spec["service"] == {"port": 80, "targetPort": 8080}
    analysis = spec["analysis"]
    assert {k: analysis[k] for k in ("interval", "threshold", "stepWeight", "maxWeight")} == {
        "interval": "30s",
        "threshold": 5,
        "stepWeight": 20,
        "maxWeight": 60,
    }
    assert "iterations" not in analysis and "mirror" not in analysis
    metrics = {m["name"]: m for m in analysis["metrics"]}
    assert metrics["request-success-rate"]["thresholdRange"] == {"min": 99}
    assert metrics["request-duration"]["thresholdRange"] == {"max": 500}
    assert metrics["app-error-rate"]["templateRef"] == {"name": "app-backend-error-rate"}
    assert metrics["app-error-rate"]["thresholdRange"] == {"max": 1}
    hooks = {h["name"]: h for h in analysis["webhooks"]}
    assert hooks["acceptance-test"] == {
        "name": "acceptance-test",
        "type": "pre-rollout",
        "url": "http://flagger-loadtester.istio-system/",
        "timeout": "30s",
        "metadata": {
            "type": "bash",
            "cmd": "curl -sd 'test' http://app-backend-canary.canary-lab/token | grep token",
        },
    }
    assert hooks["load-test"]["type"] == "rollout"
    assert hooks["load-test"]["url"] == "http://flagger-loadtester.istio-system/"
    assert hooks["load-test"]["metadata"] == {
        "type": "cmd",
        "cmd": "hey -z 1m -q 10 -c 2 http://app-backend-canary.canary-lab/",
    }


def test_metric_template_reads_victoria_metrics_and_guards_empty_results(rendered):
    template = rendered[("MetricTemplate", "app-backend-error-rate")]
    assert template["spec"]["provider"] == {"type": "prometheus", "address": metrics_url()}
    query = template["spec"]["query"]
    numerator, denominator = query.split("\n/\n")
    assert "or on() vector(0)" in numerator and 'code=~"5.."' in numerator
    assert "or on()" not in denominator  # no traffic at all must stay "no value"
    for variable in ("{{ namespace }}", "{{ target }}", "{{ interval }}"):
        assert variable in numerator and variable in denominator
    pods = re.findall(r'pod=~"([^"]+)"', query)
    assert len(pods) == 2
    pattern = re.compile(pods[0].replace("{{ target }}", "app-backend"))
    # The canary's pods match, the primary's (and the tester) do not: PromQL anchors =~.
    assert pattern.fullmatch("app-backend-5d8f7c9b6-x2k4p")
    assert not pattern.fullmatch("app-backend-primary-5d8f7c9b6-x2k4p")
    assert not pattern.fullmatch("curl-test")


def test_canary_and_metric_template_validate_against_the_flagger_crds(rendered):
    """The upstream CRD schema really is used for these kinds (not "no schema to check it")."""
    for kind in ("Canary", "MetricTemplate"):
        assert manifests._crd_validator("flagger.app", "v1beta1", kind) is not None, kind
    canary = rendered[("Canary", "app-backend")]
    template = rendered[("MetricTemplate", "app-backend-error-rate")]
    assert _canary_problems(canary) == []
    assert manifests.validate_object(template) == []
    # The schema bites: an unknown field, a wrong enum and a wrong type are each reported.
    broken = copy.deepcopy(canary)
    broken["spec"]["analysis"]["stepWieght"] = 20
    broken["spec"]["analysis"]["webhooks"][0]["type"] = "before-rollout"
    broken["spec"]["analysis"]["threshold"] = "five"
    problems = " | ".join(_canary_problems(broken))
    assert "stepWieght" in problems
    assert "before-rollout" in problems
    assert "'five' is not of type 'number'" in problems
    bad_template = copy.deepcopy(template)
    bad_template["spec"]["provider"]["type"] = "victoriametrics"
    assert manifests.validate_object(bad_template)
    # For contrast, a kind without any schema is an error of its own.
    unknown = {"apiVersion": "flagger.app/v1beta1", "kind": "Canery", "metadata": {"name": "x"}}
    assert "no schema" in str(manifests.validate_object(unknown))


# --------------------------------------------------------------------------- broken values


@needs_helm
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "canary.analysis.stepWeight=80"],
            "canary.analysis.stepWeight (80) must not be greater than "
            "canary.analysis.maxWeight (60)",
        ),
        (["--set", "canary.analysis.maxWeight=120"], "canary.analysis.maxWeight"),
        (["--set-string", "canary.analysis.threshold=five"], "Expected: integer, given: string"),
        (["--set", "canary.analysis.interval=30"], "canary.analysis.interval"),
        (["--set", "canary.analysis.stepWieght=10"], "Additional property stepWieght"),
        (
            [
                "--set",
                "canary.analysis.mirror=true",
                "--set",
                "canary.analysis.sessionAffinity.enabled=true",
            ],
            "exclude each other",
        ),
    ],
)
def test_broken_values_are_rejected(args, message):
    proc = _helm_template(*args)
    assert proc.returncode != 0, proc.stdout[:500]
    assert message in proc.stderr, proc.stderr


@needs_helm
def test_iterations_mode_renders_a_canary_the_crd_accepts():
    proc = _helm_template(
        "--set", "canary.analysis.iterations=3", "--set", "canary.analysis.mirror=true"
    )
    assert proc.returncode == 0, proc.stderr
    canary = next(d for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] == "Canary")
    analysis = canary["spec"]["analysis"]
    assert analysis["iterations"] == 3 and analysis["mirror"] is True
    assert analysis["mirrorWeight"] == 100
    assert "stepWeight" not in analysis and "maxWeight" not in analysis
    assert _canary_problems(canary) == []


@needs_helm
def test_a_lesson_with_broken_canary_values_fails_the_dry_run(tmp_path):
    lesson = tmp_path / "flagger-canary"
    shutil.copytree(LESSON_DIR, lesson)
    text = (lesson / "lesson.yaml").read_text()
    assert "          stepWeight: 20\n" in text
    (lesson / "lesson.yaml").write_text(text.replace("stepWeight: 20\n", "stepWeight: 80\n"))
    proc = run_cli("up", str(lesson), "--dry-run")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "helm could not render chart app-canary" in proc.stderr
    assert "must not be greater than canary.analysis.maxWeight" in proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- the exercises' patches


def test_session_affinity_patch_is_the_same_in_text_and_script_and_valid(rendered):
    canary = rendered[("Canary", "app-backend")]
    (patch,) = _script_patches("solve/04-session-affinity.sh")
    assert _instruction_patches("session-affinity", "en") == [patch]
    assert _instruction_patches("session-affinity", "pt") == [patch]
    patched = _merge_patch(canary, patch)
    affinity = patched["spec"]["analysis"]["sessionAffinity"]
    assert affinity == {"cookieName": "flagger-cookie", "maxAge": 21600}
    assert _canary_problems(patched) == []


def test_mirroring_patch_is_the_same_in_text_and_script_and_valid(rendered):
    canary = rendered[("Canary", "app-backend")]
    (affinity,) = _script_patches("solve/04-session-affinity.sh")
    (patch,) = _script_patches("solve/05-mirroring.sh")
    assert _instruction_patches("traffic-mirroring", "en") == [patch]
    assert _instruction_patches("traffic-mirroring", "pt") == [patch]
    # Applied after exercise 4's, as the lesson does.
    patched = _merge_patch(_merge_patch(canary, affinity), patch)
    analysis = patched["spec"]["analysis"]
    assert analysis["iterations"] == 3 and analysis["mirror"] is True
    assert not {"stepWeight", "maxWeight", "sessionAffinity"} & set(analysis)
    assert _canary_problems(patched) == []
    # What the hint says: without the nulls the API server refuses it (the CRD's oneOf).
    keep_weights = {
        "spec": {"analysis": {k: v for k, v in patch["spec"]["analysis"].items() if v is not None}}
    }
    problems = " | ".join(_canary_problems(_merge_patch(canary, keep_weights)))
    assert "spec.analysis" in problems and "valid under each of" in problems


def test_check_fields_exist_after_the_exercises_patches(rendered):
    """The field-equals and assert checks on the Canary read fields the patched Canary
    really has (and an absent check finds nothing there)."""
    from kubelab.k8s import assertion, jsonpath

    canary = rendered[("Canary", "app-backend")]
    (affinity,) = _script_patches("solve/04-session-affinity.sh")
    (mirror,) = _script_patches("solve/05-mirroring.sh")
    after = {
        "session-affinity": _merge_patch(canary, affinity),
        "traffic-mirroring": _merge_patch(_merge_patch(canary, affinity), mirror),
    }
    for exercise in _lesson().exercises:
        for check in exercise.checks:
            if isinstance(check, check_types.FieldEquals) and check.kind == "Canary":
                value = jsonpath.lookup(after[exercise.id], check.jsonpath)
                assert value == check.equals, (exercise.id, check.jsonpath, value)
            elif isinstance(check, check_types.Assert) and check.kind == "Canary":
                assert assertion.match(after[exercise.id], check.object) == [], exercise.id
                # ... and the Canary before the exercise's patch does not match.
                assert assertion.match(canary, check.object), exercise.id
            elif isinstance(check, check_types.Absent) and check.kind == "Canary":
                assert not assertion.matches(after[exercise.id], check.object), exercise.id


# --------------------------------------------------------------------------- checks vs objects


def _generated_by_flagger(canary: Obj) -> set[tuple[str, str, str]]:
    """What Flagger creates when it initializes ``canary`` (Istio provider)."""
    target = canary["spec"]["targetRef"]["name"]
    return {
        ("apps/v1", "Deployment", f"{target}-primary"),
        ("v1", "Service", target),
        ("v1", "Service", f"{target}-primary"),
        ("v1", "Service", f"{target}-canary"),
        ("networking.istio.io/v1", "VirtualService", target),
        ("networking.istio.io/v1", "DestinationRule", f"{target}-primary"),
        ("networking.istio.io/v1", "DestinationRule", f"{target}-canary"),
    }


def test_every_check_points_at_a_rendered_or_generated_object(rendered):
    from kubelab.k8s import assertion

    canary = rendered[("Canary", "app-backend")]
    deployment = rendered[("Deployment", "app-backend")]
    known = {
        (obj["apiVersion"], kind, name) for (kind, name), obj in rendered.items()
    } | _generated_by_flagger(canary)
    # Flagger rewrites the Deployment's selector label for the primary's pods.
    ((label, value),) = deployment["spec"]["selector"]["matchLabels"].items()
    primary_selector = f"{label}={value}-primary"
    seen_types = set()
    for exercise in _lesson().exercises:
        for check in exercise.checks:
            seen_types.add(check.type)
            assert getattr(check, "namespace", NAMESPACE) == NAMESPACE, (exercise.id, check)
            if isinstance(
                check,
                (
                    check_types.ResourceExists,
                    check_types.FieldEquals,
                    check_types.Assert,
                    check_types.Absent,
                ),
            ):
                assert (check.api_version, check.kind, check.name) in known, (exercise.id, check)
            elif isinstance(check, check_types.FlaggerCanary):
                assert check.name == canary["metadata"]["name"]
            elif isinstance(check, (check_types.PodsReady, check_types.SidecarInjected)):
                assert check.selector == primary_selector
            else:
                pytest.fail(f"{exercise.id}: unexpected check type {check.type}")
            if isinstance(check, check_types.FieldEquals) and check.jsonpath.endswith(
                "env[0].value}"
            ):
                # env[0] of the (primary's copy of the) Deployment is BUG_AFTER.
                env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
                assert env[0]["name"] == "BUG_AFTER"
                assert check.name in ("app-backend", "app-backend-primary")
            if isinstance(check, check_types.Assert) and check.kind == "Deployment":
                # The containers and env variables the tree names are the Deployment's
                # (the primary is Flagger's copy of it).
                assert check.name in ("app-backend", "app-backend-primary")
                rendered_containers = {
                    c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]
                }
                for wanted in check.object["spec"]["template"]["spec"]["containers"]:
                    container = rendered_containers[wanted["name"]]
                    names = {e["name"] for e in container["env"]}
                    assert {e["name"] for e in wanted["env"]} <= names, (exercise.id, wanted)
                # The deployed pool does not pass it; `kubectl set env` of the pool does.
                assert assertion.match(deployment, check.object), check.id
                pool = next(
                    e["value"]
                    for c in check.object["spec"]["template"]["spec"]["containers"]
                    for e in c["env"]
                    if e["name"] == "BUG_AFTER"
                )
                released = copy.deepcopy(deployment)
                for container in released["spec"]["template"]["spec"]["containers"]:
                    for env in container["env"]:
                        if env["name"] == "BUG_AFTER":
                            env["value"] = pool
                assert assertion.match(released, check.object) == [], check.id
    assert {
        "flagger-canary",
        "resource-exists",
        "field-equals",
        "pods-ready",
        "assert",
    } <= seen_types


def test_every_generated_kind_has_a_crd_or_core_schema():
    """resource-exists checks use apiVersions the validator (and the API server) knows."""
    kinds = manifests.crd_kinds()
    assert "VirtualService" in kinds["networking.istio.io/v1"]
    assert "DestinationRule" in kinds["networking.istio.io/v1"]
    assert {"Canary", "MetricTemplate"} <= set(kinds["flagger.app/v1beta1"])


def test_solve_scripts_use_the_chart_names(rendered):
    lib = (LESSON_DIR / "solve" / "lib.sh").read_text()
    assert f'NS="${{KUBELAB_NAMESPACE:-{NAMESPACE}}}"' in lib
    assert "CANARY=app-backend " in lib and "PRIMARY=app-backend-primary " in lib
    assert ("Pod", "curl-test") in rendered and "TESTER=curl-test " in lib
    canary_hooks = rendered[("Canary", "app-backend")]["spec"]["analysis"]["webhooks"]
    assert all("app-backend-canary." in h["metadata"]["cmd"] for h in canary_hooks)


# --------------------------------------------------------------------------- solve scripts


def _scripts() -> list[Path]:
    return sorted((LESSON_DIR / "solve").glob("*.sh"))


def test_every_exercise_has_an_executable_solve_script():
    lesson = _lesson()
    scripts = {f"solve/{p.name}" for p in _scripts()}
    assert {e.solve for e in lesson.exercises} | {"solve/lib.sh"} == scripts
    for exercise in lesson.exercises:
        script = LESSON_DIR / exercise.solve
        assert script.stat().st_mode & 0o111, exercise.solve
        assert script.read_text().startswith("#!/usr/bin/env bash\n")
        assert 'source "$(dirname "$0")/lib.sh"' in script.read_text()


@pytest.mark.parametrize("script", _scripts(), ids=lambda p: p.name)
def test_solve_script_parses(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_solve_scripts_pass_shellcheck():
    proc = subprocess.run(
        ["shellcheck", "-x", *[p.name for p in _scripts()]],
        capture_output=True,
        text=True,
        cwd=LESSON_DIR / "solve",
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (
            "registry.kubelab.invalid/kubelab/app-backend:v1",
            "registry.kubelab.invalid/kubelab/app-backend:v2",
        ),
        (
            "gitea.gitea.svc:3000/kubelab/app-backend:v1",
            "gitea.gitea.svc:3000/kubelab/app-backend:v2",
        ),
        ("localhost:30300/kubelab/app-backend:v2", "localhost:30300/kubelab/app-backend:v2"),
    ],
)
def test_the_image_swap_keeps_the_registry(image, expected):
    """`${IMAGE%:*}:v2`, as in the exercise and lib.sh, only replaces the tag."""
    proc = subprocess.run(
        ["bash", "-c", 'IMAGE="$1"; echo "${IMAGE%:*}:v2"', "-", image],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip() == expected
    assert '"app-backend=${image%:*}:v2"' in (LESSON_DIR / "solve" / "lib.sh").read_text()


# --------------------------------------------------------------------------- the sandbox


def test_the_sandbox_skips_every_exercise_because_it_has_no_flagger():
    """`kubelab test flagger-canary --provider sandbox` skips each exercise, saying why."""
    from kubelab.lessons.runner import exercise_available
    from kubelab.providers import get_provider

    sandbox = get_provider("sandbox")
    lesson = _lesson()
    available = sandbox.available_components(lesson.components)
    for exercise in lesson.exercises:
        assert not exercise_available(exercise, available), exercise.id
        assert "flagger" in exercise.needed_components() - available


# --------------------------------------------------------------------------- solve scripts, run

# A stand-in for kubectl with a small Flagger inside: every read of the Canary's phase is one
# analysis interval. It knows only the commands the solve scripts use, logs each call, and
# keeps its state in a JSON file. The scripts run for real (bash, with `sleep` made a no-op);
# what they are tested for is the path they take from each starting state: which changes
# they make, that they wait for the right outcome, and that a second run changes nothing.
FAKE_KUBECTL = r"""
import hashlib, json, os, re, sys

STATE = os.environ["FAKE_KUBE_STATE"]
args = sys.argv[1:]
with open(STATE + ".log", "a") as log:
    log.write(json.dumps(args) + "\n")
with open(STATE) as f:
    s = json.load(f)
if args[:1] != ["-n"] or args[1] != s["namespace"]:
    sys.exit("fake kubectl: every call must name the namespace first: %r" % args)
ns, args = args[1], args[2:]


def save():
    with open(STATE, "w") as f:
        json.dump(s, f)


def template_hash(d):
    return hashlib.sha1(json.dumps([d["image"], d["env"], d["restarts"]]).encode()).hexdigest()


def event(msg):
    s["events"].append(msg)


def promote():
    s["primary"] = {k: s["target"][k] for k in ("image", "env", "restarts")}
    s["last_promoted"] = s["last_applied"]
    event(f"Copying app-backend.{ns} template spec to app-backend-primary.{ns}")
    s.update(phase="Promoting")


def tick():
    if s["last_applied"] is None:  # as Flagger initialized it: the Deployment as deployed
        s["last_applied"] = s["last_promoted"] = template_hash(s["target"])
    a = s["analysis"]
    phase = s["phase"]
    if phase in ("Initialized", "Succeeded", "Failed"):
        h = template_hash(s["target"])
        if h != s["last_applied"] and h != s["last_promoted"]:
            s.update(phase="Progressing", weight=0, iterations=0, failed=0, last_applied=h,
                     step="detected", fault_ticks=0)
            event(f"New revision detected! Scaling up app-backend.{ns}")
        return
    if phase == "Promoting":
        event("Routing all traffic to primary")
        s.update(phase="Finalising", weight=0)
        return
    if phase == "Finalising":
        s.update(phase="Succeeded", iterations=0)
        event(f"Promotion completed! Scaling down app-backend.{ns}")
        return
    # Progressing
    if s["step"] == "detected":
        s["step"] = "analysing"
        event(f"Starting canary analysis for app-backend.{ns}")
    elif s["fault_ticks"] > 0:
        s["fault_ticks"] -= 1
        s["failed"] += 1
        event(f"Halt app-backend.{ns} advancement success rate 95.00% < 99%")
        if s["failed"] >= a["threshold"]:
            event(f"Rolling back app-backend.{ns} failed checks threshold reached {s['failed']}")
            event(f"Canary failed! Scaling down app-backend.{ns}")
            s.update(phase="Failed", weight=0, iterations=0)
        return
    if a.get("iterations"):
        if s["iterations"] < a["iterations"]:
            s["iterations"] += 1
            event(f"Advance app-backend.{ns} canary iteration {s['iterations']}/{a['iterations']}")
        elif s["weight"] == 0:
            s["weight"] = 100
            event("Stop traffic mirroring and route all traffic to canary"
                  if a.get("mirror") else "Routing all traffic to canary")
        else:
            promote()
        return
    if s["weight"] < a["maxWeight"]:
        s["weight"] += a["stepWeight"]
        event(f"Advance app-backend.{ns} canary weight {s['weight']}")
    else:
        promote()


def merge(target, patch):
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge(out.get(k), v)
    return out


def jsonpath():
    if "-o" not in args:
        return None
    value = args[args.index("-o") + 1]
    return value.split("=", 1)[1] if value.startswith("jsonpath=") else value


verb = args[0]
out = ""
if verb == "get" and args[1] == "canary":
    path = jsonpath()
    if path == "{.status.phase}":
        tick()
        out = s["phase"]
    elif path == "{.status.canaryWeight}":
        out = str(s["weight"])
    elif path == "{.status.iterations}":
        out = str(s["iterations"]) if s["iterations"] else ""
    elif path is not None and path.startswith("{.spec.analysis}"):
        out = json.dumps(s["analysis"]) + "\n"
    else:
        out = f"NAME STATUS WEIGHT\napp-backend {s['phase']} {s['weight']}\n"
elif verb == "get" and args[1] == "deployment":
    d = s["target"] if args[2] == "app-backend" else s["primary"]
    path = jsonpath()
    m = re.search(r'env\[\?\(@\.name=="([A-Z_]+)"\)\]', path or "")
    out = d["env"].get(m.group(1), "") if m else d["image"]
elif verb == "get" and args[1] == "events":
    out = "\n".join(s["events"][-12:]) + "\n"
elif verb == "get":
    out = "deployment.apps/app-backend\ndeployment.apps/app-backend-primary\n"
elif verb == "set" and args[1] == "image":
    assert args[2] == "deployment/app-backend", args
    s["target"]["image"] = args[3].split("=", 1)[1]
elif verb == "set" and args[1] == "env":
    assert args[2] == "deployment/app-backend", args
    name, value = args[3].split("=", 1)
    s["target"]["env"][name] = value
elif verb == "rollout" and args[1] == "restart":
    assert args[2] == "deployment/app-backend", args
    s["target"]["restarts"] += 1
elif verb in ("rollout", "wait"):
    pass
elif verb == "patch" and args[1:3] == ["canary", "app-backend"]:
    patch = json.loads(args[args.index("-p") + 1])
    analysis = merge(s["analysis"], patch["spec"]["analysis"])
    modes = [k for k in ("iterations", "stepWeight", "stepWeights") if k in analysis]
    if len(modes) != 1:
        sys.exit("The Canary is invalid: spec.analysis: must validate one and only one schema")
    s["analysis"] = analysis
elif verb == "exec":
    script = args[-1]
    pool = s["target"]["env"]["BUG_AFTER"]
    if "app-backend-canary/status/500" in script and s["phase"] == "Progressing":
        s["fault_ticks"] = 3
        s["fault_batches"] += 1
    elif "-D -" in script:
        if s["weight"] and s["analysis"].get("sessionAffinity"):
            out = "HTTP/1.1 200 OK\r\nset-cookie: flagger-cookie=abcdefghij; Max-Age=21600\r\n"
    elif "Cookie: flagger-cookie=abcdefghij" in script:
        out = ('{"version": "v2", "bug_after": %s}\n' % pool) * 5
    elif "/version" in script:
        out = ('{"version": "v2", "bug_after": %s}\n' % s["primary"]["env"]["BUG_AFTER"]) * 10
elif verb == "logs":
    out = "2026-01-01T00:00:00Z 10.0.0.7 GET /version 200 0.31ms v2\n" * 10
else:
    sys.exit("fake kubectl: unexpected call %r" % args)
save()
sys.stdout.write(out)
"""


def _initial_state() -> Obj:
    v1 = {
        "image": "registry.kubelab.invalid/kubelab/app-backend:v1",
        "env": {"BUG_AFTER": "30", "PORT": "8080"},
        "restarts": 0,
    }
    state: Obj = {
        "namespace": NAMESPACE,
        "phase": "Initialized",
        "weight": 0,
        "iterations": 0,
        "failed": 0,
        "step": "",
        "fault_ticks": 0,
        "fault_batches": 0,
        "events": [],
        "analysis": {"interval": "30s", "threshold": 5, "stepWeight": 20, "maxWeight": 60},
        "target": copy.deepcopy(v1),
        "primary": copy.deepcopy(v1),
    }
    state["last_applied"] = state["last_promoted"] = None
    return state


class FakeCluster:
    """Runs solve scripts against the fake kubectl; ``state`` and ``calls`` read it back."""

    def __init__(self, tmp_path: Path, state: Obj) -> None:
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        (self.bin / "kubectl").write_text(f"#!{sys.executable}{FAKE_KUBECTL}")
        (self.bin / "sleep").write_text("#!/bin/sh\nexit 0\n")
        for tool in ("kubectl", "sleep"):
            (self.bin / tool).chmod(0o755)
        self.state_file = tmp_path / "state.json"
        self.state_file.write_text(json.dumps(state))

    @property
    def state(self) -> Obj:
        return json.loads(self.state_file.read_text())

    def calls(self) -> list[list[str]]:
        log = self.state_file.with_suffix(".json.log")
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def forget_calls(self) -> None:
        self.state_file.with_suffix(".json.log").unlink(missing_ok=True)

    def solve(self, script: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "FAKE_KUBE_STATE": str(self.state_file),
            "KUBELAB_NAMESPACE": NAMESPACE,
            "KUBELAB_SOLVE_START_WAIT": "1",
            "HOME": str(self.bin.parent),
        }
        return subprocess.run(
            [str(LESSON_DIR / "solve" / script)],
            capture_output=True,
            text=True,
            env=env,
            timeout=100,
            check=False,
        )

    def changes(self) -> list[list[str]]:
        """The calls since forget_calls() that change something: releases, Canary patches
        and fault traffic (reads and `rollout status`/`wait` are left out)."""
        return [
            c
            for c in self.calls()
            if c[2] in ("set", "patch")
            or c[2:4] == ["rollout", "restart"]
            or (c[2] == "exec" and "status/500" in c[-1])
        ]


def _solve_ok(cluster: FakeCluster, script: str) -> None:
    proc = cluster.solve(script)
    assert proc.returncode == 0, f"{script}:\n{proc.stdout}\n{proc.stderr}"


def _primary_pool(state: Obj) -> str:
    return str(state["primary"]["env"]["BUG_AFTER"])


SCRIPTS = [
    "01-observe.sh",
    "02-promote-v2.sh",
    "03-rollback.sh",
    "04-session-affinity.sh",
    "05-mirroring.sh",
]


@pytest.fixture
def fake_cluster(tmp_path: Path) -> FakeCluster:
    return FakeCluster(tmp_path, _initial_state())


def test_solve_scripts_walk_the_whole_lesson(fake_cluster):
    _solve_ok(fake_cluster, "01-observe.sh")
    assert fake_cluster.state["phase"] == "Initialized" and not fake_cluster.changes()

    _solve_ok(fake_cluster, "02-promote-v2.sh")
    state = fake_cluster.state
    assert state["phase"] == "Succeeded"
    assert state["primary"]["image"] == "registry.kubelab.invalid/kubelab/app-backend:v2"
    assert f"Advance app-backend.{NAMESPACE} canary weight 60" in state["events"]

    _solve_ok(fake_cluster, "03-rollback.sh")
    state = fake_cluster.state
    assert state["phase"] == "Failed" and state["fault_batches"] > 0
    assert any(e.startswith("Rolling back") for e in state["events"])
    assert state["target"]["env"]["BUG_AFTER"] == "40" and _primary_pool(state) == "30"
    assert state["primary"]["image"].endswith(":v2")

    proc = fake_cluster.solve("04-session-affinity.sh")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "got the cookie flagger-cookie=abcdefghij" in proc.stdout
    state = fake_cluster.state
    assert state["phase"] == "Succeeded" and _primary_pool(state) == "50"
    assert state["analysis"]["sessionAffinity"]["cookieName"] == "flagger-cookie"

    proc = fake_cluster.solve("05-mirroring.sh")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mirrored copies: 10" in proc.stdout
    state = fake_cluster.state
    assert state["phase"] == "Succeeded" and _primary_pool(state) == "60"
    assert state["analysis"]["mirror"] is True and state["analysis"]["iterations"] == 3
    assert "stepWeight" not in state["analysis"] and "sessionAffinity" not in state["analysis"]
    assert "Stop traffic mirroring and route all traffic to canary" in state["events"]


def test_solve_scripts_change_nothing_when_run_again(fake_cluster):
    # Each script run a second time right away: no new release, no faults. Exercises 4 and 5
    # only re-apply their Canary patch (a merge patch: the same object again).
    for script in SCRIPTS:
        _solve_ok(fake_cluster, script)
        phase = fake_cluster.state["phase"]
        fake_cluster.forget_calls()
        _solve_ok(fake_cluster, script)
        expected = ["patch"] if script in SCRIPTS[3:] else []
        assert [c[2] for c in fake_cluster.changes()] == expected, script
        assert fake_cluster.state["phase"] == phase


def test_earlier_solve_scripts_keep_later_results(fake_cluster):
    """After the rollback of exercise 3, exercises 1 to 3 again change nothing: exercise 2
    is done once the primary runs v2 (a new analysis would promote the rolled-back change)."""
    for script in SCRIPTS[:3]:
        _solve_ok(fake_cluster, script)
    fake_cluster.forget_calls()
    for script in SCRIPTS[:3]:
        _solve_ok(fake_cluster, script)
    assert fake_cluster.changes() == []
    assert fake_cluster.state["phase"] == "Failed"
    assert _primary_pool(fake_cluster.state) == "30"


def test_promote_joins_the_analysis_the_student_started(fake_cluster):
    cluster = fake_cluster
    _solve_ok(cluster, "01-observe.sh")
    state = cluster.state  # the student's `kubectl set image ...:v2`
    state["target"]["image"] = state["target"]["image"].replace(":v1", ":v2")
    cluster.state_file.write_text(json.dumps(state))
    cluster.forget_calls()
    _solve_ok(cluster, "02-promote-v2.sh")
    assert cluster.changes() == []  # the student's `kubectl set image` was enough
    assert cluster.state["phase"] == "Succeeded"
    assert cluster.state["primary"]["image"].endswith(":v2")


def test_rollback_starts_over_when_the_students_release_was_promoted(fake_cluster):
    _solve_ok(fake_cluster, "02-promote-v2.sh")
    # The student released BUG_AFTER=40 but sent no errors: Flagger promoted it.
    state = fake_cluster.state
    state["target"]["env"]["BUG_AFTER"] = "40"
    fake_cluster.state_file.write_text(json.dumps(state))
    _solve_ok(fake_cluster, "01-observe.sh")  # lets the fake Flagger run that release
    assert fake_cluster.state["phase"] == "Succeeded" and _primary_pool(fake_cluster.state) == "40"
    fake_cluster.forget_calls()
    _solve_ok(fake_cluster, "03-rollback.sh")
    changes = [c[2:4] for c in fake_cluster.changes()]
    assert changes[0] == ["rollout", "restart"]  # same template, so a restart makes a revision
    assert fake_cluster.state["phase"] == "Failed"


def test_a_change_flagger_does_not_see_as_new_is_restarted(fake_cluster):
    for script in SCRIPTS[:3]:
        _solve_ok(fake_cluster, script)
    # The student set the promoted value back (no analysis: Flagger knows that template)...
    state = fake_cluster.state
    state["target"]["env"]["BUG_AFTER"] = "30"
    fake_cluster.state_file.write_text(json.dumps(state))
    # ... so the rolled-back release is not there any more and exercise 3 must run again; its
    # `set env BUG_AFTER=40` gives the template Flagger analysed last, which is no new revision.
    fake_cluster.forget_calls()
    proc = fake_cluster.solve("03-rollback.sh")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "restarting the rollout" in proc.stdout
    assert [c[2:4] for c in fake_cluster.changes()][:2] == [
        ["set", "env"],
        ["rollout", "restart"],
    ]
    assert fake_cluster.state["phase"] == "Failed"


def test_later_exercises_do_exercise_two_first_when_needed(fake_cluster):
    proc = fake_cluster.solve("04-session-affinity.sh")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "doing exercise 2 first" in proc.stdout
    state = fake_cluster.state
    assert state["primary"]["image"].endswith(":v2") and _primary_pool(state) == "50"
