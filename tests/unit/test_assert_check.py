"""The ``assert`` and ``absent`` checks (docs/assert-checks.md): assertion-tree semantics
(:mod:`kubelab.k8s.assertion`), the messages a student reads, and the lesson loader's
problems for a tree, with their lines."""

from __future__ import annotations

import copy
import re
import textwrap
from pathlib import Path
from typing import Any

import msgspec
import pytest

from kubelab.checks.registry import CheckContext
from kubelab.checks.result import CheckResult, Status
from kubelab.checks.runner import run_check
from kubelab.checks.types import CHECK_TYPES, Absent, Assert
from kubelab.errors import ValidationFailed
from kubelab.k8s import assertion, selectors
from kubelab.lessons.loader import load_lesson

Obj = dict[str, Any]


class Objects:
    """A cluster that holds ``objects``: what the checks read through ``get``/``list``."""

    def __init__(self, *objects: Obj) -> None:
        self.objects = [copy.deepcopy(o) for o in objects]

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Any:
        for obj in self.objects:
            meta = obj["metadata"]
            if (obj["kind"], meta["name"], meta.get("namespace")) == (kind, name, namespace):
                return copy.deepcopy(obj)
        return None

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, label_selector: str = ""
    ) -> list[Obj]:
        return [
            copy.deepcopy(o)
            for o in self.objects
            if o["kind"] == kind
            and (namespace is None or o["metadata"].get("namespace") == namespace)
            and selectors.matches(label_selector, o["metadata"].get("labels"))
        ]


def check(objects: Objects, **params: Any) -> CheckResult:
    """``params`` validated as a lesson's check and run as ``kubelab check`` runs it."""
    spec = msgspec.convert(params, CHECK_TYPES[params["type"]])
    ctx = CheckContext(kube=objects, sampler=lambda spec: None)  # type: ignore[arg-type]
    return run_check(spec, ctx)


def deployment(name: str = "app", replicas: Any = 2, pool: str = "40", **labels: str) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "istio", "labels": labels or {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "app-backend:v2",
                            "env": [
                                {"name": "BUG_AFTER", "value": pool},
                                {"name": "LOG_LEVEL", "value": "INFO"},
                            ],
                        },
                        {"name": "istio-proxy", "image": "proxyv2:1.24"},
                    ]
                },
            },
        },
        "status": {"readyReplicas": replicas},
    }


ROLLOUT = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Rollout",
    "metadata": {"name": "app", "namespace": "istio"},
    "spec": {
        "replicas": 4,
        "strategy": {
            "canary": {
                "steps": [
                    {"pause": {"duration": "10s"}},
                    {"setWeight": 20},
                    {"pause": {}},
                    {"setWeight": 50},
                ]
            }
        },
    },
}
VIRTUALSERVICE = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "app", "namespace": "istio"},
    "spec": {
        "hosts": ["app"],
        "http": [
            {
                "route": [
                    {"destination": {"host": "app", "subset": "v1"}, "weight": 50},
                    {"destination": {"host": "app", "subset": "v2"}, "weight": 50},
                ]
            }
        ],
    },
}
CANARY = {
    "apiVersion": "flagger.app/v1beta1",
    "kind": "Canary",
    "metadata": {"name": "app-backend", "namespace": "canary-lab"},
    "spec": {
        "analysis": {
            "interval": "30s",
            "stepWeight": 20,
            "sessionAffinity": {"cookieName": "flagger-cookie", "maxAge": 21600},
        }
    },
}
DEPLOY = {"type": "assert", "api_version": "apps/v1", "kind": "Deployment", "namespace": "istio"}
ROLL = {"type": "assert", "api_version": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "app"}
VS = {"type": "assert", "api_version": "networking.istio.io/v1", "kind": "VirtualService"}
CANARY_ABSENT = {
    "type": "absent",
    "api_version": "flagger.app/v1beta1",
    "kind": "Canary",
    "name": "app-backend",
    "namespace": "canary-lab",
}


def expect(result: CheckResult, status: Status, message: str) -> None:
    assert (result.status, result.message) == (status, message), result


