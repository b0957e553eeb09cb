"""The local chart source at its boundaries: ``helm pull`` through pyhelm3's ``Command``
(exact arguments), the archive handed to pyhelm3 instead of the repository (exact calls,
same fingerprint), the folder and its index (``pull_charts`` with a fake puller that
records each call), the checks ``kubelab up --charts`` makes, the deploy nodes, the
runner's recorded choice and the ``kubelab charts pull`` command."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pyhelm3
import pyhelm3.command
import pyhelm3.errors
import pytest

from kubelab.cli.main import run
from kubelab.cluster import helm
from kubelab.cluster.helm import HelmClient, Result
from kubelab.components import catalog, localcharts
from kubelab.components.catalog import Release
from kubelab.components.deploy import component_nodes, component_plan, components_for
from kubelab.components.localcharts import (
    INDEX_FILE,
    IndexEntry,
    LocalCharts,
    lesson_releases,
    pull_charts,
    read_index,
)
from kubelab.components.values import InstallSettings, values_for
from kubelab.errors import KubelabTimeout, SetupError

HELM = Path("/opt/helm/bin/helm")
KUBECONFIG = Path("/tmp/kubelab-test/kubeconfig")
REPO = "https://charts.example.org/stable"


def package(folder: Path, name: str, version: str, *, extra: bytes = b"") -> Path:
    """A packaged chart as `helm package` lays it out: <name>/Chart.yaml in a .tgz."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}.tgz"
    files = {
        f"{name}/Chart.yaml": f"apiVersion: v2\nname: {name}\nversion: {version}\n".encode(),
        f"{name}/templates/cm.yaml": b"kind: ConfigMap\n" + extra,
    }
    with tarfile.open(path, "w:gz") as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def release(name: str, chart: str, version: str = "1.0.0", repo: str = REPO) -> Release:
    return Release(name, chart, repo, version, "ns")


A = release("alpha", "alpha-chart")
B = release("beta", "beta-chart", "v2.0.0")


class FakePuller:
    """What `helm pull` does, recorded: writes the pinned archive into the staging folder."""

    def __init__(self, fail: dict[str, str] | None = None, serve: dict[str, str] | None = None):
        self.calls: list[tuple[str, Path]] = []
        self.fail = fail or {}
        self.serve = serve or {}  # release -> another version to serve

    def __call__(self, rel: Release, staging: Path) -> Path:
        assert staging.is_dir() and not any(staging.iterdir())
        self.calls.append((rel.name, staging))
        if rel.name in self.fail:
            raise SetupError(self.fail[rel.name], hint="reach the repo")
        return package(staging, rel.chart, self.serve.get(rel.name, rel.version))


# -- helm pull through pyhelm3 -----------------------------------------------------------------


@pytest.fixture
def command(monkeypatch: pytest.MonkeyPatch) -> tuple[MagicMock, MagicMock]:
    """(the Command class mock, its instance); run() saves an archive like helm pull."""
    instance = MagicMock(name="Command()")

    async def pull(args: list[Any]) -> bytes:
        destination = Path(args[args.index("--destination") + 1])
        package(destination, args[1], args[args.index("--version") + 1])
        return b""

    instance.run = AsyncMock(side_effect=pull)
    cls = MagicMock(name="pyhelm3.command.Command", return_value=instance)
    monkeypatch.setattr(pyhelm3.command, "Command", cls)
    return cls, instance


