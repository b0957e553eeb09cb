"""HelmClient at the pyhelm3 boundary: pyhelm3's ``Client`` is replaced by a mock and each
test asserts the exact calls (chart, repo, version, release, namespace, values, wait,
timeout), the unchanged-release skip, error mapping and secret masking."""

from __future__ import annotations

import asyncio
import datetime
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock, MagicMock, call

import pyhelm3
import pyhelm3.errors
import pytest

from kubelab.cluster import helm
from kubelab.cluster.helm import HelmClient, ReleaseInfo, Result
from kubelab.errors import KubelabTimeout, SetupError

KUBECONFIG = Path("/tmp/kubelab-test/kubeconfig")
HELM = Path("/opt/helm/bin/helm")
REPO = "https://kiali.org/helm-charts"
VALUES: dict[str, Any] = {
    "auth": {"strategy": "anonymous"},
    "external_services": {"prometheus": {"url": "http://vm.monitoring:8428"}},
}


def revision(
    number: int,
    status: str = "deployed",
    description: str = "Install complete",
    chart: tuple[str, str] = ("kiali-server", "2.5.0"),
    values: dict[str, Any] | None = None,
) -> Any:
    rev = SimpleNamespace(
        revision=number,
        status=pyhelm3.ReleaseRevisionStatus(status),
        description=description,
        updated=datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    )
    rev.chart_metadata = AsyncMock(
        return_value=SimpleNamespace(name=chart[0], version=chart[1], app_version="v2.5.0")
    )
    rev.values = AsyncMock(return_value=values if values is not None else {})
    return rev


@pytest.fixture
def pyhelm(monkeypatch: pytest.MonkeyPatch) -> tuple[MagicMock, MagicMock]:
    """(the Client class mock, the client instance mock)."""
    client = MagicMock(name="pyhelm3.Client()")
    client.get_proceedable_revision = AsyncMock(return_value=None)
    client.get_current_revision = AsyncMock()
    client.get_chart = AsyncMock(return_value=SimpleNamespace(name="resolved-chart"))
    client.install_or_upgrade_release = AsyncMock(return_value=revision(1))
    client.uninstall_release = AsyncMock(return_value=None)
    client.list_release_definitions = AsyncMock(return_value=[])
    cls = MagicMock(name="pyhelm3.Client", return_value=client)
    monkeypatch.setattr(pyhelm3, "Client", cls)
    return cls, client


def description_for(chart: str, version: str, values: dict[str, Any], repo: str = REPO) -> str:
    return f"kubelab kubelab-fingerprint={helm.fingerprint(chart, repo, version, values)}"


def ensure_kiali(hc: HelmClient, values: dict[str, Any] = VALUES, **kwargs: Any) -> Result:
    return hc.ensure_release(
        "kiali",
        "kiali-server",
        REPO,
        "2.5.0",
        "istio-system",
        values,
        wait=True,
        timeout=300,
        **kwargs,
    )


def test_install_when_there_is_no_release(pyhelm: tuple[MagicMock, MagicMock]) -> None:
    cls, client = pyhelm
    result = ensure_kiali(HelmClient(KUBECONFIG, HELM))
    assert result == Result("installed", 1)
    cls.assert_called_once_with(
        executable=str(HELM), kubeconfig=KUBECONFIG, kubecontext=None, default_timeout="300s"
    )
    client.get_proceedable_revision.assert_awaited_once_with(
        "kiali", namespace="istio-system", timeout="300s"
    )
    client.get_chart.assert_awaited_once_with("kiali-server", repo=REPO, version="2.5.0")
    client.install_or_upgrade_release.assert_awaited_once_with(
        "kiali",
        client.get_chart.return_value,
        VALUES,
        namespace="istio-system",
        create_namespace=True,
        atomic=False,
        wait=True,
        timeout="300s",
        description=description_for("kiali-server", "2.5.0", VALUES),
    )


def test_unchanged_release_makes_no_upgrade(pyhelm: tuple[MagicMock, MagicMock]) -> None:
    _, client = pyhelm
    current = revision(4, description=description_for("kiali-server", "2.5.0", VALUES))
    client.get_proceedable_revision.return_value = current
    # The same values in another key order: the same fingerprint.
    reordered = json.loads(json.dumps(VALUES, sort_keys=True))
    assert ensure_kiali(HelmClient(KUBECONFIG, HELM), reordered) == Result("unchanged", 4)
    client.get_chart.assert_not_awaited()
    client.install_or_upgrade_release.assert_not_awaited()
    current.values.assert_not_awaited()  # the fast path reads no values back