# -- mappings and scalars -------------------------------------------------------------------


def test_subset_match_passes_and_extra_live_fields_are_ignored() -> None:
    result = check(Objects(deployment()), **DEPLOY, name="app", object={"spec": {"replicas": 2}})
    expect(result, Status.PASSED, "Deployment istio/app matches {spec: {replicas: 2}}")


def test_scalar_mismatch_names_the_path_the_value_and_the_expected_one() -> None:
    tree = {"metadata": {"labels": {"app": "app"}}, "spec": {"replicas": 3}}
    result = check(Objects(deployment()), **DEPLOY, name="app", object=tree)
    expect(result, Status.FAILED, "Deployment istio/app: spec.replicas is 2, expected 3")
    assert result.hint == "kubectl get deployment app -n istio -o yaml"


def test_numbers_compare_as_numbers_but_a_string_is_not_a_number() -> None:
    objects = Objects(deployment())
    result = check(objects, **DEPLOY, name="app", object={"spec": {"replicas": 2.0}})
    assert result.status is Status.PASSED
    result = check(objects, **DEPLOY, name="app", object={"spec": {"replicas": "2"}})
    expect(
        result,
        Status.FAILED,
        'Deployment istio/app: spec.replicas is 2 (a number), expected "2" (a string)',
    )
    result = check(
        Objects(deployment(replicas=True)), **DEPLOY, name="app", object={"spec": {"replicas": 1}}
    )
    expect(
        result,
        Status.FAILED,
        "Deployment istio/app: spec.replicas is true (a boolean), expected 1 (a number)",
    )


def test_a_missing_field_fails_with_its_path() -> None:
    tree = {"spec": {"paused": True, "strategy": {"blueGreen": {"activeService": "app"}}}}
    result = check(Objects(ROLLOUT), **ROLL, namespace="istio", object=tree)
    expect(
        result,
        Status.FAILED,
        "Rollout istio/app: spec.paused is missing, expected true; "
        "spec.strategy.blueGreen is missing",
    )


def test_a_wrong_type_fails_saying_what_was_expected() -> None:
    tree = {"spec": {"http": {"route": []}, "hosts": [{"name": "app"}]}}
    result = check(Objects(VIRTUALSERVICE), **VS, name="app", namespace="istio", object=tree)
    expect(
        result,
        Status.FAILED,
        "VirtualService istio/app: spec.http is a list, expected a mapping; "
        "spec.hosts: no element matches {name: app}; closest hosts[0]: "
        "spec.hosts[0] is a string, expected a mapping",
    )


def test_a_null_is_not_an_empty_mapping_and_null_matches_only_null() -> None:
    live = {"spec": {"a": None, "b": None}}
    diffs = assertion.match(live, {"spec": {"a": {}, "b": None}})
    assert [(assertion.path_text(d.path), d.kind, d.wanted) for d in diffs] == [
        ("spec.a", "type", "value")
    ]
    assert assertion.match({"spec": {}}, {"spec": {"(b)": None}}) == []


def test_more_than_five_differences_are_counted() -> None:
    tree = {"spec": {f"f{i}": i for i in range(8)}}
    result = check(Objects(deployment()), **DEPLOY, name="app", object=tree)
    assert result.status is Status.FAILED
    assert result.message.endswith("spec.f4 is missing, expected 4; and 3 more"), result.message
    assert len(result.evidence["differences"]) == 8


# -- lists ----------------------------------------------------------------------------------


