"""The whole istio-traffic-splitting `up` and `down` for a real-cluster provider, against the
emulated Kubernetes API (the sandbox daemon) with pyhelm3 replaced at its boundary.

The provider here is the sandbox with components turned on: every release goes through
kubelab's real HelmClient to a stateful fake of pyhelm3's Client, which records the exact
calls; every object goes through the official Kubernetes client to the emulated API.
Images are built by a later step that needs Gitea and an engine, so this test skips them.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pyhelm3
import pytest

from kubelab.cluster.kube import Kube
from kubelab.components.deploy import components_for
from kubelab.components.values import values_for
from kubelab.lessons.loader import find_lesson
from kubelab.lessons.runner import LessonRunner
from kubelab.providers.sandbox import SandboxProvider
from kubelab.state import StateStore
from kubelab.tools import find_tool

pytestmark = [
    pytest.mark.skipif(find_tool("helm") is None, reason="helm missing: scripts/install-tools.sh"),
    pytest.mark.timeout(300),
]


class ClusterWithComponents(SandboxProvider):
    """The emulated API as if it were a real cluster that takes Helm components."""

    installs_components = True
    builds_images = False

    def teardown(self, details: dict[str, Any], everything: bool = False) -> list[str]:
        return []  # a real cluster outlives its lessons (the test stops the sandbox itself)


class FakeHelm:
    """pyhelm3.Client with memory: what was installed, with which description."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.releases: dict[tuple[str, str], Any] = {}
        self.installs: list[dict[str, Any]] = []
        self.uninstalls: list[tuple[str, str]] = []
        client = MagicMock(name="pyhelm3.Client()")
        client.get_proceedable_revision = AsyncMock(side_effect=self._current)
        client.get_chart = AsyncMock(side_effect=self._chart)
        client.install_or_upgrade_release = AsyncMock(side_effect=self._install)
        client.uninstall_release = AsyncMock(side_effect=self._uninstall)
        self.client = client

    async def _current(self, name: str, namespace: str, **_: Any) -> Any:
        return self.releases.get((namespace, name))

    async def _chart(self, ref: Any, repo: str | None = None, version: str | None = None) -> Any:
        return SimpleNamespace(ref=ref, repo=repo, version=version)

    async def _install(self, name: str, chart: Any, values: Any, **kw: Any) -> Any:
        self.installs.append(
            {
                "release": name,
                "chart": chart.ref,
                "repo": chart.repo,
                "version": chart.version,
                "namespace": kw["namespace"],
                "values": values,
                "wait": kw["wait"],
            }
        )
        # helm's --create-namespace: the release's namespace exists afterwards.
        record = self.store.load().lesson("istio-traffic-splitting")
        Kube(Path(record.details["kubeconfig"])).apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": kw["namespace"]}}
        )
        previous = self.releases.get((kw["namespace"], name))
        revision = SimpleNamespace(
            revision=(previous.revision + 1) if previous else 1,
            status=pyhelm3.ReleaseRevisionStatus("deployed"),
            description=kw["description"],
            updated=datetime.datetime.now(datetime.UTC),
        )
        self.releases[(kw["namespace"], name)] = revision
        return revision

    async def _uninstall(self, name: str, namespace: str | None = None, **_: Any) -> None:
        self.uninstalls.append((str(namespace), name))
        self.releases.pop((str(namespace), name), None)


@pytest.fixture
def fake_helm(monkeypatch: pytest.MonkeyPatch) -> FakeHelm:
    fake = FakeHelm(StateStore())
    monkeypatch.setattr(pyhelm3, "Client", MagicMock(return_value=fake.client))
    return fake


