"""A lesson's ``deploy[].values`` against its chart's values.schema.json, when it loads.

Copies of the real lessons (each whole folder, so that ids and solve scripts are right)
get one wrong value each; plain ``kubelab validate`` must name it at its line in the
lesson's terms. kubelab's own values (registry, pull Secret, labels) are not the lesson's
problems, and the charts' defaults pass their own schemas.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from support import ROOT, run_cli

from kubelab.cli.main import run
from kubelab.errors import ValidationFailed
from kubelab.k8s.data import deep_merge as merge
from kubelab.lessons import chart_values
from kubelab.lessons.chart_values import (
    SUM,
    chart_values_problems,
    coalesce,
    deploy_values_problems,
    injected,
)
from kubelab.lessons.loader import available_lessons, load_lesson

LABS = ROOT / "labs"
CHARTS = ("app-backend", "app-canary", "app-rollouts")
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
TRAFFIC = "istio-traffic-splitting"


def _copy(tmp_path: Path, lesson: str, old: str, new: str) -> tuple[Path, str]:
    """A copy of ``lesson`` in ``tmp_path`` with ``old`` (once in lesson.yaml) replaced."""
    folder = tmp_path / lesson
    shutil.copytree(LABS / lesson, folder)
    text = (folder / "lesson.yaml").read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not once in {lesson}/lesson.yaml"
    text = text.replace(old, new)
    (folder / "lesson.yaml").write_text(text, encoding="utf-8")
    return folder, text


def _line(text: str, needle: str) -> int:
    """The line of ``needle``'s first character in ``text``."""
    assert needle in text, needle
    return text[: text.index(needle)].count("\n") + 1