@pytest.fixture
def helm_bin(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "helm"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\nexit 99\n")  # never run: Command is mocked
    return path


def test_pull_chart_runs_helm_pull_with_the_exact_pin(
    command: tuple[MagicMock, MagicMock], helm_bin: Path, tmp_path: Path
) -> None:
    cls, instance = command
    archive = helm.pull_chart(helm_bin, "istiod", REPO, "1.30.3", tmp_path / "staging")
    cls.assert_called_once_with(executable=str(helm_bin))
    instance.run.assert_awaited_once_with(
        [
            "pull",
            "istiod",
            "--repo",
            REPO,
            "--version",
            "1.30.3",
            "--destination",
            tmp_path / "staging",
        ]
    )
    assert archive == tmp_path / "staging" / "istiod-1.30.3.tgz"
    assert helm.packaged_chart_metadata(archive)["version"] == "1.30.3"


@pytest.mark.parametrize(
    ("error", "stderr", "hint"),
    [
        (
            pyhelm3.errors.ChartNotFoundError,
            b'Error: chart "istiod" version "1.30.3" not found in https://charts.example.org/'
            b"stable repository\n",
            "has no chart istiod at version 1.30.3",
        ),
        (
            pyhelm3.errors.Error,
            b'Error: looks like "https://charts.example.org/stable" is not a valid chart '
            b"repository or cannot be reached: dial tcp: lookup charts.example.org: no such host\n",
            f"Check that this machine reaches {REPO}",
        ),
    ],
)
def test_a_failed_pull_names_chart_version_and_repo(
    command: tuple[MagicMock, MagicMock],
    helm_bin: Path,
    tmp_path: Path,
    error: type[Exception],
    stderr: bytes,
    hint: str,
) -> None:
    _, instance = command
    instance.run.side_effect = error(1, b"", stderr)
    with pytest.raises(SetupError) as info:
        helm.pull_chart(helm_bin, "istiod", REPO, "1.30.3", tmp_path)
    last = stderr.decode().strip().removeprefix("Error: ")
    assert info.value.message == f"could not download chart istiod 1.30.3 from {REPO}: {last}"
    assert hint in (info.value.hint or "")
    assert info.value.__cause__ is None


def test_a_hung_pull_is_a_timeout(
    command: tuple[MagicMock, MagicMock], helm_bin: Path, tmp_path: Path
) -> None:
    _, instance = command

    async def hang(args: list[Any]) -> bytes:
        await asyncio.sleep(30)
        return b""

    instance.run.side_effect = hang
    with pytest.raises(
        KubelabTimeout, match=f"timed out downloading chart istiod 1.30.3 from {REPO}"
    ):
        helm.pull_chart(helm_bin, "istiod", REPO, "1.30.3", tmp_path, timeout=0.05)


def test_pull_without_helm_is_a_setup_error(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="cannot run helm at /nope/helm"):
        helm.pull_chart(Path("/nope/helm"), "istiod", REPO, "1.30.3", tmp_path)


def test_packaged_chart_metadata_refuses_what_is_not_a_chart(tmp_path: Path) -> None:
    bad = tmp_path / "x.tgz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(SetupError, match=r"x\.tgz is not a packaged Helm chart"):
        helm.packaged_chart_metadata(bad)
    empty = tmp_path / "empty.tgz"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(SetupError, match=r"it has no <chart>/Chart\.yaml"):
        helm.packaged_chart_metadata(empty)


# -- installing an archive -------------------------------------------------------------------


@pytest.fixture
def pyhelm(monkeypatch: pytest.MonkeyPatch) -> MagicMock:
    client = MagicMock(name="pyhelm3.Client()")
    client.get_proceedable_revision = AsyncMock(return_value=None)
    client.get_chart = AsyncMock(return_value=SimpleNamespace(name="resolved-chart"))
    client.install_or_upgrade_release = AsyncMock(
        return_value=SimpleNamespace(revision=1, status=pyhelm3.ReleaseRevisionStatus("deployed"))
    )
    monkeypatch.setattr(pyhelm3, "Client", MagicMock(return_value=client))
    return client


def test_an_archive_is_installed_instead_of_the_repo_with_the_same_fingerprint(
    pyhelm: MagicMock, tmp_path: Path
) -> None:
    archive = package(tmp_path, "kiali-server", "2.29.0")
    values = {"auth": {"strategy": "anonymous"}}
    hc = HelmClient(KUBECONFIG, HELM)

    def ensure(**kwargs: Any) -> Result:
        return hc.ensure_release(
            "kiali", "kiali-server", REPO, "2.29.0", "istio-system", values, True, 300, **kwargs
        )

    assert ensure(archive=archive) == Result("installed", 1)
    pyhelm.get_chart.assert_awaited_once_with(archive.resolve(), repo=None, version="2.29.0")
    description = pyhelm.install_or_upgrade_release.await_args.kwargs["description"]
    from_repo = helm.fingerprint("kiali-server", REPO, "2.29.0", values)
    assert description == f"kubelab {helm.FINGERPRINT_KEY}={from_repo}"
    # Installed from the archive, asked again from the archive or from the repository: the
    # same pinned chart, so nothing to do.
    pyhelm.get_proceedable_revision.return_value = SimpleNamespace(
        revision=1, status=pyhelm3.ReleaseRevisionStatus("deployed"), description=description
    )
    assert ensure(archive=archive) == Result("unchanged", 1)
    assert ensure() == Result("unchanged", 1)
    assert pyhelm.get_chart.await_count == 1
    assert pyhelm.install_or_upgrade_release.await_count == 1


def test_a_packaged_chart_given_as_the_chart_is_named_from_its_chart_yaml(
    pyhelm: MagicMock, tmp_path: Path
) -> None:
    archive = package(tmp_path, "app-backend", "0.1.0")
    HelmClient(KUBECONFIG, HELM).ensure_release("app", archive, None, None, "ns", {})
    pyhelm.get_chart.assert_awaited_once_with(archive.resolve(), repo=None, version="0.1.0")
    digest = helm.fingerprint("app-backend", None, "0.1.0", {}, helm.chart_digest(archive))
    description = pyhelm.install_or_upgrade_release.await_args.kwargs["description"]
    assert description == f"kubelab {helm.FINGERPRINT_KEY}={digest}"


# -- the folder and its index ----------------------------------------------------------------


def test_pull_fills_the_folder_and_the_index_then_a_rerun_downloads_nothing(
    tmp_path: Path,
) -> None:
    puller = FakePuller()
    events: list[tuple[str, str]] = []
    results = pull_charts(tmp_path, [A, B], puller, lambda r, s, d: events.append((r.name, s)))
    assert [(r.release.name, r.action) for r in results] == [
        ("alpha", "pulled"),
        ("beta", "pulled"),
    ]
    assert [name for name, _ in puller.calls] == ["alpha", "beta"]
    assert all(staging.parent == tmp_path for _, staging in puller.calls)
    assert events == [
        ("alpha", "pulling"),
        ("alpha", "pulled"),
        ("beta", "pulling"),
        ("beta", "pulled"),
    ]
    data = json.loads((tmp_path / INDEX_FILE).read_text())
    assert data["format"] == 1
    assert data["charts"] == [
        {
            "release": "alpha",
            "chart": "alpha-chart",
            "version": "1.0.0",
            "repo": REPO,
            "file": "alpha-chart-1.0.0.tgz",
            "sha256": localcharts.sha256_file(tmp_path / "alpha-chart-1.0.0.tgz"),
        },
        {
            "release": "beta",
            "chart": "beta-chart",
            "version": "v2.0.0",
            "repo": REPO,
            "file": "beta-chart-v2.0.0.tgz",
            "sha256": localcharts.sha256_file(tmp_path / "beta-chart-v2.0.0.tgz"),
        },
    ]
    # No staging folder is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "alpha-chart-1.0.0.tgz",
        "beta-chart-v2.0.0.tgz",
        INDEX_FILE,
    ]

    again = FakePuller()
    results = pull_charts(tmp_path, [A, B], again)
    assert again.calls == []
    assert [r.action for r in results] == ["present", "present"]
    assert results[0].to_json()["file"] == "alpha-chart-1.0.0.tgz"


