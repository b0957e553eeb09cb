"""Pure parts of the progressive-delivery checks and of metrics-query's answer reading."""

from __future__ import annotations

import pytest

from kubelab.checks.flagger import (
    current_run,
    flagger_max_weight,
    max_event_iteration,
    max_event_weight,
)
from kubelab.checks.metrics import query_value
from kubelab.checks.objects import image_tag, parse_time
from kubelab.checks.rollouts import canary_weight, rollout_phase


@pytest.mark.parametrize(
    ("image", "tag"),
    [
        ("gitea.kubelab.local:3000/course/app-backend:v2", "v2"),
        ("localhost:5000/app-backend", "latest"),
        ("app-backend", "latest"),
        ("ghcr.io/x/app@sha256:0123abcd", "latest"),
        ("ghcr.io/x/app:v1@sha256:0123abcd", "v1"),
    ],
)
def test_image_tag(image: str, tag: str) -> None:
    assert image_tag(image) == tag


def test_event_times_order_with_and_without_fractions() -> None:
    assert parse_time("2025-06-10T14:00:00.5Z") > parse_time("2025-06-10T14:00:00Z")
    assert parse_time(None) < parse_time("1970-01-02T00:00:00Z")


def test_flagger_event_parsing_keeps_to_the_latest_analysis() -> None:
    messages = [
        "New revision detected! Scaling up app.ns",
        "Advance app.ns canary weight 50",
        "Promotion completed! Scaling down app.ns",
        "(combined from similar events): New revision detected! Scaling up app.ns",
        "Advance app.ns canary weight 10",
        "Advance app.ns canary iteration 2/10",
    ]
    run = current_run(messages)
    assert run == messages[3:]
    assert max_event_weight(run) == 10
    assert max_event_iteration(run) == (2, 10)
    assert max_event_weight(messages) == 50
    assert current_run(messages[1:3]) == messages[1:3]  # no start seen: everything


def _canary(index: int | None, **status: object) -> dict[str, object]:
    steps = [{"setWeight": 20}, {"pause": {}}, {"analysis": {}}, {"setWeight": 50}]
    if index is not None:
        status["currentStepIndex"] = index
    return {"spec": {"strategy": {"canary": {"steps": steps}}}, "status": status}


@pytest.mark.parametrize(
    ("rollout", "weight"),
    [
        (_canary(0), 20),
        (_canary(2), 20),
        (_canary(3), 50),
        (_canary(4), 100),  # past the last step
        (_canary(None), 100),
        (_canary(2, abort=True), 0),
        (_canary(2, canary={"weights": {"canary": {"weight": 15}}}), 15),
    ],
)
def test_canary_weight_as_argo_rollouts_computes_it(rollout: dict, weight: int) -> None:
    assert canary_weight(rollout)[0] == weight


def test_rollout_phase_follows_get_rollout_phase() -> None:
    rollout = {
        "metadata": {"generation": 3},
        "status": {"phase": "Healthy", "observedGeneration": "2"},
    }
    assert rollout_phase(rollout) == (
        "Progressing",
        "waiting for rollout spec update to be observed",
    )
    rollout["status"] = {"phase": "Paused", "observedGeneration": "3", "controllerPause": True}
    assert rollout_phase(rollout) == ("Progressing", "waiting for rollout to unpause")
    rollout["status"]["pauseConditions"] = [{"reason": "BlueGreenPause"}]
    rollout["status"]["message"] = "BlueGreenPause"
    assert rollout_phase(rollout) == ("Paused", "BlueGreenPause")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"resultType": "vector", "result": []}, (None, 0)),
        (
            {"resultType": "vector", "result": [{"value": [1, "NaN"]}, {"value": [1, "2"]}]},
            ("NaN", 2),
        ),
        ({"resultType": "scalar", "result": [1, "0.5"]}, ("0.5", 1)),
        ({"resultType": "matrix", "result": [{"values": [[1, "1"], [2, "+Inf"]]}]}, ("+Inf", 1)),
        ({"result": [{"value": [1, "3"]}]}, ("3", 1)),  # no resultType: a vector
    ],
)
def test_query_value_reads_every_result_type(data: dict, expected: tuple) -> None:
    assert query_value(data) == expected


@pytest.mark.parametrize(
    ("spec", "weight"),
    [
        ({"analysis": {"maxWeight": 50, "stepWeight": 10}}, 50),
        ({"analysis": {"stepWeights": [5, 20, 60]}}, 60),
        ({"analysis": {"stepWeight": 10}}, 100),
        ({"canaryAnalysis": {"maxWeight": 30}}, 30),  # the deprecated field
        ({"analysis": {"iterations": 10, "mirror": True}}, None),  # blue/green mirroring
        ({"analysis": {"maxWeight": 50}, "skipAnalysis": True}, None),
        ({}, None),
    ],
)
def test_flagger_max_weight(spec: dict, weight: int | None) -> None:
    assert flagger_max_weight({"spec": spec}) == weight
