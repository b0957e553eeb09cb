"""``kubelab tools install`` against a release server on 127.0.0.1: the files are checked by
SHA-256 before anything is installed, a re-run downloads nothing, a wrong file is refused."""

from __future__ import annotations

import functools
import hashlib
import io
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kubelab import toolinstall
from kubelab.errors import SetupError
from kubelab.toolinstall import Pin

HELM = b"#!/bin/sh\necho 'v3.17.3+gtest'\n"
KUBECTL = b"#!/bin/sh\necho 'Client Version: v1.35.1-test'\n"


@functools.cache
def _helm_archive() -> bytes:
    """A release-shaped archive, built once: gzip stamps the time it wrote the file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("linux-amd64/helm")
        info.size = len(HELM)
        info.mode = 0o755
        archive.addfile(info, io.BytesIO(HELM))
    return buffer.getvalue()


class Releases:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[str] = []


@pytest.fixture
def server() -> Iterator[tuple[str, Releases]]:
    releases = Releases({})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            releases.requests.append(self.path)
            body = releases.files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", releases
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _test_pins(base: str) -> dict[str, Pin]:
    archive = _helm_archive()
    return {
        "helm": Pin(
            "helm",
            "3.17.3",
            f"{base}/helm.tar.gz",
            "/helm.tar.gz",
            hashlib.sha256(archive).hexdigest(),
            member="linux-amd64/helm",
        ),
        "kubectl": Pin(
            "kubectl", "1.35.1", f"{base}/kubectl", "/kubectl", hashlib.sha256(KUBECTL).hexdigest()
        ),
    }


def test_installs_checked_binaries_and_a_rerun_downloads_nothing(server, tmp_path):
    base, releases = server
    releases.files = {"/helm.tar.gz": _helm_archive(), "/kubectl": KUBECTL}
    folder = tmp_path / "bin"
    done = toolinstall.install(folder, _test_pins(base))
    assert done == {
        "helm": f"helm 3.17.3 installed in {folder}",
        "kubectl": f"kubectl 1.35.1 installed in {folder}",
    }
    assert subprocess.run([folder / "helm"], capture_output=True, text=True).stdout.strip() == (
        "v3.17.3+gtest"
    )
    assert (folder / "kubectl").stat().st_mode & 0o777 == 0o755
    assert len(releases.requests) == 2
    again = toolinstall.install(folder, _test_pins(base))
    assert again["helm"] == "helm 3.17.3 already installed"
    assert len(releases.requests) == 2  # nothing downloaded


def test_a_file_that_is_not_the_pinned_release_is_refused(server, tmp_path):
    base, releases = server
    # The real pins, through a "mirror" that serves something else under their paths.
    pins = toolinstall._pins("amd64")
    releases.files = {pin.path: b"not helm" for pin in pins.values()}
    folder = tmp_path / "bin"
    with pytest.raises(SetupError, match="not the pinned ee88b3c851ae") as info:
        toolinstall.install(folder, pins, mirror=base)
    assert "nothing was changed" in (info.value.hint or "")
    assert not (folder / "helm").exists() and not (folder / "kubectl").exists()
    assert releases.requests == ["/helm-v3.17.3-linux-amd64.tar.gz"]


def test_an_unreachable_server_says_what_to_do(tmp_path):
    pins = {"kubectl": Pin("kubectl", "1", "http://127.0.0.1:9/kubectl", "/kubectl", "0" * 64)}
    with pytest.raises(SetupError, match="could not download") as info:
        toolinstall.install(tmp_path / "bin", pins, timeout=5)
    assert toolinstall.MIRROR_ENV in (info.value.hint or "")


def test_the_cli_refuses_a_tampered_mirror(server, tmp_path):
    """The command as a user runs it, with the real pins; KUBELAB_TOOLS_MIRROR points at
    the local server, which serves other files under the pinned paths."""
    base, releases = server
    pins = toolinstall._pins("amd64")
    releases.files = {pin.path: b"tampered" for pin in pins.values()}
    env = {
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "KUBELAB_HOME": str(tmp_path / "home"),
        toolinstall.MIRROR_ENV: base,
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.run(
        [sys.executable, "-c", "from kubelab.cli.main import run; run()", "tools", "install"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode != 0
    assert "not the pinned" in proc.stderr and "Traceback" not in proc.stderr
    assert not (Path(tmp_path / "data" / "kubelab" / "bin" / "helm")).exists()


def test_kubelab_finds_what_it_installed(server, tmp_path, monkeypatch):
    from kubelab import paths
    from kubelab.tools import find_tool

    base, releases = server
    releases.files = {"/helm.tar.gz": _helm_archive(), "/kubectl": KUBECTL}
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("KUBELAB_TOOLS_DIR", raising=False)
    # As installed from a wheel: no checkout, so no .tools/bin beside the package.
    monkeypatch.setattr(paths, "_PACKAGE_DIR", tmp_path / "site-packages" / "kubelab")
    toolinstall.install(paths.user_tools_dir(), _test_pins(base))
    assert find_tool("helm") == tmp_path / "data" / "kubelab" / "bin" / "helm"
    assert find_tool("kubectl") == tmp_path / "data" / "kubelab" / "bin" / "kubectl"
