"""Pure parts of the checks: JSONPath, VirtualService weights, answer classification."""

from __future__ import annotations

import pytest

from kubelab.checks import jsonpath
from kubelab.checks.builtin import IMPLEMENTATIONS, route_weights
from kubelab.checks.result import Status, worst
from kubelab.checks.traffic import Sample, attribute_hung, classify, tally
from kubelab.checks.types import CHECK_TYPES


def test_every_declared_check_type_is_implemented():
    assert set(IMPLEMENTATIONS) == set(CHECK_TYPES)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("{.metadata.name}", "ns"),
        ("{.metadata.labels.istio-injection}", "enabled"),
        (r"{.metadata.labels.app\.kubernetes\.io/name}", "kiali"),
        ("{.spec.items[1]}", "b"),
        ("{.metadata.labels['app.kubernetes.io/name']}", "kiali"),
        ("{.spec.missing}", jsonpath.MISSING),
        ("{.spec.items[5]}", jsonpath.MISSING),
    ],
)
def test_jsonpath(path, expected):
    obj = {
        "metadata": {
            "name": "ns",
            "labels": {"istio-injection": "enabled", "app.kubernetes.io/name": "kiali"},
        },
        "spec": {"items": ["a", "b"]},
    }
    assert jsonpath.lookup(obj, path) == expected or jsonpath.lookup(obj, path) is expected


def _vs(*routes, match=None):
    http = [{"route": [dict(r) for r in routes]}]
    if match:
        http.insert(0, {"match": match, "route": [{"destination": {"subset": "v3"}}]})
    return {"spec": {"http": http}}


def test_route_weights_are_per_subset_in_any_order():
    weights, notes = route_weights(
        _vs(
            {"destination": {"host": "a", "subset": "v2"}, "weight": 10},
            {"destination": {"host": "a", "subset": "v1"}, "weight": 90},
        )
    )
    assert weights == {"v1": 90, "v2": 10} and notes == []


def test_route_weights_lone_destination_gets_everything_and_match_routes_are_skipped():
    weights, _ = route_weights(
        _vs({"destination": {"host": "a", "subset": "v2"}}, match=[{"uri": {"prefix": "/x"}}])
    )
    assert weights == {"v2": 100}


def test_route_weights_note_bad_sums():
    weights, notes = route_weights(
        _vs(
            {"destination": {"subset": "v1"}, "weight": 60},
            {"destination": {"subset": "v2"}, "weight": 60},
        )
    )
    assert weights == {"v1": 60, "v2": 60}
    assert notes == ["the weights add up to 120, not 100"]


def test_classify_answers_and_hangs():
    assert classify("v1 - Request 17\n", 200, None, False) == Sample("v1", 200, False)
    assert classify("upstream request timeout", 504, "v1", False) == Sample("v1", 504, True)
    assert classify("", 0, None, True) == Sample(None, 0, True)
    assert classify("no healthy upstream", 503, "v3", False) == Sample("v3", 503, False)


def test_unnamed_hangs_go_to_the_hanging_version():
    samples = [Sample("v2", 200, False), Sample(None, 0, True), Sample(None, 0, True)]
    answered, hung, unknown = tally(attribute_hung(samples, {"v1"}))
    assert answered == {"v1": 2, "v2": 1} and hung == {"v1": 2} and unknown == 0


def test_exercise_status_is_the_worst_check():
    assert worst([Status.PASSED, Status.PENDING]) is Status.PENDING
    assert worst([Status.PENDING, Status.FAILED]) is Status.FAILED
    assert worst([Status.FAILED, Status.ERROR]) is Status.ERROR
    assert worst([]) is Status.PASSED