def test_changed_values_upgrade(pyhelm: tuple[MagicMock, MagicMock]) -> None:
    _, client = pyhelm
    client.get_proceedable_revision.return_value = revision(
        4, description=description_for("kiali-server", "2.5.0", VALUES)
    )
    client.install_or_upgrade_release.return_value = revision(5)
    changed = {**VALUES, "auth": {"strategy": "token"}}
    assert ensure_kiali(HelmClient(KUBECONFIG, HELM), changed) == Result("upgraded", 5)
    client.get_chart.assert_awaited_once_with("kiali-server", repo=REPO, version="2.5.0")
    client.install_or_upgrade_release.assert_awaited_once_with(
        "kiali",
        client.get_chart.return_value,
        changed,
        namespace="istio-system",
        create_namespace=True,
        atomic=False,
        wait=True,
        timeout="300s",
        description=description_for("kiali-server", "2.5.0", changed),
    )


def test_changed_chart_version_upgrades(pyhelm: tuple[MagicMock, MagicMock]) -> None:
    _, client = pyhelm
    client.get_proceedable_revision.return_value = revision(
        2, description=description_for("kiali-server", "2.4.0", VALUES)
    )
    client.install_or_upgrade_release.return_value = revision(3)
    assert ensure_kiali(HelmClient(KUBECONFIG, HELM)).action == "upgraded"
    client.get_chart.assert_awaited_once_with("kiali-server", repo=REPO, version="2.5.0")


def test_failed_release_is_deployed_again(pyhelm: tuple[MagicMock, MagicMock]) -> None:
    _, client = pyhelm
    client.get_proceedable_revision.return_value = revision(
        2, status="failed", description=description_for("kiali-server", "2.5.0", VALUES)
    )
    client.install_or_upgrade_release.return_value = revision(3)
    assert ensure_kiali(HelmClient(KUBECONFIG, HELM)) == Result("upgraded", 3)


def test_release_touched_by_hand_is_compared_by_version_and_values(
    pyhelm: tuple[MagicMock, MagicMock],
) -> None:
    _, client = pyhelm
    # `helm rollback` wrote its own description: the observable state decides.
    same = revision(6, description="Rollback to 4", values=json.loads(json.dumps(VALUES)))
    client.get_proceedable_revision.return_value = same
    assert ensure_kiali(HelmClient(KUBECONFIG, HELM)) == Result("unchanged", 6)
    same.chart_metadata.assert_awaited_once()
    same.values.assert_awaited_once()
    client.install_or_upgrade_release.assert_not_awaited()

    other = revision(7, description="Upgrade complete", values={"auth": {"strategy": "token"}})
    client.get_proceedable_revision.return_value = other
    client.install_or_upgrade_release.return_value = revision(8)
    assert ensure_kiali(HelmClient(KUBECONFIG, HELM)) == Result("upgraded", 8)

    older = revision(9, description="Upgrade complete", chart=("kiali-server", "2.4.0"))
    client.get_proceedable_revision.return_value = older
    client.install_or_upgrade_release.return_value = revision(10)
    assert ensure_kiali(HelmClient(KUBECONFIG, HELM)) == Result("upgraded", 10)
    older.values.assert_not_awaited()


def test_local_chart_fingerprint_covers_its_files(
    pyhelm: tuple[MagicMock, MagicMock], tmp_path: Path
) -> None:
    _, client = pyhelm
    chart = tmp_path / "app-backend"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: app-backend\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text("kind: ConfigMap\n")
    hc = HelmClient(KUBECONFIG, HELM)

    def ensure() -> Result:
        return hc.ensure_release(
            "app-backend", chart, None, None, "istio", {"v1": {"replicas": 1}}, False
        )

    assert ensure().action == "installed"
    client.get_chart.assert_awaited_once_with(chart.resolve(), repo=None, version="0.1.0")
    kwargs = client.install_or_upgrade_release.await_args.kwargs
    assert kwargs["wait"] is False and kwargs["namespace"] == "istio"
    client.get_proceedable_revision.return_value = revision(1, description=kwargs["description"])
    assert ensure() == Result("unchanged", 1)
    # A template edited without a version bump still redeploys.
    (chart / "templates" / "cm.yaml").write_text("kind: ConfigMap\ndata: {a: b}\n")
    client.install_or_upgrade_release.return_value = revision(2)
    assert ensure() == Result("upgraded", 2)