def test_a_changed_archive_or_a_new_pin_is_downloaded_again(tmp_path: Path) -> None:
    pull_charts(tmp_path, [A, B], FakePuller())
    package(tmp_path, "alpha-chart", "1.0.0", extra=b"edited by hand\n")
    bumped = release("beta", "beta-chart", "v2.1.0")
    puller = FakePuller()
    results = pull_charts(tmp_path, [A, bumped], puller)
    assert [name for name, _ in puller.calls] == ["alpha", "beta"]
    assert [r.action for r in results] == ["replaced", "replaced"]
    assert "differs from" in results[0].note
    assert "kubelab pins beta-chart v2.1.0" in results[1].note
    index = read_index(tmp_path)
    assert index["beta"].version == "v2.1.0" and index["beta"].file == "beta-chart-v2.1.0.tgz"
    # The archive of the old pin went with its index entry.
    assert sorted(p.name for p in tmp_path.glob("*.tgz")) == [
        "alpha-chart-1.0.0.tgz",
        "beta-chart-v2.1.0.tgz",
    ]
    assert (
        LocalCharts(tmp_path).archives([A, bumped])["alpha"] == tmp_path / "alpha-chart-1.0.0.tgz"
    )


def test_one_failed_chart_keeps_the_others_and_names_the_chart(tmp_path: Path) -> None:
    message = f"could not download chart beta-chart v2.0.0 from {REPO}: no such host"
    with pytest.raises(SetupError) as info:
        pull_charts(tmp_path, [A, B], FakePuller(fail={"beta": message}))
    assert info.value.message == message
    assert info.value.hint == "reach the repo"
    assert list(read_index(tmp_path)) == ["alpha"]
    # The re-run downloads only what failed.
    puller = FakePuller()
    results = pull_charts(tmp_path, [A, B], puller)
    assert [name for name, _ in puller.calls] == ["beta"]
    assert [r.action for r in results] == ["present", "pulled"]


