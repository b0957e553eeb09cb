"""The components step of ``kubelab up --charts DIR`` through the real helm on the real
kube-apiserver, then ``kubelab down``.

The charts are stand-ins (:mod:`standin_charts`) at the catalog's pinned names and
versions, laid out in DIR by kubelab's own ``pull_charts`` exactly as ``kubelab charts
pull`` leaves it. The lesson is istio-traffic-splitting (seven releases: Istio's three,
VictoriaMetrics, Kiali, Jaeger, Gitea) on the ``existing`` provider with the gateway as a
NodePort Service, as on kind (a LoadBalancer would never get an address here).

A wrapper around the helm binary records each command with its start and end time, so
the test sees the dependency order of the real installs (and helm's own ``helm list``
timestamps say the same). The second run goes through the recording proxy
(:mod:`faultproxy`, the same admin credentials) and must make zero helm upgrades and zero
mutating API calls; it is given no ``--charts``: the recorded choice is used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy
from standin_charts import STANDINS, standin_folder, write_chart

from kubelab.cluster.helm import HelmClient
from kubelab.components import catalog
from kubelab.components.installer import RecordingProgress
from kubelab.components.localcharts import INDEX_FILE, lesson_releases
from kubelab.components.values import InstallSettings, values_for
from kubelab.errors import SetupError
from kubelab.lessons.loader import find_lesson
from kubelab.lessons.runner import LessonRunner
from kubelab.providers.base import ClusterFacts
from kubelab.providers.existing import ExistingProvider
from kubelab.state import StateStore
from kubelab.tools import find_tool
from kubelab.yamlio import dump_yaml, load_all_yaml

HELM = find_tool("helm")
LESSON = "istio-traffic-splitting"

pytestmark = [
    pytest.mark.skipif(HELM is None, reason="helm missing: scripts/install-tools.sh"),
    pytest.mark.timeout(300),
]

WRAPPER = """#!{python}
import json, os, subprocess, sys, time
start = time.time()
code = subprocess.run([{real!r}, *sys.argv[1:]]).returncode
line = json.dumps({{"argv": sys.argv[1:], "start": start, "end": time.time(), "rc": code}})
with open({log!r}, "a") as fh:
    fh.write(line + "\\n")
sys.exit(code)
"""


class TimedHelm:
    """``helm`` on PATH that records every command with its start and end time."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / "helm-calls.jsonl"
        self.bin = folder / "helm"
        self.bin.write_text(
            WRAPPER.format(python=sys.executable, real=str(HELM), log=str(self.log))
        )
        self.bin.chmod(0o755)

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def clear(self) -> None:
        self.log.unlink(missing_ok=True)

    def verbs(self) -> list[str]:
        return [c["argv"][0] for c in self.calls() if c["argv"][:1] != ["version"]]

    def upgrades(self) -> dict[str, dict[str, Any]]:
        return {c["argv"][1]: c for c in self.calls() if c["argv"][:1] == ["upgrade"]}


class NodePortCluster(ExistingProvider):
    """The existing provider on a cluster without LoadBalancers: the gateway is a NodePort
    Service, as kind's is."""

    def facts(self) -> ClusterFacts:
        return dataclasses.replace(super().facts(), gateway_service_type="NodePort")


@pytest.fixture
def helm_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TimedHelm:
    """helm's caches in the test's folder; the recording wrapper first on PATH."""
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    helm = TimedHelm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{helm.bin.parent}:{os.environ['PATH']}")
    assert find_tool("helm") == helm.bin
    return helm


def _releases() -> list[catalog.Release]:
    return lesson_releases(find_lesson(LESSON).lesson.components)