def test_uninstall(pyhelm: tuple[MagicMock, MagicMock]) -> None:
    _, client = pyhelm
    HelmClient(KUBECONFIG, HELM).uninstall("kiali", "istio-system", wait=True, timeout=120)
    client.uninstall_release.assert_awaited_once_with(
        "kiali", namespace="istio-system", wait=True, timeout="120s"
    )
    HelmClient(KUBECONFIG, HELM, timeout=60).uninstall("gitea", "gitea", wait=False)
    assert client.uninstall_release.await_args_list[-1] == call(
        "gitea", namespace="gitea", wait=False, timeout="60s"
    )


def test_list_and_get_releases(pyhelm: tuple[MagicMock, MagicMock]) -> None:
    _, client = pyhelm
    client.list_release_definitions.return_value = [
        {
            "name": "istiod",
            "namespace": "istio-system",
            "revision": "3",
            "updated": "2025-01-02 03:04:05 +0000 UTC",
            "status": "deployed",
            "chart": "istiod-1.24.2",
            "app_version": "1.24.2",
        },
        {
            "name": "loadtester",
            "namespace": "test",
            "revision": "1",
            "status": "failed",
            "chart": "flagger-loadtester-0.34.0-rc.1",
            "app_version": "",
        },
    ]
    hc = HelmClient(KUBECONFIG, HELM)
    releases = hc.list_releases()
    client.list_release_definitions.assert_awaited_once_with(all=True, all_namespaces=True)
    assert releases[0] == ReleaseInfo(
        "istiod",
        "istio-system",
        3,
        "deployed",
        "istiod",
        "1.24.2",
        "1.24.2",
        "2025-01-02 03:04:05 +0000 UTC",
    )
    assert (releases[1].chart, releases[1].chart_version) == ("flagger-loadtester", "0.34.0-rc.1")
    assert releases[1].app_version is None

    client.get_current_revision.return_value = revision(4, description="kubelab x")
    info = hc.get_release("kiali", "istio-system")
    client.get_current_revision.assert_awaited_with("kiali", namespace="istio-system")
    assert info is not None
    assert (info.revision, info.status, info.chart, info.chart_version) == (
        4,
        "deployed",
        "kiali-server",
        "2.5.0",
    )
    client.get_current_revision.side_effect = pyhelm3.errors.ReleaseNotFoundError(
        1, b"", b"Error: release: not found\n"
    )
    assert hc.get_release("nope", "istio-system") is None


SECRET_VALUES = {
    "gitea": {"admin": {"username": "gitea-admin", "password": "Sup3r-S3cret-pw"}},
    "registry": {"token": "tok-abcdef123456"},
}


def test_helm_errors_name_the_release_and_hide_secrets(pyhelm: tuple[MagicMock, MagicMock]) -> None:
    _, client = pyhelm
    stderr = (
        b"coalesce.go:237: warning: skipped value\n"
        b"Error: UPGRADE FAILED: values don't meet the specifications of the schema(s): "
        b"gitea.admin.password: 'Sup3r-S3cret-pw' is too long; token tok-abcdef123456 "
        b"generated-pw-77\n"
    )
    client.install_or_upgrade_release.side_effect = pyhelm3.errors.FailedToRenderChartError(
        1, b"", stderr
    )
    hc = HelmClient(KUBECONFIG, HELM)
    with pytest.raises(SetupError) as info:
        hc.ensure_release(
            "gitea",
            "gitea",
            "https://dl.gitea.com/charts",
            "10.6.0",
            "gitea",
            SECRET_VALUES,
            secrets=["generated-pw-77"],
        )
    err = info.value
    text = " ".join([err.message, err.hint or "", *err.details])
    for secret in ("Sup3r-S3cret-pw", "tok-abcdef123456", "generated-pw-77"):
        assert secret not in text
    assert err.message == (
        "helm could not install release gitea (chart gitea 10.6.0) in namespace gitea: "
        "UPGRADE FAILED: values don't meet the specifications of the schema(s): "
        "gitea.admin.password: '***' is too long; token *** ***"
    )
    assert "dry-run" in (err.hint or "")
    assert err.__cause__ is None and err.__suppress_context__  # no raw helm output in tracebacks
    assert "gitea-admin" in helm.mask("user gitea-admin", helm.secret_strings(SECRET_VALUES))


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (pyhelm3.errors.ChartNotFoundError, "repository"),
        (pyhelm3.errors.ConnectionError, "cluster reachable"),
        (pyhelm3.errors.ResourceAlreadyExistsError, "outside helm"),
        (pyhelm3.errors.Error, "resumes"),
    ],
)
def test_error_hints(
    pyhelm: tuple[MagicMock, MagicMock], error: type[Exception], hint: str
) -> None:
    _, client = pyhelm
    client.get_chart.side_effect = error(1, b"", b"Error: something specific\n")
    with pytest.raises(
        SetupError, match=r"release kiali \(chart kiali-server 2\.5\.0\).*something specific"
    ) as info:
        ensure_kiali(HelmClient(KUBECONFIG, HELM))
    assert hint in (info.value.hint or "")