def test_several_failures_are_reported_together(tmp_path: Path) -> None:
    other = release("gamma", "gamma-chart", repo="https://other.example.org")
    puller = FakePuller(fail={"beta": "beta failed", "gamma": "gamma failed"})
    with pytest.raises(SetupError) as info:
        pull_charts(tmp_path, [A, B, other], puller)
    err = info.value
    assert err.message == f"could not download 2 of 3 charts into {tmp_path}"
    assert err.details == ["beta: beta failed", "gamma: gamma failed"]
    assert f"reaches {REPO}, https://other.example.org" in (err.hint or "")
    assert f"the 1 charts already in {tmp_path} are kept" in (err.hint or "")


def test_a_repository_serving_another_version_saves_nothing(tmp_path: Path) -> None:
    with pytest.raises(SetupError) as info:
        pull_charts(tmp_path, [A], FakePuller(serve={"alpha": "9.9.9"}))
    assert info.value.message == (
        f"{REPO} served chart alpha-chart 9.9.9 when asked for alpha-chart 1.0.0 (release alpha)"
    )
    assert not (tmp_path / INDEX_FILE).exists()
    assert list(tmp_path.iterdir()) == []


def test_an_unreadable_index_is_rewritten(tmp_path: Path) -> None:
    pull_charts(tmp_path, [A], FakePuller())
    (tmp_path / INDEX_FILE).write_text("{not json")
    with pytest.raises(SetupError, match=r"charts\.json is not a kubelab chart index"):
        LocalCharts(tmp_path).archives([A])
    results = pull_charts(tmp_path, [A], FakePuller())
    assert [r.action for r in results] == ["replaced"]
    assert LocalCharts(tmp_path).archives([A]) == {"alpha": tmp_path / "alpha-chart-1.0.0.tgz"}


# -- what `up --charts` checks -------------------------------------------------------------------

HINT = "kubelab charts pull /srv/charts istio-traffic-splitting"