def test_standins_render_with_every_value_kubelab_passes(tmp_path: Path) -> None:
    """No values schema, names from the same keys as the real charts: each stand-in renders
    with no values and with kubelab's values for several clusters."""
    assert HELM is not None
    assert set(STANDINS) == {r.chart for r in catalog.RELEASES.values()}
    settings = [
        InstallSettings(),
        InstallSettings(
            gateway_service_type="NodePort",
            gateway_http_node_port=30080,
            gitea_node_port=30300,
            registry_host="localhost:30300",
        ),
    ]
    names: dict[str, set[tuple[str, str]]] = {}
    for release in catalog.RELEASES.values():
        chart = write_chart(release, tmp_path / "src")
        for values in ({}, *(values_for(release, s) for s in settings)):
            file = tmp_path / f"{release.name}.yaml"
            file.write_text(dump_yaml(values))
            done = subprocess.run(
                [
                    str(HELM),
                    "template",
                    release.name,
                    str(chart),
                    "-n",
                    release.namespace,
                    "-f",
                    str(file),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, f"{release.name}: {done.stderr}"
            if values:
                objs = load_all_yaml(done.stdout)
                names[release.name] = {(o["kind"], o["metadata"]["name"]) for o in objs}
    # What kubelab talks to, under the names the catalog gives.
    for component in catalog.CATALOG.values():
        for endpoint in (component.api, component.ui):
            if endpoint is not None:
                release = next(
                    r.name for r in component.releases if ("Service", endpoint[1]) in names[r.name]
                )
                assert release, endpoint
    assert ("Service", catalog.GATEWAY_RELEASE) in names[catalog.GATEWAY_RELEASE]
    assert ("Deployment", "gitea") in names["gitea"]


def test_up_with_local_charts_twice_then_down(  # type: ignore[no-untyped-def]
    control_plane, upstream_crds, helm_env: TimedHelm, tmp_path: Path
) -> None:
    assert HELM is not None
    charts = tmp_path / "class-charts"
    pulled = standin_folder(HELM, _releases(), charts, tmp_path / "standin-src")
    assert [p.action for p in pulled] == ["pulled"] * 8 and (charts / INDEX_FILE).is_file()
    kube = control_plane.kube()
    store = StateStore()
    lesson = find_lesson(LESSON)
    reports: list[tuple[str, str]] = []
    proxy: FaultProxy | None = None
    selected = {r.name for r in _releases()}
    try:
        # -- first run: `kubelab up LESSON --provider existing --charts DIR` (components step)
        provider = NodePortCluster(control_plane.kubeconfig)
        runner = LessonRunner(
            lesson,
            provider,
            store,
            report=lambda step, message: reports.append((step, message)),
            poll=0.05,
            progress=(first := RecordingProgress()),
            options={"charts": str(charts)},
        )
        runner.step_preflight()
        runner.step_cluster()
        runner.step_components()
        outcomes = {name: status for _, name, status, _ in first.events}
        assert {n: outcomes[n] for n in selected} == {n: "installed" for n in selected}
        assert reports[-1] == (
            "components",
            # applied: Istio's settings and Kiali's (its dashboard viewer ServiceAccount).
            f"5 components ready (2 applied, 1 created, 8 installed) from the local charts "
            f"in {charts}",
        )

        # Each release from its archive, never from a repository.
        upgrades = helm_env.upgrades()
        assert set(upgrades) == selected
        for release in _releases():
            argv = upgrades[release.name]["argv"]
            assert argv[2] == str(charts / f"{release.chart}-{release.version}.tgz")
            assert "--repo" not in argv
            assert argv[argv.index("--version") + 1] == release.version
            assert upgrades[release.name]["rc"] == 0
        assert not [c for c in helm_env.calls() if c["argv"][:1] == ["pull"]]

        # Dependency order: a release's helm upgrade starts after its dependencies' ended.
        for release in _releases():
            for dep in release.depends_on:
                if dep in selected:
                    assert upgrades[dep]["end"] <= upgrades[release.name]["start"], (
                        f"{release.name} started before {dep} was installed"
                    )
        # helm's own record agrees (release times, nanosecond precision).
        listed = {
            r.name: r
            for r in HelmClient(control_plane.kubeconfig, HELM).list_releases()
            if r.name in selected
        }
        deployed = {n: _helm_time(r.updated) for n, r in listed.items()}
        for release in _releases():
            for dep in release.depends_on:
                if dep in selected:
                    assert deployed[dep] < deployed[release.name]
        assert {(n, r.chart, r.chart_version, r.status) for n, r in listed.items()} == {
            (r.name, r.chart, r.version, "deployed") for r in _releases()
        }

        # What kubelab waits for and talks to is there, rolled out on the real controllers.
        for release in _releases():
            for dep in kube.list(
                "apps/v1",
                "Deployment",
                release.namespace,
                f"app.kubernetes.io/instance={release.name}",
            ):
                assert dep["status"].get("availableReplicas") == 1, dep["metadata"]["name"]
        # The CNI node agent: one pod per node, Ready (helm --wait waited for it).
        cni = kube.get("apps/v1", "DaemonSet", "istio-cni-node", catalog.ISTIO_NAMESPACE)
        assert cni is not None and cni["status"].get("numberReady") == 1, cni
        gitea = kube.get("v1", "Service", catalog.GITEA_SERVICE, catalog.GITEA_NAMESPACE)
        assert gitea is not None
        assert [p["port"] for p in gitea["spec"]["ports"]] == [catalog.GITEA_PORT]
        gateway = kube.get("v1", "Service", catalog.GATEWAY_RELEASE, catalog.ISTIO_NAMESPACE)
        assert gateway is not None and gateway["spec"]["type"] == "NodePort"
        for namespace, name, port in (
            c.api for c in catalog.CATALOG.values() if c.api and c.name in lesson.lesson.components
        ):
            service = kube.get("v1", "Service", name, namespace)
            assert service is not None and port in [p["port"] for p in service["spec"]["ports"]]
        assert kube.get("telemetry.istio.io/v1", "Telemetry", "mesh-default", "istio-system")
        record = store.load().lesson(LESSON)
        assert record.details["charts"] == str(charts)
        archives = {r.name: r.details.get("archive") for r in record.resources}
        assert archives == {r.name: str(charts / f"{r.chart}-{r.version}.tgz") for r in _releases()}

        # -- second run, without --charts (recorded), through the recording proxy
        proxy = FaultProxy(control_plane.plane)
        helm_env.clear()
        second = RecordingProgress()
        again = LessonRunner(
            lesson,
            NodePortCluster(proxy.kubeconfig(tmp_path / "proxy.kubeconfig")),
            store,
            report=lambda step, message: reports.append((step, message)),
            poll=0.05,
            progress=second,
        )
        again.step_cluster()
        proxy.requests.clear()
        again.step_components()
        outcomes = {name: status for _, name, status, _ in second.events}
        assert {n: outcomes[n] for n in selected} == {n: "unchanged" for n in selected}
        assert reports[-1] == (
            "components",
            f"5 components ready (11 unchanged) from the local charts in {charts}",
        )
        assert helm_env.verbs() == ["status"] * 8  # no show, no upgrade
        assert proxy.requests and proxy.mutating() == []
        assert {r.name: r.revision for r in listed.values()} == {
            r.name: r.revision
            for r in HelmClient(control_plane.kubeconfig, HELM).list_releases()
            if r.name in selected
        }

        # -- a third run with an archive gone: the file and the command that fetches it
        missing = charts / "kiali-server-2.29.0.tgz"
        missing.unlink()
        helm_env.clear()
        proxy.requests.clear()
        with pytest.raises(SetupError) as info:
            LessonRunner(
                lesson, NodePortCluster(proxy.kubeconfig(tmp_path / "proxy.kubeconfig")), store
            ).step_components()
        assert info.value.message == (
            f"{missing}: missing (chart kiali-server 2.29.0 (release kiali), listed in "
            f"{INDEX_FILE})"
        )
        assert f"kubelab charts pull {charts} {LESSON}" in (info.value.hint or "")
        assert helm_env.verbs() == [] and proxy.mutating() == []

        # -- down: every release removed, dependents first
        helm_env.clear()
        removed = LessonRunner(lesson, NodePortCluster(control_plane.kubeconfig), store).down()
        assert {f"helm release {r}" for r in selected} <= set(removed)
        uninstalls = {c["argv"][1]: c for c in helm_env.calls() if c["argv"][0] == "uninstall"}
        assert set(uninstalls) == selected
        for release in _releases():
            for dep in release.depends_on:
                if dep in selected:
                    assert uninstalls[release.name]["end"] <= uninstalls[dep]["start"]
        left = [
            r.name
            for r in HelmClient(control_plane.kubeconfig, HELM).list_releases()
            if r.name in selected
        ]
        assert left == []
        for release in _releases():
            assert (
                kube.list(
                    "apps/v1",
                    "Deployment",
                    release.namespace,
                    f"app.kubernetes.io/instance={release.name}",
                )
                == []
            )
        assert LESSON not in store.load().lessons
    finally:
        if proxy is not None:
            proxy.close()
        for release in _releases():
            with contextlib.suppress(SetupError):
                HelmClient(control_plane.kubeconfig, HELM).uninstall(
                    release.name, release.namespace, wait=False
                )
        kube.delete("telemetry.istio.io/v1", "Telemetry", "mesh-default", "istio-system")
        control_plane.delete_namespaces({r.namespace for r in _releases()})


def _helm_time(text: str) -> datetime:
    """helm list's ``updated`` (``2025-01-02 03:04:05.123456789 +0000 UTC``) as a datetime,
    keeping microseconds (Python has no nanoseconds)."""
    date, clock, offset = text.split()[:3]
    whole, _, fraction = clock.partition(".")
    return datetime.strptime(
        f"{date} {whole}.{(fraction + '000000')[:6]} {offset}", "%Y-%m-%d %H:%M:%S.%f %z"
    )