def test_helm_wait_timeout_is_a_kubelab_timeout(pyhelm: tuple[MagicMock, MagicMock]) -> None:
    _, client = pyhelm
    client.install_or_upgrade_release.side_effect = pyhelm3.errors.Error(
        1, b"", b"Error: UPGRADE FAILED: context deadline exceeded\n"
    )
    with pytest.raises(KubelabTimeout) as info:
        ensure_kiali(HelmClient(KUBECONFIG, HELM))
    assert str(info.value) == (
        "timed out waiting for helm to install release kiali (chart kiali-server 2.5.0) in "
        "namespace istio-system (300s): UPGRADE FAILED: context deadline exceeded. "
        "Try: kubelab status --verbose"
    )


def test_a_hung_helm_is_cancelled_after_timeout_plus_grace(
    pyhelm: tuple[MagicMock, MagicMock],
) -> None:
    _, client = pyhelm
    cancelled = asyncio.Event()

    async def hang(*args: Any, **kwargs: Any) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()  # pyhelm3 terminates the helm process here
            raise

    client.uninstall_release.side_effect = hang
    hc = HelmClient(KUBECONFIG, HELM, grace=0.05)
    with pytest.raises(KubelabTimeout, match="timed out waiting for helm to uninstall release x"):
        hc.uninstall("x", "ns", timeout=0.05)
    assert cancelled.is_set()


def test_works_when_called_from_inside_an_event_loop(pyhelm: tuple[MagicMock, MagicMock]) -> None:
    _, client = pyhelm

    async def caller() -> Result:
        return ensure_kiali(HelmClient(KUBECONFIG, HELM))

    assert asyncio.run(caller()) == Result("installed", 1)
    client.install_or_upgrade_release.assert_awaited_once()


def test_missing_helm_binary_is_a_setup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_helm(**kwargs: Any) -> None:
        raise AssertionError("Cannot find executable /nope/helm")

    monkeypatch.setattr(pyhelm3, "Client", no_helm)
    with pytest.raises(SetupError, match="cannot run helm at /nope/helm") as info:
        HelmClient(KUBECONFIG, Path("/nope/helm")).list_releases()
    assert "kubelab tools install" in (info.value.hint or "")


def test_fingerprint_and_masking_helpers(tmp_path: Path) -> None:
    fp = helm.fingerprint("c", REPO, "1.0.0", {"a": 1, "b": [1, 2]})
    assert fp == helm.fingerprint("c", REPO, "1.0.0", {"b": (1, 2), "a": 1})
    assert fp != helm.fingerprint("c", REPO, "1.0.1", {"a": 1, "b": [1, 2]})
    assert fp != helm.fingerprint("c", REPO, "1.0.0", {"a": 2, "b": [1, 2]})
    assert helm.description_fingerprint(f"kubelab kubelab-fingerprint={fp}") == fp
    assert helm.description_fingerprint("Upgrade complete") is None
    assert helm.split_chart("kiali-server-2.5.0") == ("kiali-server", "2.5.0")
    assert helm.split_chart("weird") == ("weird", None)
    assert helm.mask_values(SECRET_VALUES) == {
        "gitea": {"admin": {"username": "gitea-admin", "password": "***"}},
        "registry": {"token": "***"},
    }
    assert helm.mask_values({"auth": {"user": "u", "pass": "p"}, "keys": [1]}) == {
        "auth": {"user": "u", "pass": "***"},
        "keys": [1],
    }
    # Settings under a secret-sounding key are shown (the plan must show that Kiali is
    # anonymous); a value held by such a key itself is masked.
    kiali = {"auth": {"strategy": "anonymous"}, "deployment": {"view_only_mode": False}}
    assert helm.mask_values(kiali) == kiali
    assert helm.mask_values({"auth": "user:pw", "tls": {"key": "PEM"}}) == {
        "auth": "***",
        "tls": {"key": "***"},
    }
    assert helm.secret_strings(kiali) == set()
    assert helm.secret_strings({"apiKey": "ab", "privateKey": "-----BEGIN", "key": 12345}) == {
        "-----BEGIN",
        "12345",
    }
    assert (
        helm.mask("a secret and a secret-longer", {"secret", "secret-longer"}) == "a *** and a ***"
    )