def test_archives_of_a_complete_folder(tmp_path: Path) -> None:
    pull_charts(tmp_path, [A, B], FakePuller())
    assert LocalCharts(tmp_path, HINT).archives([A, B]) == {
        "alpha": tmp_path / "alpha-chart-1.0.0.tgz",
        "beta": tmp_path / "beta-chart-v2.0.0.tgz",
    }


def test_a_folder_without_index_says_how_to_fill_it(tmp_path: Path) -> None:
    with pytest.raises(SetupError) as info:
        LocalCharts(tmp_path, HINT).archives([A])
    assert info.value.message == (
        f"{tmp_path / INDEX_FILE} is missing: {tmp_path} is not a chart folder made by "
        "`kubelab charts pull`"
    )
    assert info.value.hint is not None and info.value.hint.startswith(f"Run `{HINT}`")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (
            "unlisted",
            "{dir}/beta-chart-v2.0.0.tgz: chart beta-chart v2.0.0 (release beta) is not in "
            "charts.json",
        ),
        (
            "deleted",
            "{dir}/beta-chart-v2.0.0.tgz: missing (chart beta-chart v2.0.0 (release beta), "
            "listed in charts.json)",
        ),
        (
            "other-version",
            "{dir}/beta-chart-v1.9.0.tgz: charts.json has chart beta-chart v1.9.0 from "
            f"{REPO} for release beta; kubelab pins beta-chart v2.0.0 from {REPO}",
        ),
        ("edited", "{dir}/beta-chart-v2.0.0.tgz: sha256 "),
        (
            "wrong-chart",
            "{dir}/beta-chart-v2.0.0.tgz: holds chart impostor v2.0.0, not beta-chart v2.0.0",
        ),
    ],
)
def test_a_chart_that_is_not_exactly_the_pin_is_refused_by_file(
    tmp_path: Path, damage: str, expected: str
) -> None:
    pull_charts(tmp_path, [A, B], FakePuller())
    index = read_index(tmp_path)
    archive = tmp_path / "beta-chart-v2.0.0.tgz"
    if damage == "unlisted":
        del index["beta"]
    elif damage == "deleted":
        archive.unlink()
    elif damage == "other-version":
        old = package(tmp_path, "beta-chart", "v1.9.0")
        index["beta"] = IndexEntry(
            "beta", "beta-chart", "v1.9.0", REPO, old.name, localcharts.sha256_file(old)
        )
    elif damage == "edited":
        package(tmp_path, "beta-chart", "v2.0.0", extra=b"# edited\n")
    elif damage == "wrong-chart":
        staged = package(tmp_path / "x", "impostor", "v2.0.0")
        staged.replace(archive)
        index["beta"] = IndexEntry(
            "beta", "beta-chart", "v2.0.0", REPO, archive.name, localcharts.sha256_file(archive)
        )
    localcharts.write_index(tmp_path, index)
    with pytest.raises(SetupError) as info:
        LocalCharts(tmp_path, HINT).archives([A, B])
    assert info.value.message.startswith(expected.format(dir=tmp_path))
    assert info.value.hint == (
        f"Run `{HINT}` where the chart repositories are reachable: it downloads what is "
        "missing or different and keeps the rest."
    )


def test_every_unusable_chart_is_listed(tmp_path: Path) -> None:
    (tmp_path / INDEX_FILE).write_text(json.dumps({"format": 1, "charts": []}))
    with pytest.raises(SetupError) as info:
        LocalCharts(tmp_path, HINT).archives([A, B])
    assert info.value.message == f"2 of 2 charts are not usable in {tmp_path}"
    assert [d.split(": ", 1)[0] for d in info.value.details] == [
        str(tmp_path / "alpha-chart-1.0.0.tgz"),
        str(tmp_path / "beta-chart-v2.0.0.tgz"),
    ]