def _validate(folder: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = run(["validate", folder.name])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, [ln for ln in err.splitlines() if ln.startswith(f"{folder.name}/lesson.yaml:")]


# -- the lesson's terms, at the value's line -------------------------------------------------


def test_weights_that_do_not_add_up(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder, text = _copy(
        tmp_path, TRAFFIC, "weights: {v1: 90, v2: 10}", "weights: {v1: 90, v2: 20}"
    )
    code, problems = _validate(folder, capsys)
    assert code == 2
    line = _line(text, "weights: {v1: 90, v2: 20}")
    assert line == 41  # the course's lesson, as the issue quotes it
    assert problems == [
        f"{TRAFFIC}/lesson.yaml:{line}: deploy[0].values.weights: "
        "must add up to 100 (v1 90 + v2 20 = 110)"
    ]


CASES = {
    # name: (lesson, old, new, the text whose line is reported, field, message)
    "wrong type": (
        TRAFFIC,
        "      tester:\n        enabled: true\n",
        '      tester:\n        enabled: "yes"\n',
        'enabled: "yes"',
        "deploy[0].values.tester.enabled",
        'must be true or false (got "yes")',
    ),
    "unknown key": (
        TRAFFIC,
        "      gateway:\n        enabled: true\n",
        "      gateway:\n        enabeld: true\n",
        "enabeld: true",
        "deploy[0].values.gateway.enabeld",
        "unknown key 'enabeld'; did you mean 'enabled'? "
        "(allowed: enabled, name, selector, hosts, port, tls)",
    ),
    "unknown key, nothing close": (
        TRAFFIC,
        "weights: {v1: 90, v2: 10}",
        "weights: {v1: 90, v2: 10, v3: 0}",
        "weights: {v1: 90",
        "deploy[0].values.weights.v3",
        "unknown key 'v3' (allowed: v1, v2)",
    ),
    "port out of range": (
        TRAFFIC,
        '        hosts: ["*"]\n',
        '        hosts: ["*"]\n        port: 70000\n',
        "port: 70000",
        "deploy[0].values.gateway.port",
        "must be between 1 and 65535 (got 70000)",
    ),
    "a weight out of range": (
        TRAFFIC,
        "weights: {v1: 90, v2: 10}",
        "weights: {v1: 110, v2: 0}",
        "weights: {v1: 110",
        "deploy[0].values.weights.v1",
        "must be between 0 and 100 (got 110)",
    ),
    "a required key removed with null": (
        TRAFFIC,
        "weights: {v1: 90, v2: 10}",
        "weights: {v1: 90, v2: null}",
        "weights: {v1: 90",
        "deploy[0].values.weights.v2",
        "missing required key 'v2' (a null removes the chart's default)",
    ),
    "a rule between keys (if/then)": (
        TRAFFIC,
        "      gateway:\n        enabled: true\n",
        "      gateway:\n        enabled: true\n        tls: {enabled: true}\n",
        "tls: {enabled: true}",
        "deploy[0].values.gateway.tls.credentialName",
        "must not be empty when enabled is true",
    ),
    "flagger: analysis threshold as text": (
        "flagger-canary",
        "          threshold: 5\n",
        '          threshold: "5"\n',
        'threshold: "5"',
        "deploy[0].values.canary.analysis.threshold",
        'must be an integer (got "5")',
    ),
    "flagger: interval that is no duration": (
        "flagger-canary",
        "          interval: 30s\n",
        "          interval: 30 seconds\n",
        "interval: 30 seconds",
        "deploy[0].values.canary.analysis.interval",
        'must be a duration in seconds or minutes such as 30s or 1m (got "30 seconds")',
    ),
    "argo: pull policy not in the enum": (
        "argo-rollouts",
        "      image:\n        tag: v1\n",
        "      image:\n        tag: v1\n        pullPolicy: Sometimes\n",
        "pullPolicy: Sometimes",
        "deploy[0].values.image.pullPolicy",
        'must be one of: Always, IfNotPresent, Never (got "Sometimes")',
    ),
    "argo: a step weight in a list": (
        "argo-rollouts",
        "weights: [0, 10, 25, 50, 100]",
        "weights: [0, 10, 250]",
        "weights: [0, 10, 250]",
        "deploy[0].values.scenarios.canary.weights[2]",
        "must be between 0 and 100 (got 250)",
    ),
    "argo: pause as a number": (
        "argo-rollouts",
        "          pause: 15s\n",
        "          pause: 15\n",
        "pause: 15",
        "deploy[0].values.scenarios.canaryAnalysis.pause",
        "must be a string (got 15)",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_wrong_value_is_named_at_its_line(case, tmp_path, capsys, monkeypatch):
    lesson, old, new, at, field, message = CASES[case]
    monkeypatch.chdir(tmp_path)
    folder, text = _copy(tmp_path, lesson, old, new)
    code, problems = _validate(folder, capsys)
    assert code == 2
    assert problems == [f"{lesson}/lesson.yaml:{_line(text, at)}: {field}: {message}"]


def test_every_problem_of_the_file_at_once_in_file_order(tmp_path, capsys, monkeypatch):
    """Each wrong value once, with the lesson's other problems (here a typo in a key)."""
    monkeypatch.chdir(tmp_path)
    folder, text = _copy(
        tmp_path,
        TRAFFIC,
        "weights: {v1: 90, v2: 10}\n      gateway:\n        enabled: true\n",
        'weights: {v1: "90", v2: 10}\n      gateway:\n        enabled: 1\n        prot: 80\n',
    )
    text = text.replace("\nsummary:", "\nsumary:", 1)
    (folder / "lesson.yaml").write_text(text, encoding="utf-8")
    code, problems = _validate(folder, capsys)
    assert code == 2
    where = f"{TRAFFIC}/lesson.yaml"
    assert problems[-3:] == [
        f"{where}:{_line(text, 'weights: {')}: deploy[0].values.weights.v1: "
        'must be an integer (got "90")',
        f"{where}:{_line(text, 'enabled: 1')}: deploy[0].values.gateway.enabled: "
        "must be true or false (got 1)",
        f"{where}:{_line(text, 'prot: 80')}: deploy[0].values.gateway.prot: "
        "unknown key 'prot'; did you mean 'port'? "
        "(allowed: enabled, name, selector, hosts, port, tls)",
    ]
    assert any("sumary: unknown key 'sumary'" in p for p in problems[:-3]), problems


def test_validate_in_a_real_process_and_render_says_it_once(tmp_path):
    """The real CLI: exit 2 and the line on stderr; with --render the load fails first, so
    helm is never reached and the problem is not said a second time in helm's words."""
    _, text = _copy(tmp_path, TRAFFIC, "weights: {v1: 90, v2: 10}", "weights: {v1: 45, v2: 50}")
    expected = (
        f"{TRAFFIC}/lesson.yaml:{_line(text, 'weights:')}: deploy[0].values.weights: "
        "must add up to 100 (v1 45 + v2 50 = 95)"
    )
    for args in (["validate", TRAFFIC], ["validate", "--render", TRAFFIC]):
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.splitlines()
        assert lines[0] == expected, proc.stderr
        assert lines[1:] == ["error: 1 of 1 lesson file(s) invalid, 1 problem(s)"], proc.stderr
        assert "must be one of the following" not in proc.stderr
        assert proc.stdout == ""
    proc = run_cli("validate", "--output", "json", TRAFFIC, cwd=tmp_path)
    data = json.loads(proc.stdout)
    assert data["lessons"][0]["problems"] == [expected]


def test_load_lesson_raises_for_every_command(tmp_path, monkeypatch):
    """Not only `validate`: every command loads the lesson the same way (up, show, ...)."""
    monkeypatch.chdir(tmp_path)
    folder, _ = _copy(tmp_path, "flagger-canary", "bugAfter: 30\n", "bugAfter: 0\n")
    with pytest.raises(ValidationFailed) as info:
        load_lesson(folder)
    assert [d.split(": ", 1)[1] for d in info.value.details] == [
        "deploy[0].values.bugAfter: must be between 1 and 1000000 (got 0)"
    ]
    proc = run_cli("show", str(folder), cwd=tmp_path)
    assert proc.returncode == 2
    assert "deploy[0].values.bugAfter: must be between 1 and 1000000 (got 0)" in proc.stderr


# -- what is right stays right ---------------------------------------------------------------


def test_builtin_lessons_are_valid():
    lessons = available_lessons()
    assert {loaded.lesson.id for loaded in lessons} >= {TRAFFIC, "flagger-canary", "argo-rollouts"}
    for loaded in lessons:
        data = yaml.load(loaded.path.read_text(encoding="utf-8"), Loader=LOADER)
        assert deploy_values_problems(data, ROOT) == [], loaded.path


@pytest.mark.parametrize("chart", CHARTS)
def test_chart_defaults_pass_their_own_schema(chart):
    folder = ROOT / "charts" / chart
    schema = json.loads((folder / "values.schema.json").read_text())
    defaults = yaml.load((folder / "values.yaml").read_text(), Loader=LOADER)
    jsonschema.Draft7Validator.check_schema(schema)
    assert list(jsonschema.Draft7Validator(schema).iter_errors(defaults)) == []
    # and kubelab's reading of it (x-kubelab-sum included), with and without its own values
    texts = (folder / "values.schema.json").read_text(), (folder / "values.yaml").read_text()
    assert chart_values_problems(*texts, {}) == []
    assert chart_values_problems(*texts, {}, *injected("some-lesson", True)) == []


def test_the_weights_carry_the_sum_and_keep_the_clauses_for_helm():
    schema = json.loads((ROOT / "charts/app-backend/values.schema.json").read_text())
    weights = schema["properties"]["weights"]
    assert weights[SUM] == 100
    assert len(weights["allOf"]) == 101  # helm still rejects a bad sum on its own


def test_what_kubelab_adds_is_what_up_adds():
    """The placeholders merged with the lesson's values are release_values' own."""
    from kubelab.images.pipeline import PULL_SECRET
    from kubelab.lessons.plan import PLACEHOLDER_REGISTRY, release_values

    for loaded in available_lessons():
        under, over = injected(loaded.lesson.id, bool(loaded.lesson.images))
        for i, deploy in enumerate(loaded.lesson.deploy):
            pull = [PULL_SECRET] if loaded.lesson.images else None
            assert release_values(loaded, i, PLACEHOLDER_REGISTRY, pull) == merge(
                merge(under, deploy.values), over
            )


# -- kubelab's values and the chart's own problems are not the lesson's ------------------------

SCHEMA = json.dumps(
    {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": False,
        "required": ["image", "commonLabels", "replicas", "name"],
        "properties": {
            "image": {
                "type": "object",
                "additionalProperties": False,
                "required": ["registry", "repository"],
                "properties": {
                    "registry": {"type": "string", "minLength": 1},
                    "repository": {"type": "string"},
                    "pullSecrets": {"type": "array", "items": {"type": "string"}},
                },
            },
            "commonLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "replicas": {"type": "integer", "minimum": 1},
            "name": {"type": "string", "maxLength": 5},
        },
    }
)
# No registry (kubelab gives it at `up`) and a name too long: the chart's own problems.
DEFAULTS = "image:\n  repository: app\ncommonLabels: {}\nreplicas: 1\nname: much-too-long\n"


def test_values_kubelab_injects_are_not_missing_and_chart_problems_are_not_the_lesson():
    under, over = injected("demo", True)
    assert chart_values_problems(SCHEMA, DEFAULTS, {}, under, over) == []
    assert chart_values_problems(SCHEMA, DEFAULTS, {"replicas": 2}, under, over) == []
    # The lesson's own problems still are, the registry too when the lesson sets it.
    assert chart_values_problems(
        SCHEMA, DEFAULTS, {"replicas": 0, "image": {"registry": ""}}, under, over
    ) == [
        (("replicas",), "must be at least 1 (got 0)"),
        (("image", "registry"), "must not be empty"),
    ]
    # kubelab's labels go over the lesson's (as at `up`): the lesson's wrong one is replaced.
    labels = {"commonLabels": {"kubelab.dev/lesson": 3, "mine": 4}}
    assert chart_values_problems(SCHEMA, DEFAULTS, labels, under, over) == [
        (("commonLabels", "mine"), "must be a string (got 4)")
    ]
    # A name the lesson sets too long is its problem, though the chart's default is too.
    assert chart_values_problems(SCHEMA, DEFAULTS, {"name": "longer-still"}, under, over) == [
        (("name",), "must be at most 5 characters (got 12)")
    ]


def test_helm_merge_of_the_values_over_the_defaults():
    defaults = {"a": {"x": 1, "y": 2}, "b": [1, 2], "c": 3, "d": None, "e": {"z": 1}}
    values = {"a": {"y": None, "w": None}, "b": [3], "c": None, "f": None, "e": "flat"}
    # mappings merge, lists and scalars replace, null removes a default (only a default:
    # helm keeps a null for a key the chart does not have), a default null stays
    assert coalesce(values, defaults) == {
        "a": {"x": 1, "w": None},
        "b": [3],
        "d": None,
        "e": "flat",
        "f": None,
    }


def test_a_valid_verdict_is_cached_and_a_problem_is_not(tmp_path, monkeypatch):
    """The second load of unchanged values imports no jsonschema; problems are said anew."""
    code = (
        "import sys; from pathlib import Path; from kubelab.lessons.loader import load_lesson;"
        f"load_lesson(Path({str(LABS / TRAFFIC)!r})); print('jsonschema' in sys.modules)"
    )
    env = {"KUBELAB_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    seen = [
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        ).stdout.strip()
        for _ in range(2)
    ]
    assert seen == ["True", "False"]
    schema = (ROOT / "charts/app-backend/values.schema.json").read_text()
    defaults = (ROOT / "charts/app-backend/values.yaml").read_text()
    bad = {"weights": {"v1": 1, "v2": 1}}
    for _ in range(2):
        assert chart_values_problems(schema, defaults, bad) == [
            (("weights",), "must add up to 100 (v1 1 + v2 1 = 2)")
        ]
    assert chart_values.CACHE_KIND == "chart-values"


def test_a_lesson_not_shaped_right_or_without_a_chart_is_left_to_the_other_checks(tmp_path):
    root = ROOT
    for data in (
        None,
        {"deploy": "x"},
        {"deploy": [1, {"chart": 3}, {"chart": "charts/app-backend", "values": [1]}]},
        {"deploy": [{"chart": "charts/nothing-here", "values": {"x": 1}}]},
        {"deploy": [{"chart": "../outside", "values": {"x": 1}}]},
    ):
        assert deploy_values_problems(data, root) == []
    data = {"deploy": [{"chart": "charts/app-backend", "values": {"weights": {"v1": "a"}}}]}
    assert deploy_values_problems(data, root) == [
        (("deploy", 0, "values", "weights", "v1"), 'must be an integer (got "a")')
    ]