def test_a_list_element_matches_any_live_element_in_any_order() -> None:
    tree = {"spec": {"strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}}}
    result = check(Objects(ROLLOUT), **ROLL, namespace="istio", object=tree)
    assert result.status is Status.PASSED, result


def test_a_list_element_without_a_match_shows_the_closest_element() -> None:
    tree = {"spec": {"strategy": {"canary": {"steps": [{"setWeight": 40}]}}}}
    result = check(Objects(ROLLOUT), **ROLL, namespace="istio", object=tree)
    expect(
        result,
        Status.FAILED,
        "Rollout istio/app: spec.strategy.canary.steps: no element matches {setWeight: 40}; "
        "closest steps[1]: setWeight is 20, expected 40",
    )


def test_nested_lists_of_mappings_env_of_a_container() -> None:
    tree = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "app", "env": [{"name": "BUG_AFTER", "value": "50"}]}]
                }
            }
        }
    }
    objects = Objects(deployment(pool="40"))
    expect(
        check(objects, **DEPLOY, name="app", object=tree),
        Status.FAILED,
        "Deployment istio/app: spec.template.spec.containers: no element matches "
        '{name: app, env: [{name: BUG_AFTER, value: "50"}]}; closest containers[0]: env: no '
        'element matches {name: BUG_AFTER, value: "50"}; closest env[0]: value is "40", '
        'expected "50"',
    )
    assert (
        check(Objects(deployment(pool="50")), **DEPLOY, name="app", object=tree).status
        is Status.PASSED
    )


def test_scalar_list_elements_and_the_empty_list() -> None:
    live = {"spec": {"hosts": ["app", "app.istio"], "gateways": []}}
    assert assertion.match(live, {"spec": {"hosts": ["app.istio"], "gateways": []}}) == []
    (diff,) = assertion.match(live, {"spec": {"hosts": ["web"]}})
    from kubelab.checks.assertions import describe

    assert describe(diff) == "spec.hosts: no element matches web; it holds [app, app.istio]"
    (diff,) = assertion.match(live, {"spec": {"hosts": []}})
    assert describe(diff) == "spec.hosts has 2 elements, expected none: [app, app.istio]"


def test_iterating_with_a_tilde_key_wants_every_element() -> None:
    tree = {"spec": {"template": {"spec": {"~.containers": {"image": "app-backend:v2"}}}}}
    result = check(Objects(deployment()), **DEPLOY, name="app", object=tree)
    expect(
        result,
        Status.FAILED,
        'Deployment istio/app: spec.template.spec.containers[1].image is "proxyv2:1.24", '
        'expected "app-backend:v2"',
    )


# -- expressions ----------------------------------------------------------------------------


def test_an_expression_key_that_holds_passes() -> None:
    tree = {"spec": {"(replicas > `3`)": True, "(length(strategy.canary.steps))": 4}}
    result = check(Objects(ROLLOUT), **ROLL, namespace="istio", object=tree)
    assert result.status is Status.PASSED, result


def test_an_expression_key_that_does_not_hold_fails_with_its_result() -> None:
    tree = {"(spec.replicas > `5`)": True}
    result = check(Objects(ROLLOUT), **ROLL, namespace="istio", object=tree)
    expect(
        result, Status.FAILED, "Rollout istio/app: (spec.replicas > `5`) is false, expected true"
    )


def test_an_expression_on_a_list_counts_its_elements() -> None:
    tree = {"spec": {"(length(http[0].route))": 3}}
    result = check(Objects(VIRTUALSERVICE), **VS, name="app", namespace="istio", object=tree)
    expect(
        result,
        Status.FAILED,
        "VirtualService istio/app: spec.(length(http[0].route)) is 2, expected 3",
    )
    tree = {"spec": {"(http[0].route[?destination.subset=='v2'].weight)": [50]}}
    result = check(Objects(VIRTUALSERVICE), **VS, name="app", namespace="istio", object=tree)
    assert result.status is Status.PASSED, result


def test_an_expression_that_cannot_run_on_the_object_says_why() -> None:
    tree = {"spec": {"(replicas > 'three')": True}}
    result = check(Objects(ROLLOUT), **ROLL, namespace="istio", object=tree)
    assert result.status is Status.FAILED
    assert result.message.startswith(
        "Rollout istio/app: spec.(replicas > 'three') cannot be evaluated: "
    ), result.message