def test_lesson_releases_and_the_pull_command() -> None:
    names = [
        r.name for r in lesson_releases(["istio", "victoria-metrics", "kiali", "jaeger", "gitea"])
    ]
    assert names == [
        "istio-base",
        "istio-cni",
        "istiod",
        catalog.GATEWAY_RELEASE,
        "victoria-metrics",
        "kiali",
        "jaeger",
        "gitea",
    ]
    assert [r.name for r in lesson_releases(["kiali"])][:3] == ["istio-base", "istio-cni", "istiod"]
    assert lesson_releases(["gitea", "gitea"], tls=True)[-1].name == "cert-manager"
    assert localcharts.pull_command(Path("/d"), ["a", "b"], tls=True) == (
        "kubelab charts pull /d a b --tls"
    )


# -- the deploy nodes --------------------------------------------------------------------------


def test_component_nodes_install_each_release_from_its_archive() -> None:
    settings = InstallSettings(gateway_service_type="NodePort")
    components = components_for(["istio"], settings)
    archives = {
        r.name: Path(f"/srv/charts/{r.chart}-{r.version}.tgz")
        for c in components
        for r in c.releases
    }
    helm_client = MagicMock(name="HelmClient")
    helm_client.ensure_release.return_value = Result("installed", 1)
    nodes = {
        n.name: n for n in component_nodes(components, settings, helm_client, MagicMock(), archives)
    }
    assert nodes["istiod"].run() == "installed"
    rel = catalog.RELEASES["istiod"]
    helm_client.ensure_release.assert_called_once_with(
        "istiod",
        "istiod",
        repo=catalog.ISTIO_REPO,
        version=catalog.ISTIO_VERSION,
        namespace=catalog.ISTIO_NAMESPACE,
        values=values_for(rel, settings),
        wait=True,
        timeout=600,
        secrets=(),
        archive=Path("/srv/charts/istiod-1.30.3.tgz"),
    )
    plan = component_plan(["istio"], settings, archives)
    assert [p["source"] for p in plan] == [str(archives[p["release"]]) for p in plan]
    assert [p["source"] for p in component_plan(["istio"], settings)] == [catalog.ISTIO_REPO] * 4


# -- kubelab charts pull -------------------------------------------------------------------------


@pytest.fixture
def cli_pull(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str, str]]:
    """``kubelab charts pull`` with helm's pull replaced; returns the calls made."""
    calls: list[tuple[str, str, str, str]] = []

    def pull_chart(
        helm_bin: Path, chart: str, repo: str, version: str, destination: Path, **kw: Any
    ) -> Path:
        calls.append((str(helm_bin), chart, repo, version))
        return package(destination, chart, version)

    monkeypatch.setattr(helm, "pull_chart", pull_chart)
    monkeypatch.setattr("kubelab.tools.require_tool", lambda name: HELM)
    return calls


