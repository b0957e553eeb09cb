"""``kubelab charts pull`` with the real helm against chart repositories served over HTTP on
127.0.0.1 by this test.

Each repository of the catalog that istio-traffic-splitting needs gets a stand-in: small
charts at the catalog's exact names and versions, packaged with ``helm package`` and
indexed with ``helm repo index`` (relative URLs, as many real repositories have). The
catalog's repository URLs are pointed at them for the test. The server records every
request, so the test sees that a second pull makes none, and what a failing repository
answers. The server is stopped by the fixture (also when a test fails).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kubelab.cli.main import run
from kubelab.components import catalog
from kubelab.components.localcharts import INDEX_FILE, LocalCharts, lesson_releases
from kubelab.tools import find_tool

HELM = find_tool("helm")
LESSON = "istio-traffic-splitting"
COMPONENTS = ["istio", "victoria-metrics", "kiali", "jaeger", "gitea"]

pytestmark = [
    pytest.mark.skipif(HELM is None, reason="helm missing: scripts/install-tools.sh"),
    pytest.mark.timeout(120),
]


class ChartRepos:
    """Static chart repositories under one HTTP server on 127.0.0.1, requests recorded."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        repos = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:
                repos.requests.append(self.path)
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, repo: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{repo}/"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def helm(*args: str, cwd: Path | None = None) -> str:
    assert HELM is not None
    done = subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def write_chart(folder: Path, name: str, version: str) -> Path:
    chart = folder / name
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        f"apiVersion: v2\nname: {name}\nversion: {version}\ndescription: stand-in of {name}\n"
    )
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-standin\n"
        "data:\n  chart: {{ .Chart.Name }}-{{ .Chart.Version }}\n"
    )
    return chart


def repo_key(url: str) -> str:
    """A folder name per real repository (``https://kiali.org/helm-charts`` -> kiali-org...)."""
    return url.split("://", 1)[1].strip("/").replace("/", "-").replace(".", "-")


@pytest.fixture(autouse=True)
def helm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # helm's repository cache and config: the test's own, not the developer's.
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def repos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ChartRepos]:
    """One stand-in repository per real one, holding the lesson's pinned charts; the
    catalog points at them while the test runs."""
    root = tmp_path / "served"
    sources = tmp_path / "chart-sources"
    for release in lesson_releases(COMPONENTS):
        repo_dir = root / repo_key(release.repo)
        repo_dir.mkdir(parents=True, exist_ok=True)
        chart = write_chart(sources / repo_key(release.repo), release.chart, release.version)
        helm("package", str(chart), "--destination", str(repo_dir))
    for repo_dir in root.iterdir():
        helm("repo", "index", str(repo_dir))  # urls relative to the repository
    server = ChartRepos(root)
    for name in COMPONENTS:
        component = catalog.CATALOG[name]
        moved = tuple(
            dataclasses.replace(r, repo=server.url(repo_key(r.repo))) for r in component.releases
        )
        monkeypatch.setitem(catalog.CATALOG, name, dataclasses.replace(component, releases=moved))
    try:
        yield server
    finally:
        server.stop()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pull_then_rerun_downloads_nothing(
    repos: ChartRepos, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "class-charts"
    assert run(["charts", "pull", str(folder), LESSON]) == 0
    captured = capsys.readouterr()
    releases = lesson_releases(COMPONENTS)
    assert f"8 charts in {folder}: 8 downloaded, 0 already there" in captured.out
    for release in releases:
        assert f"✓ {release.name}: pulled {release.chart}-{release.version}.tgz" in captured.err

    # Byte for byte what the repositories serve, and the index says so.
    index = json.loads((folder / INDEX_FILE).read_text())
    by_release = {c["release"]: c for c in index["charts"]}
    assert sorted(by_release) == sorted(r.name for r in releases)
    for release in releases:
        entry = by_release[release.name]
        served = repos.root / repo_key(catalog.RELEASES[release.name].repo) / entry["file"]
        assert entry["file"] == f"{release.chart}-{release.version}.tgz"
        assert entry["sha256"] == sha256(folder / entry["file"]) == sha256(served)
        assert (entry["chart"], entry["version"], entry["repo"]) == (
            release.chart,
            release.version,
            release.repo,
        )
    # helm asked each repository for its index and each archive once.
    archives = [p for p in repos.requests if p.endswith(".tgz")]
    assert sorted(a.rsplit("/", 1)[1] for a in archives) == sorted(
        f"{r.chart}-{r.version}.tgz" for r in releases
    )
    assert sorted(os.listdir(folder)) == sorted(
        [INDEX_FILE, *(e["file"] for e in by_release.values())]
    )
    assert LocalCharts(folder).archives(releases) == {
        r.name: folder / f"{r.chart}-{r.version}.tgz" for r in releases
    }

    # Again: nothing is downloaded, the repositories are not even asked.
    repos.requests.clear()
    assert run(["-o", "json", "charts", "pull", str(folder), LESSON]) == 0
    data = json.loads(capsys.readouterr().out)
    assert repos.requests == []
    assert (data["pulled"], data["present"]) == (0, 8)
    assert {c["action"] for c in data["charts"]} == {"present"}


def test_a_chart_the_repository_lacks_names_chart_repo_and_fix(
    repos: ChartRepos, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    # Jaeger's pin moves to a version its repository does not have.
    jaeger = catalog.CATALOG["jaeger"]
    bumped = dataclasses.replace(jaeger.releases[0], version="9.9.9")
    monkeypatch.setitem(catalog.CATALOG, "jaeger", dataclasses.replace(jaeger, releases=(bumped,)))
    folder = tmp_path / "charts"
    assert run(["charts", "pull", str(folder), LESSON]) == 4
    err = capsys.readouterr().err
    assert "✗ jaeger: could not download jaeger 9.9.9" in err
    assert (
        f'error: could not download chart jaeger 9.9.9 from {bumped.repo}: chart "jaeger" '
        f'version "9.9.9" not found in {bumped.repo} repository'
    ) in err
    assert f"hint: {bumped.repo} has no chart jaeger at version 9.9.9" in err
    # The six others were kept: a re-run fetches only jaeger (and fails the same way).
    index = json.loads((folder / INDEX_FILE).read_text())
    assert len(index["charts"]) == 7 and "jaeger" not in {c["release"] for c in index["charts"]}


def test_an_unreachable_repository_is_named_with_what_to_do(
    repos: ChartRepos, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repos.stop()  # every repository is gone: connection refused
    folder = tmp_path / "charts"
    assert run(["charts", "pull", str(folder), LESSON]) == 4
    err = capsys.readouterr().err
    assert f"error: could not download 8 of 8 charts into {folder}" in err
    gitea = catalog.CATALOG["gitea"].releases[0]
    assert f"  gitea: could not download chart gitea 12.7.0 from {gitea.repo}: " in err
    assert "connection refused" in err
    assert (
        f"hint: Check that this machine reaches {catalog.CATALOG['istio'].releases[0].repo}" in err
    )
    assert "run the same command again" in err
    assert not (folder / INDEX_FILE).exists()
    assert [p.name for p in folder.iterdir()] == []  # no staging folder is left
