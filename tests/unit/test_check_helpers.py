"""Pure parts of the checks: JSONPath, VirtualService weights, answer classification."""

from __future__ import annotations

import pytest

from kubelab.checks import registry
from kubelab.checks.mesh import route_weights
from kubelab.checks.result import Status, worst
from kubelab.checks.sampling import (
    Sample,
    attribute_hung,
    classify,
    explain_failures,
    misrouted,
    parse_exec_line,
    tally,
)
from kubelab.checks.types import CHECK_TYPES
from kubelab.k8s import jsonpath


def test_every_declared_check_type_is_implemented():
    assert set(registry.load()) == set(CHECK_TYPES)


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
    assert classify("v1 - Request 17\n", 200, "v2", False) == Sample("v1", 200, False, "v2")
    hung = classify("upstream request timeout", 504, "v1", False)
    assert (hung.version, hung.hung, hung.subset) == (None, True, "v1")
    assert classify("", 0, None, True) == Sample(None, 0, True, None, "no answer in time")


def test_the_mesh_header_never_makes_an_answer():
    # Envoy's own 503 names the subset it routed to; no app version produced it.
    sample = classify("no healthy upstream", 503, "v2", False)
    assert sample == Sample(None, 503, False, "v2", "no healthy upstream")
    assert tally([sample]) == ({}, {}, 1)
    # A 5xx whose body looks like the app's is not an answer either.
    assert classify("v2 - Request 3", 500, "v2", False).version is None


def test_unnamed_hangs_go_to_the_hanging_version():
    samples = [Sample("v2", 200, False), Sample(None, 0, True), Sample(None, 0, True)]
    answered, hung, unknown = tally(attribute_hung(samples, {"v1"}))
    assert answered == {"v1": 2, "v2": 1} and hung == {"v1": 2} and unknown == 0


def test_a_hang_counts_for_a_subset_only_when_its_pods_hang():
    routed_v2 = Sample(None, 504, True, "v2", "upstream request timeout")
    routed_v1 = Sample(None, 504, True, "v1", "upstream request timeout")
    answered, hung, unknown = tally(attribute_hung([routed_v2, routed_v1], {"v1"}))
    assert answered == {"v1": 1} and hung == {"v1": 1} and unknown == 1
    (sentence,) = explain_failures(attribute_hung([routed_v2], {"v1"}), 2)
    assert "1 request to subset v2 hung past 2s" in sentence
    assert "does DestinationRule subset v2 select them?" in sentence


def test_failures_are_explained_with_what_to_look_at():
    samples = [Sample(None, 503, False, "v2", "no healthy upstream")] * 136 + [
        Sample("v1", 200, False, "v2")
    ] * 3
    first, second = explain_failures(samples, 2)
    assert first == (
        "136 requests to subset v2 answered 503 no healthy upstream: are the pods labelled "
        "version=v2 running and ready, and does DestinationRule subset v2 select them?"
    )
    assert second == (
        "3 requests routed to subset v2 were answered by v1: does DestinationRule subset v2 "
        "select v1's pods?"
    )
    assert misrouted(samples) == {("v2", "v1"): 3}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("v2 - Request 4|200||0", Sample("v2", 200, False)),
        ("|000||28", Sample(None, 0, True, None, "no answer in time")),
        ("|000||56", Sample(None, 0, False, None, "connection failed (curl exit 56)")),
        ("no healthy upstream|503|v1|0", Sample(None, 503, False, "v1", "no healthy upstream")),
        ("a|b - Request 1|200|v1|0", Sample(None, 200, False, "v1", "a|b - Request 1")),
    ],
)
def test_exec_lines(line, expected):
    assert parse_exec_line(line) == expected


def test_exercise_status_is_the_worst_check():
    assert worst([Status.PASSED, Status.PENDING]) is Status.PENDING
    assert worst([Status.PENDING, Status.FAILED]) is Status.FAILED
    assert worst([Status.FAILED, Status.ERROR]) is Status.ERROR
    assert worst([]) is Status.PASSED


def test_the_version_endpoint_names_its_app():
    body = '{"version": "v2", "bug_after": 30, "requests": 4, "pool": {"size": 30}}'
    assert classify(body, 200, "v2", False) == Sample("v2", 200, False, "v2")
    # JSON that is not app_backend's /version is no answer from a version.
    assert classify('{"version": "v2"}', 200, None, False).version is None
    assert classify("{not json", 200, None, False).version is None