def test_charts_pull_command(
    cli_pull: list[tuple[str, str, str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "charts"
    assert run(["charts", "pull", str(folder), "istio-traffic-splitting"]) == 0
    wanted = lesson_releases(["istio", "victoria-metrics", "kiali", "jaeger", "gitea"])
    assert cli_pull == [(str(HELM), r.chart, r.repo, r.version) for r in wanted]
    captured = capsys.readouterr()
    assert "istiod: pulling istiod 1.30.3 from https://istio-release.storage" in captured.err
    assert "✓ gitea: pulled gitea-12.7.0.tgz" in captured.err
    assert f"8 charts in {folder}: 8 downloaded, 0 already there" in captured.out
    assert f"kubelab up LESSON --charts {folder}" in captured.out

    assert run(["charts", "pull", str(folder), "istio-traffic-splitting"]) == 0
    captured = capsys.readouterr()
    assert len(cli_pull) == 8  # nothing downloaded again
    assert f"All 8 charts are already in {folder}: nothing downloaded." in captured.out
    assert "✓ kiali: kiali-server-2.29.0.tgz already here" in captured.err

    # Every lesson by default, in JSON: the flagger and argo charts are added to the folder.
    assert run(["-o", "json", "charts", "pull", str(folder)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    data = json.loads(captured.out)
    assert data["directory"] == str(folder) and data["index"] == str(folder / INDEX_FILE)
    assert sorted(data["lessons"]) == ["argo-rollouts", "flagger-canary", "istio-traffic-splitting"]
    by_release = {c["release"]: c for c in data["charts"]}
    assert {n for n, c in by_release.items() if c["action"] == "pulled"} == {
        "argo-rollouts",
        "flagger",
        catalog.LOADTESTER_RELEASE,
    }
    assert data["pulled"] == 3 and data["present"] == 8
    assert by_release["gitea"]["sha256"] == localcharts.sha256_file(folder / "gitea-12.7.0.tgz")


def test_charts_pull_failure_is_exit_4_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def unreachable(helm_bin: Path, chart: str, repo: str, version: str, *a: Any, **k: Any) -> Path:
        raise SetupError(f"could not download chart {chart} {version} from {repo}: no such host")

    monkeypatch.setattr(helm, "pull_chart", unreachable)
    monkeypatch.setattr("kubelab.tools.require_tool", lambda name: HELM)
    assert run(["charts", "pull", str(tmp_path), "argo-rollouts", "--tls"]) == 4
    err = capsys.readouterr().err
    assert "✗ argo-rollouts: could not download argo-rollouts 2.41.0" in err
    assert f"error: could not download 9 of 9 charts into {tmp_path}" in err
    assert (
        "  cert-manager: could not download chart cert-manager v1.21.1 from "
        f"{catalog.CERT_MANAGER_REPO}" in err
    )
    assert "hint: Check that this machine reaches" in err


def test_charts_pull_refuses_a_file_and_an_unknown_lesson(
    cli_pull: list[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "f"
    afile.write_text("")
    assert run(["charts", "pull", str(afile)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert run(["charts", "pull", str(tmp_path), "no-such-lesson"]) == 2
    assert "no lesson 'no-such-lesson'" in capsys.readouterr().err
    assert cli_pull == []


# -- the runner: `up --charts DIR`, recorded for later runs ------------------------------------

LESSON_COMPONENTS = ["istio", "victoria-metrics", "kiali", "jaeger", "gitea"]


def _folder_for_lesson(folder: Path) -> Path:
    pull_charts(folder, lesson_releases(LESSON_COMPONENTS), FakePuller())
    return folder


class ComponentsRig:
    """A LessonRunner whose provider, HelmClient and Kube are mocks at their boundary."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from kubelab.providers.base import ClusterFacts, ClusterInfo, RegistryAccess

        self.helm = MagicMock(name="HelmClient")
        self.helm.ensure_release.return_value = Result("installed", 1)
        self.kube = MagicMock(name="Kube")
        self.kube.get.return_value = None  # no gitea admin Secret, no gateway Service yet
        self.kube.mutations = 0
        self.provider = MagicMock(name="provider", installs_components=True)
        self.provider.name = "existing"
        self.provider.ensure_cluster.return_value = ClusterInfo(
            Path("/tmp/kubelab-test/kubeconfig")
        )
        self.provider.facts.return_value = ClusterFacts(
            registry=RegistryAccess(), gateway_service_type="NodePort"
        )
        monkeypatch.setattr("kubelab.lessons.runner.LessonRunner.helm", lambda runner: self.helm)
        self.reports: list[tuple[str, str]] = []

    def components(self, options: dict[str, Any] | None = None) -> Any:
        from kubelab.lessons.loader import find_lesson
        from kubelab.lessons.runner import LessonRunner
        from kubelab.state import StateStore

        runner = LessonRunner(
            find_lesson("istio-traffic-splitting"),
            self.provider,
            StateStore(),
            lambda step, message: self.reports.append((step, message)),
            options=options,
        )
        runner.step_cluster()
        runner._kube = self.kube
        runner.step_components()
        return runner

    def archives_installed(self) -> dict[str, Any]:
        return {c.args[0]: c.kwargs["archive"] for c in self.helm.ensure_release.call_args_list}


def test_up_with_charts_installs_every_release_from_its_archive_and_records_the_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from kubelab.state import StateStore

    folder = _folder_for_lesson(tmp_path / "charts")
    rig = ComponentsRig(monkeypatch)
    rig.components({"charts": str(tmp_path / "charts" / ".." / "charts")})
    releases = lesson_releases(LESSON_COMPONENTS)
    settings = InstallSettings(gateway_service_type="NodePort")
    istiod = catalog.RELEASES["istiod"]
    rig.helm.ensure_release.assert_any_call(
        "istiod",
        "istiod",
        repo=istiod.repo,
        version=istiod.version,
        namespace=istiod.namespace,
        values=values_for(istiod, settings),
        wait=True,
        timeout=600,
        secrets=(),
        archive=folder / "istiod-1.30.3.tgz",
    )
    assert rig.archives_installed() == {
        r.name: folder / f"{r.chart}-{r.version}.tgz" for r in releases
    }
    record = StateStore().load().lesson("istio-traffic-splitting")
    assert record.details["charts"] == str(folder)  # resolved, no ".."
    helm_records = {r.name: r.details for r in record.resources if r.kind == "HelmRelease"}
    assert helm_records["gitea"]["archive"] == str(folder / "gitea-12.7.0.tgz")
    assert rig.reports[-1][1].endswith(f"from the local charts in {folder}")

    # A re-run without --charts (Ctrl-C, resume) uses the recorded folder.
    rig.helm.ensure_release.reset_mock()
    rig.components()
    assert rig.archives_installed() == {
        r.name: folder / f"{r.chart}-{r.version}.tgz" for r in releases
    }


def test_up_without_charts_installs_from_the_repositories(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = ComponentsRig(monkeypatch)
    rig.components()
    assert set(rig.archives_installed().values()) == {None}
    assert "local charts" not in rig.reports[-1][1]


def test_up_with_an_incomplete_folder_installs_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder = _folder_for_lesson(tmp_path / "charts")
    (folder / "jaeger-4.11.1.tgz").unlink()
    rig = ComponentsRig(monkeypatch)
    with pytest.raises(SetupError) as info:
        rig.components({"charts": str(folder)})
    assert info.value.message == (
        f"{folder}/jaeger-4.11.1.tgz: missing (chart jaeger 4.11.1 (release jaeger), listed "
        "in charts.json)"
    )
    assert f"`kubelab charts pull {folder} istio-traffic-splitting`" in (info.value.hint or "")
    rig.helm.ensure_release.assert_not_called()
    rig.kube.apply.assert_not_called()


def test_dry_run_with_charts_names_each_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder_for_lesson(tmp_path / "charts")
    args = ["up", "istio-traffic-splitting", "--provider", "existing", "--dry-run"]
    assert run([*args, "--charts", str(folder), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"components: install with Helm from the chart archives in {folder}" in out
    assert (
        "- istio (istio-system): base-1.30.3.tgz, cni-1.30.3.tgz, istiod-1.30.3.tgz, "
        "gateway-1.30.3.tgz"
    ) in out
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert {c["release"]: c["source"] for c in plan["components"]}["kiali"] == str(
        folder / "kiali-server-2.29.0.tgz"
    )
    assert run(["-o", "json", *args, "--charts", str(folder)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["source"] for c in data["components"]] == [
        str(folder / f"{r.chart}-{r.version}.tgz") for r in lesson_releases(LESSON_COMPONENTS)
    ]
    # The same check as `up`: a folder that would fail the install fails the plan.
    (folder / INDEX_FILE).unlink()
    assert run([*args, "--charts", str(folder)]) == 4
    assert f"{folder / INDEX_FILE} is missing" in capsys.readouterr().err


def test_charts_with_the_sandbox_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["up", "istio-traffic-splitting", "--provider", "sandbox", "--charts", "x"]) == 2
    assert "--charts is for providers that install components" in capsys.readouterr().err
