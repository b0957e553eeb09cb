"""What `kubelab up` reports it changed: UpResult's fields, `changes` in `up -o json`."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from kubelab.cli.main import run
from kubelab.components.installer import NodeResult
from kubelab.lessons import runner as runner_module
from kubelab.lessons.loader import find_lesson
from kubelab.lessons.runner import LessonRunner, UpResult, merge_outcomes
from kubelab.providers.sandbox import SandboxProvider
from kubelab.state import LessonRecord, StateStore


def _results(**outcomes: str) -> list[NodeResult]:
    return [NodeResult(name, outcome, 0.1) for name, outcome in outcomes.items()]


def test_merge_keeps_what_a_pass_changed():
    first = _results(**{"istio-base": "installed", "kiali": "installed", "gitea": "unchanged"})
    # The second pass (dashboards renamed after the gateway's IP) upgrades only kiali.
    second = _results(**{"istio-base": "unchanged", "kiali": "upgraded", "gitea": "unchanged"})
    assert merge_outcomes(first, second) == {
        "istio-base": "installed",
        "kiali": "upgraded",
        "gitea": "unchanged",
    }
    assert list(merge_outcomes(first, second)) == ["istio-base", "kiali", "gitea"]  # DAG order


def test_merge_of_one_pass_and_of_none():
    assert merge_outcomes(_results(a="unchanged", b="created")) == {
        "a": "unchanged",
        "b": "created",
    }
    assert merge_outcomes() == {}


def test_changes_is_the_documented_json_shape():
    result = UpResult(
        LessonRecord(lesson="l"),
        None,
        1.0,
        components={"istiod": "unchanged", "gitea:admin-secret": "unchanged"},
        images=["r/kubelab/app-backend:v1 already exists in the registry"],
        deployed=8,
        deploy_changed=0,
        api_writes=0,
    )
    assert result.changes() == {
        "components": [
            {"name": "istiod", "outcome": "unchanged"},
            {"name": "gitea:admin-secret", "outcome": "unchanged"},
        ],
        "images": ["r/kubelab/app-backend:v1 already exists in the registry"],
        "deploy": {"objects": 8, "changed": 0, "drift": {}},
        "api_writes": 0,
    }
    json.dumps(result.changes())  # plain JSON, nothing to coerce


def test_defaults_say_nothing_was_changed():
    assert UpResult(LessonRecord(lesson="l"), None, 0.0).changes() == {
        "components": [],
        "images": [],
        "deploy": {"objects": 0, "changed": 0, "drift": {}},
        "api_writes": 0,
    }


class _Scripted(LessonRunner):
    """The lifecycle loop with every step replaced by what a real one returns."""

    def step_preflight(self) -> None: ...

    def step_cluster(self) -> None:
        self._update(lambda r: r.details.update({"kubeconfig": "/dev/null"}))

    def step_components(self) -> dict[str, str]:
        self.kube.mutations += 2  # the Gitea admin Secret and a component's manifests
        return {"istio-base": "installed", "gitea:admin-secret": "created"}

    def step_images(self) -> list[str]:
        self.kube.mutations += 1  # the pull Secret
        return ["built and pushed localhost:30300/kubelab/app-backend:v1"]

    def step_deploy(self) -> tuple[int, int]:
        self.kube.mutations += 8
        return 8, 8

    def step_exercises(self) -> Any:
        return None


def test_up_collects_each_steps_report_and_every_api_write():
    store = StateStore()
    runner = _Scripted(find_lesson("istio-traffic-splitting"), SandboxProvider(), store)
    result = runner.up()
    assert result.components == {"istio-base": "installed", "gitea:admin-secret": "created"}
    assert result.images == ["built and pushed localhost:30300/kubelab/app-backend:v1"]
    assert (result.deployed, result.deploy_changed, result.api_writes) == (8, 8, 11)
    assert result.first is None
    assert store.load().lesson("istio-traffic-splitting").steps_done == [
        "preflight",
        "cluster",
        "components",
        "images",
        "deploy",
        "exercises",
    ]


def test_up_json_prints_changes(capsys: pytest.CaptureFixture[str], monkeypatch):
    record = LessonRecord(
        lesson="istio-traffic-splitting",
        provider="existing",
        details={"kubeconfig": "/k", "namespace": "istio"},
    )
    result = UpResult(
        record,
        None,
        12.3,
        components={"istio-base": "unchanged"},
        images=["x already exists in the registry"],
        deployed=8,
    )
    monkeypatch.setattr(runner_module.LessonRunner, "up", lambda self: result)
    monkeypatch.setattr(
        "kubelab.providers.get_provider", lambda name: SimpleNamespace(name=name, offline=False)
    )
    assert run(["up", "istio-traffic-splitting", "--provider", "existing", "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["changes"] == result.changes()
    assert (data["lesson"], data["provider"], data["kubeconfig"]) == (
        "istio-traffic-splitting",
        "existing",
        "/k",
    )
