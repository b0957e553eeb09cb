"""Validation of the msgspec structs (kubelab.base.problems): every problem of a document
at once, in words, and never a disagreement with msgspec itself about what is valid."""

from __future__ import annotations

import copy
import random
from typing import Any

import msgspec
import pytest
import yaml
from support import ROOT

from kubelab.base import problems
from kubelab.checks.types import CHECK_TYPES
from kubelab.lessons.model import Check, Lesson

LESSONS = sorted((ROOT / "labs").glob("*/lesson.yaml"))


def _data(path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _valid(tp: Any, value: Any) -> bool:
    try:
        msgspec.convert(value, tp)
    except msgspec.ValidationError:
        return False
    return True


def test_one_document_gets_all_its_problems_in_words():
    data = _data(LESSONS[0])
    data["titel"] = data.pop("title")
    del data["exercises"][0]["instructions"]
    data["exercises"][0]["hints"] = "one hint"
    data["exercises"][0]["checks"][0] = {"type": "pods-redy", "namespace": "istio"}
    data["exercises"][1]["checks"].append(
        {"type": "pods-ready", "namespace": "Istio", "selector": "app in v1", "min_ready": 0}
    )
    found = dict(problems(Lesson, data))
    at = len(data["exercises"][1]["checks"]) - 1
    assert found == {
        ("titel",): "unknown key 'titel'; did you mean 'title'?",
        ("exercises", 0, "instructions"): "required field is missing",
        ("exercises", 0, "hints"): "expected a list (got 'one hint')",
        ("exercises", 0, "checks", 0): found[("exercises", 0, "checks", 0)],
        ("exercises", 1, "checks", at, "namespace"): "must be a lowercase name: letters, "
        "digits and '-', starting and ending with a letter or digit (got 'Istio')",
        ("exercises", 1, "checks", at, "selector"): "invalid label selector 'app in v1': "
        "cannot parse 'app in v1'",
        ("exercises", 1, "checks", at, "min_ready"): "must be at least 1 (got 0)",
    }
    assert found[("exercises", 0, "checks", 0)].startswith(
        "unknown check type 'pods-redy'; did you mean 'pods-ready'?"
    )
    # "title" is not also reported missing: the typo's line already names it.
    assert ("title",) not in found


@pytest.mark.parametrize(
    ("check", "where", "message"),
    [
        ({"namespace": "a"}, (), "missing 'type' (one of: resource-exists, "),
        ("pods-ready", (), "expected a mapping (got 'pods-ready')"),
        (
            {"type": "traffic-split", "service": "s", "namespace": "n", "expect": {"v1": 90}},
            ("expect",),
            "weights must sum to 100 (got v1 90 = 90)",
        ),
        (
            {"type": "http-stable", "service": "s", "namespace": "n", "via": "ingress"},
            ("via",),
            "must be one of: in-mesh, gateway (got 'ingress')",
        ),
        (
            {"type": "http-stable", "service": "s", "namespace": "n", "timeout_seconds": 0},
            ("timeout_seconds",),
            "must be more than 0.0 (got 0)",
        ),
        (
            {"type": "rollout-services", "rollout": "r", "namespace": "n", "expect": {}},
            ("expect",),
            "needs at least 1 entry (got {})",
        ),
        (
            {"type": "rollout-status", "name": "r", "namespace": "n", "phase": ["Done"]},
            ("phase", 0),
            "must be one of: Healthy, Progressing, Paused, Degraded (got 'Done')",
        ),
        (
            {"type": "pods-ready", "namespace": "n", "selector": "a=b", "description": "x"},
            ("description",),
            "expected a text per language: {pt: ..., en: ...}",
        ),
        (
            {"type": "metrics-query", "query": "up", "value": "high"},
            ("value",),
            "expected a number (got 'high')",
        ),
        (
            {"type": "http-stable", "service": "s", "namespace": "n", "expect_version": 2},
            ("expect_version",),
            "expected a string or nothing (got 2)",
        ),
    ],
)
def test_check_problems(check, where, message):
    (found,) = problems(Check, check)
    assert found[0] == where
    assert found[1].startswith(message)


def test_the_built_in_lessons_and_checks_have_no_problem():
    for path in LESSONS:
        data = _data(path)
        assert _valid(Lesson, data)
        assert problems(Lesson, data) == []
    assert set(CHECK_TYPES) == {
        check["type"]
        for path in LESSONS
        for exercise in _data(path)["exercises"]
        for check in exercise["checks"]
    } | {"resource-exists", "sidecar-injected", "field-equals", "metrics-query"}


def _mutate(node: Any, rng: random.Random) -> Any:
    """``node`` with one random change somewhere: a key removed, added or mistyped, or a
    value replaced by one of another type or out of range."""
    if isinstance(node, dict) and node and rng.random() < 0.7:
        key = rng.choice(list(node))
        choice = rng.random()
        if choice < 0.15:
            del node[key]
        elif choice < 0.25:
            node[key + "x"] = node.pop(key)
        else:
            node[key] = _mutate(node[key], rng)
        return node
    if isinstance(node, list) and node and rng.random() < 0.8:
        i = rng.randrange(len(node))
        if rng.random() < 0.1:
            node.pop(i)
        else:
            node[i] = _mutate(node[i], rng)
        return node
    return rng.choice(["", "Not A Name", "a", -1, 0, 0.5, 1000000, True, None, [], {}, [1]])


def test_problems_agree_with_msgspec_on_mutated_lessons():
    # The walker reports what msgspec decides: a problem exactly when conversion fails.
    rng = random.Random(13)
    originals = [_data(path) for path in LESSONS]
    invalid = 0
    for _ in range(600):
        data = _mutate(copy.deepcopy(rng.choice(originals)), rng)
        found = problems(Lesson, data)
        assert bool(found) is not _valid(Lesson, data), found
        invalid += bool(found)
        for loc, message in found:
            assert message and "`" not in message, (loc, message)  # words, not msgspec's
    assert invalid > 300  # the mutations mostly break something