def test_up_twice_then_down(fake_helm: FakeHelm) -> None:
    store = StateStore()
    provider = ClusterWithComponents()
    loaded = find_lesson("istio-traffic-splitting")
    runner = LessonRunner(loaded, provider, store)
    try:
        first = runner.up()
        # -- helm: every release of the lesson's components, exact chart/version/values
        settings = runner.settings()
        expected = {
            r.name: (r.chart, r.repo, r.version, r.namespace, values_for(r, settings))
            for c in components_for(loaded.lesson.components, settings)
            for r in c.releases
        }
        assert {i["release"] for i in fake_helm.installs} == set(expected)
        for call in fake_helm.installs:
            chart, repo, version, namespace, values = expected[call["release"]]
            assert (call["chart"], call["repo"], call["version"], call["namespace"]) == (
                chart,
                repo,
                version,
                namespace,
            )
            assert call["values"] == values
        order = [i["release"] for i in fake_helm.installs]
        assert order.index("istio-base") < order.index("istiod") < order.index("kiali")
        # -- kubernetes: the lesson's objects carry kubelab's labels
        kube = Kube(Path(store.load().lesson(loaded.lesson.id).details["kubeconfig"]))
        vs = kube.get("networking.istio.io/v1", "VirtualService", "app-backend", "istio")
        assert vs is not None
        labels = vs["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "kubelab"
        assert labels["kubelab.dev/lesson"] == "istio-traffic-splitting"
        telemetry = kube.get("telemetry.istio.io/v1", "Telemetry", "mesh-default", "istio-system")
        assert telemetry is not None
        gitea_admin = kube.get("v1", "Secret", settings.gitea_admin_secret, "gitea")
        assert gitea_admin is not None
        password = gitea_admin["data"]["password"]

        # -- a second up: zero helm upgrades and zero mutating API calls
        installs_before = len(fake_helm.installs)
        second = LessonRunner(loaded, provider, store)
        again_result = second.up()
        assert len(fake_helm.installs) == installs_before
        assert second.kube.mutations == 0
        # ... and `up -o json` says so (UpResult.changes): the first up's report names
        # every release it installed, the second's the same nodes, all unchanged.
        assert {n: o for n, o in first.components.items() if ":" not in n} == dict.fromkeys(
            expected, "installed"
        )
        assert first.components["gitea:admin-secret"] == "created"
        assert first.deploy_changed == first.deployed > 0 and first.api_writes > 0
        assert list(again_result.components) == list(first.components)
        assert set(again_result.components.values()) == {"unchanged"}
        assert (again_result.deployed, again_result.deploy_changed) == (first.deployed, 0)
        assert again_result.api_writes == 0
        again = kube.get("v1", "Secret", settings.gitea_admin_secret, "gitea")
        assert again is not None and again["data"]["password"] == password  # never replaced

        # -- down: the lesson's objects by label, then every component in reverse order
        removed = LessonRunner(loaded, provider, store).down()
        assert kube.get("networking.istio.io/v1", "VirtualService", "app-backend", "istio") is None
        uninstalled = [name for _, name in fake_helm.uninstalls]
        assert set(uninstalled) == set(expected)
        assert uninstalled.index("kiali") < uninstalled.index("istiod")
        assert uninstalled.index("istiod") < uninstalled.index("istio-base")
        assert any("helm release kiali" in line for line in removed)
        assert store.load().lessons == {}
    finally:
        SandboxProvider().teardown({})


def _lesson_objects(kube: Kube) -> list[tuple[str, str]]:
    found = []
    for api_version, kind in (
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("networking.istio.io/v1", "VirtualService"),
        ("networking.istio.io/v1", "DestinationRule"),
        ("networking.istio.io/v1", "Gateway"),
    ):
        found += [
            (kind, o["metadata"]["name"])
            for o in kube.list(api_version, kind, "istio", "kubelab.dev/lesson")
        ]
    return sorted(found)


EXPECTED_OBJECTS = sorted(
    [
        ("Deployment", "app-backend-v1"),
        ("Deployment", "app-backend-v2"),
        ("Service", "app-backend"),
        ("VirtualService", "app-backend"),
        ("DestinationRule", "app-backend"),
        ("Gateway", "app-backend-gateway"),
    ]
)


def test_up_completes_when_the_api_fails_every_fifth_call(
    fake_helm: FakeHelm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBELAB_SANDBOX_FAULT_EVERY", "5")  # 429, 500, 503 in turn
    store = StateStore()
    runner = LessonRunner(find_lesson("istio-traffic-splitting"), ClusterWithComponents(), store)
    try:
        result = runner.up()
        assert result.first is not None and str(result.first.status) == "passed"
        assert runner.kube.retries > 0  # the faults happened and were retried
        assert _lesson_objects(runner.kube) == EXPECTED_OBJECTS  # each exactly once
    finally:
        SandboxProvider().teardown({})


def test_interrupted_up_resumes_without_duplicates(
    fake_helm: FakeHelm, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore()
    loaded = find_lesson("istio-traffic-splitting")
    runner = LessonRunner(loaded, ClusterWithComponents(), store)
    real_apply = Kube.apply
    calls = {"n": 0}

    def apply_then_ctrl_c(self: Kube, obj: Any, *args: Any, **kwargs: Any) -> Any:
        if obj.get("kind") == "Service" and not calls["n"]:
            calls["n"] += 1
            raise KeyboardInterrupt  # Ctrl-C half-way through the deploy step
        return real_apply(self, obj, *args, **kwargs)

    try:
        monkeypatch.setattr(Kube, "apply", apply_then_ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            runner.up()
        record = store.load().lesson(loaded.lesson.id)
        assert "components" in record.steps_done and "deploy" not in record.steps_done
        installs = len(fake_helm.installs)
        monkeypatch.setattr(Kube, "apply", real_apply)
        resumed = LessonRunner(loaded, ClusterWithComponents(), store)
        resumed.up()
        assert len(fake_helm.installs) == installs  # components were done: no helm call
        assert _lesson_objects(resumed.kube) == EXPECTED_OBJECTS
        assert "deploy" in store.load().lesson(loaded.lesson.id).steps_done
    finally:
        SandboxProvider().teardown({})