def test_a_value_expression_is_the_expected_value_and_backslashes_escape_it() -> None:
    live = {"metadata": {"name": "app-v2", "annotations": {"(x)": "(y)"}}}
    assert assertion.match(live, {"metadata": {"name": "(join('-', ['app', 'v2']))"}}) == []
    assert assertion.match(live, {"metadata": {"annotations": {"\\(x)\\": "\\(y)\\"}}}) == []
    (diff,) = assertion.match(live, {"metadata": {"name": "(join('-', ['app', 'v3']))"}})
    assert (diff.kind, diff.value, diff.expected) == ("mismatch", "app-v2", "app-v3")


# -- name or selector -----------------------------------------------------------------------


def test_a_named_object_that_does_not_exist_fails() -> None:
    result = check(Objects(), **DEPLOY, name="app", object={"spec": {}})
    expect(result, Status.FAILED, "Deployment istio/app does not exist")


def test_selector_any_passes_when_one_selected_object_matches() -> None:
    objects = Objects(
        deployment("a", replicas=1, app="web"), deployment("b", replicas=3, app="web")
    )
    tree = {"spec": {"replicas": 3}}
    expect(
        check(objects, **DEPLOY, selector="app=web", object=tree),
        Status.PASSED,
        "Deployment with labels app=web in istio: 1 of 2 match (b)",
    )
    expect(
        check(objects, **DEPLOY, selector="app=web", object={"spec": {"replicas": 5}}),
        Status.FAILED,
        "Deployment with labels app=web in istio: none of 2 matches; closest a: "
        "spec.replicas is 1, expected 5",
    )


def test_selector_all_wants_every_selected_object_to_match() -> None:
    objects = Objects(
        deployment("a", replicas=1, app="web"), deployment("b", replicas=3, app="web")
    )
    result = check(
        objects, **DEPLOY, selector="app=web", match="all", object={"spec": {"replicas": 3}}
    )
    expect(
        result,
        Status.FAILED,
        "Deployment with labels app=web in istio: 1 of 2 do not match (a); a: "
        "spec.replicas is 1, expected 3",
    )
    assert result.hint == "kubectl get deployment a -n istio -o yaml"
    tree = {"spec": {"(replicas > `0`)": True}}
    expect(
        check(objects, **DEPLOY, selector="app=web", match="all", object=tree),
        Status.PASSED,
        "Deployment with labels app=web in istio: all 2 match",
    )


def test_a_selector_that_selects_nothing_fails() -> None:
    result = check(Objects(deployment()), **DEPLOY, selector="app=none", object={"spec": {}})
    expect(result, Status.FAILED, "no Deployment with labels app=none in istio")
    assert result.hint == "kubectl get deployment -n istio -l 'app=none' --show-labels"


# -- absent ---------------------------------------------------------------------------------


def test_absent_passes_when_the_object_does_not_match() -> None:
    live = copy.deepcopy(CANARY)
    del live["spec"]["analysis"]["sessionAffinity"]
    tree = {"spec": {"analysis": {"sessionAffinity": {}}}}
    expect(
        check(Objects(live), **CANARY_ABSENT, object=tree),
        Status.PASSED,
        "Canary canary-lab/app-backend does not match: spec.analysis.sessionAffinity is missing",
    )
    expect(
        check(Objects(), **CANARY_ABSENT, object=tree),
        Status.PASSED,
        "Canary canary-lab/app-backend does not exist",
    )


def test_absent_fails_saying_what_matched() -> None:
    tree = {"spec": {"analysis": {"sessionAffinity": {}}}}
    expect(
        check(Objects(CANARY), **CANARY_ABSENT, object=tree),
        Status.FAILED,
        "Canary canary-lab/app-backend has {spec: {analysis: {sessionAffinity: "
        "{cookieName: flagger-cookie, maxAge: 21600}}}}",
    )


def test_absent_without_a_tree_is_about_existence() -> None:
    expect(
        check(Objects(CANARY), **CANARY_ABSENT),
        Status.FAILED,
        "Canary canary-lab/app-backend exists",
    )
    expect(
        check(Objects(), **CANARY_ABSENT),
        Status.PASSED,
        "Canary canary-lab/app-backend does not exist",
    )
    objects = Objects(deployment("a", app="web"), deployment("b", app="web"))
    absent = {**DEPLOY, "type": "absent"}
    expect(
        check(objects, **absent, selector="app=web"),
        Status.FAILED,
        "Deployment with labels app=web in istio: 2 exist (a, b)",
    )
    expect(
        check(objects, **absent, selector="app=db"),
        Status.PASSED,
        "no Deployment with labels app=db in istio",
    )


def test_absent_with_a_selector_names_the_objects_that_match() -> None:
    objects = Objects(
        deployment("a", replicas=1, app="web"), deployment("b", replicas=0, app="web")
    )
    absent = {**DEPLOY, "type": "absent", "selector": "app=web"}
    expect(
        check(objects, **absent, object={"spec": {"replicas": 0}}),
        Status.FAILED,
        "Deployment with labels app=web in istio: 1 of 2 match (b); b has {spec: {replicas: 0}}",
    )
    expect(
        check(objects, **absent, object={"spec": {"replicas": 7}}),
        Status.PASSED,
        "Deployment with labels app=web in istio: none of 2 matches {spec: {replicas: 7}}",
    )


# -- the check's own fields -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"object": {}}, "give the object's name or a label selector (one of them)"),
        ({"name": "a", "selector": "app=a", "object": {}}, "give the object's name or a label"),
        ({"name": "a", "match": "all", "object": {}}, "match is for a selector"),
        ({"selector": "app in v1", "object": {}}, "invalid label selector"),
    ],
)
def test_the_check_wants_a_name_or_a_valid_selector(params: Obj, message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=re.escape(message)):
        msgspec.convert({**DEPLOY, **params}, Assert)


def test_retarget_moves_the_namespace_and_leaves_the_tree_alone() -> None:
    spec = msgspec.convert(
        {**DEPLOY, "name": "app", "object": {"metadata": {"namespace": "istio"}}}, Assert
    )
    moved = spec.retarget("istio", "istio-ana")
    assert moved.namespace == "istio-ana"
    assert moved.object == {"metadata": {"namespace": "istio"}}
    namespace = msgspec.convert(
        {"type": "absent", "api_version": "v1", "kind": "Namespace", "name": "istio"}, Absent
    )
    assert namespace.retarget("istio", "istio-ana").name == "istio-ana"


# -- the lesson loader ----------------------------------------------------------------------

LESSON = """\
id: {id}
title: {{pt: "Lição", en: "Lesson"}}
summary: {{pt: "Resumo", en: "Summary"}}
exercises:
  - id: one
    title: {{pt: "Um", en: "One"}}
    instructions: {{pt: "Faça.", en: "Do it."}}
    hints: [{{pt: "Dica", en: "Hint"}}]
    solve: solve.sh
    checks:
{checks}
"""


def _lesson(tmp_path: Path, checks: str, name: str = "assert-lesson") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    body = textwrap.indent(textwrap.dedent(checks).strip("\n"), " " * 6)
    (folder / "lesson.yaml").write_text(LESSON.format(id=name, checks=body), encoding="utf-8")
    solve = folder / "solve.sh"
    solve.write_text("#!/usr/bin/env bash\ntrue\n")
    solve.chmod(0o755)
    return folder


def _problems(folder: Path) -> list[str]:
    with pytest.raises(ValidationFailed) as failed:
        load_lesson(folder)
    prefix = str((folder / "lesson.yaml").resolve())
    return [d.removeprefix(prefix) for d in failed.value.details]


def test_a_lesson_with_assert_checks_loads(tmp_path: Path) -> None:
    folder = _lesson(
        tmp_path,
        """
        - type: assert
          api_version: apps/v1
          kind: Deployment
          name: app
          namespace: istio
          object:
            spec:
              (replicas > `1`): true
              template: {spec: {containers: [{name: app}]}}
        - type: absent
          api_version: v1
          kind: Pod
          selector: app=old
          namespace: istio
        """,
    )
    checks = load_lesson(folder).lesson.exercises[0].checks
    assert [c.type for c in checks] == ["assert", "absent"]


def test_an_invalid_jmespath_expression_is_reported_at_its_key_line(tmp_path: Path) -> None:
    folder = _lesson(
        tmp_path,
        """
        - type: assert
          api_version: apps/v1
          kind: Deployment
          name: app
          namespace: istio
          object:
            spec:
              replicas: 2
              (spec.x >): true
              template:
                metadata:
                  name: (lenght(@))
              (length(a, b)): 1
        """,
    )
    assert _problems(folder) == [
        ":19: exercises[0].checks[0].object.spec.(spec.x >): invalid JMESPath expression: "
        "the expression ends too early",
        ":22: exercises[0].checks[0].object.spec.template.metadata.name: invalid JMESPath "
        "expression: unknown function lenght(); did you mean length()?",
        ":23: exercises[0].checks[0].object.spec.(length(a, b)): invalid JMESPath "
        "expression: length() takes 1 argument, got 2",
    ]


def test_a_key_that_is_not_text_and_a_named_iteration_are_reported(tmp_path: Path) -> None:
    folder = _lesson(
        tmp_path,
        """
        - type: absent
          api_version: v1
          kind: Service
          name: app
          namespace: istio
          object:
            spec:
              ports:
                - 80: http
              ~port.(ports): {protocol: TCP}
        """,
    )
    assert _problems(folder) == [
        ":19: exercises[0].checks[0].object.spec.ports[0].80: a key of an object tree must be "
        "text (got 80); quote it",
        ":20: exercises[0].checks[0].object.spec.~port.(ports): named iteration ~port. is not "
        "supported (no bindings): write ~.",
    ]


def test_an_unknown_key_in_the_check_is_reported_with_a_suggestion(tmp_path: Path) -> None:
    folder = _lesson(
        tmp_path,
        """
        - type: assert
          api_version: apps/v1
          kind: Deployment
          name: app
          namespace: istio
          objet: {spec: {replicas: 2}}
        """,
    )
    assert _problems(folder) == [
        ":16: exercises[0].checks[0].objet: unknown key 'objet'; did you mean 'object'?",
    ]


def test_a_check_without_name_or_selector_is_reported_at_the_check(tmp_path: Path) -> None:
    folder = _lesson(
        tmp_path,
        """
        - type: assert
          api_version: apps/v1
          kind: Deployment
          namespace: istio
          object: {spec: {replicas: 2}}
        - type: absent
          api_version: apps/v1
          kind: Deployment
          selector: "app in v1"
          namespace: istio
          object: [replicas]
        """,
    )
    assert _problems(folder) == [
        ":11: exercises[0].checks[0]: give the object's name or a label selector (one of them)",
        ":19: exercises[0].checks[1].selector: invalid label selector 'app in v1': cannot "
        "parse 'app in v1'",
        ":21: exercises[0].checks[1].object: expected a mapping or nothing (got ['replicas'])",
    ]


def test_the_examples_of_the_documentation_are_valid() -> None:
    """docs/assert-checks.md: its checks convert, its trees have no problem, and its
    rule examples mean what the text says."""
    import yaml
    from support import ROOT

    from kubelab.lessons.loader import _LessonLoader

    text = (ROOT / "docs" / "assert-checks.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    assert len(blocks) >= 4
    for block in blocks:
        data = yaml.load(block, Loader=_LessonLoader)
        checks = data if isinstance(data, list) else [{"object": data.get("object", data)}]
        for item in checks:
            if "type" in item:
                msgspec.convert(item, CHECK_TYPES[item["type"]])
            assert list(assertion.problems(item["object"])) == [], block
    steps = yaml.load(blocks[1], Loader=_LessonLoader)
    assert assertion.match(ROLLOUT, steps) == []
    untimed = {"spec": {"strategy": {"canary": {"steps": [{"pause": {"(duration)": None}}]}}}}
    assert assertion.match(ROLLOUT, untimed) == []
    timed_only = copy.deepcopy(ROLLOUT)
    del timed_only["spec"]["strategy"]["canary"]["steps"][2]
    assert assertion.match(timed_only, untimed)
