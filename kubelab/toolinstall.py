"""``kubelab tools install``: pinned helm and kubectl release binaries, checked by SHA-256.

For users who installed kubelab as a package (``pipx install kubelab``) and have no
checkout with ``scripts/install-tools.sh``. Each tool is downloaded from its upstream
release URL, its digest compared with the one pinned here, and the binary put into
kubelab's own tools folder (:func:`kubelab.paths.user_tools_dir`), which
:func:`kubelab.tools.find_tool` searches after PATH. A re-run with the same pins
downloads nothing.

Where the pinned digests come from (the upstream release pages could not be reached
from the machine that wrote this; both sources record the upstream ``.sha256`` files):

* helm 3.17.3: ``helm/private/versions.bzl`` of abrisco/rules_helm (commit 04d3076), the
  SHA-256 of ``get.helm.sh/helm-v3.17.3-linux-<arch>.tar.gz``;
* kubectl 1.35.1: ``roles/kubespray_defaults/vars/main/checksums.yml`` of
  kubernetes-sigs/kubespray (commit 005bdce), the SHA-256 of
  ``dl.k8s.io/release/v1.35.1/bin/linux/<arch>/kubectl``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kubelab.errors import SetupError

#: Environment variable naming a mirror that serves the same paths as the upstream hosts.
MIRROR_ENV = "KUBELAB_TOOLS_MIRROR"
RECORD = "tools.json"


@dataclass(frozen=True)
class Pin:
    """One tool's release: where its file is, its digest, and how to get the binary out."""

    tool: str
    version: str
    url: str  # upstream URL; a mirror replaces everything before ``path``
    path: str  # the URL's path, kept on a mirror
    sha256: str
    member: str | None = None  # the binary's path inside a .tar.gz (None: the file itself)


def _pins(arch: str) -> dict[str, Pin]:
    helm_sha = {
        "amd64": "ee88b3c851ae6466a3de507f7be73fe94d54cbf2987cbaa3d1a3832ea331f2cd",
        "arm64": "7944e3defd386c76fd92d9e6fec5c2d65a323f6fadc19bfb5e704e3eee10348e",
    }
    kubectl_sha = {
        "amd64": "36e2f4ac66259232341dd7866952d64a958846470f6a9a6a813b9117bd965207",
        "arm64": "706256e21a4e9192ee62d1a007ac0bfcff2b0b26e92cc7baad487a6a5d08ff82",
    }
    helm_path = f"/helm-v3.17.3-linux-{arch}.tar.gz"
    kubectl_path = f"/release/v1.35.1/bin/linux/{arch}/kubectl"
    return {
        "helm": Pin(
            "helm",
            "3.17.3",
            f"https://get.helm.sh{helm_path}",
            helm_path,
            helm_sha[arch],
            member=f"linux-{arch}/helm",
        ),
        "kubectl": Pin(
            "kubectl",
            "1.35.1",
            f"https://dl.k8s.io{kubectl_path}",
            kubectl_path,
            kubectl_sha[arch],
        ),
    }


def pins_here() -> dict[str, Pin]:
    """The pins for this machine (Linux on amd64 or arm64)."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    if platform.system() != "Linux" or arch is None:
        raise SetupError(
            f"kubelab tools install has pinned binaries for Linux on amd64 and arm64, not "
            f"{platform.system()} on {platform.machine()}",
            hint="Install helm (https://helm.sh/docs/intro/install/) and kubectl "
            "(https://kubernetes.io/docs/tasks/tools/) yourself and put them on PATH.",
        )
    return _pins(arch)


def _download(url: str, timeout: float) -> bytes:
    import requests

    try:
        response = requests.get(url, timeout=timeout)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise SetupError(
            f"could not download {url}: {exc}",
            hint=f"Check the network (or set {MIRROR_ENV} to a mirror of it), then run "
            "kubelab tools install again.",
        ) from exc
    return response.content


def _write_executable(folder: Path, name: str, data: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o755)
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return folder / name


def _binary(pin: Pin, data: bytes) -> bytes:
    if pin.member is None:
        return data
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            member = archive.extractfile(pin.member)
            if member is None:
                raise KeyError(pin.member)
            return member.read()
    except (tarfile.TarError, KeyError) as exc:
        raise SetupError(
            f"{pin.url} has no {pin.member} ({exc})",
            hint="The download matched its pinned digest, so this is a kubelab bug: report it.",
        ) from exc


def install(
    folder: Path,
    pins: Mapping[str, Pin],
    *,
    mirror: str | None = None,
    timeout: float = 120.0,
    report: Callable[[str], None] = lambda _: None,
) -> dict[str, str]:
    """Install every pinned tool into ``folder``; returns tool -> what was done."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o755)
    record_path = folder / RECORD
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    done: dict[str, str] = {}
    for name, pin in pins.items():
        if record.get(name) == pin.sha256 and (folder / name).is_file():
            done[name] = f"{name} {pin.version} already installed"
            report(done[name])
            continue
        url = mirror.rstrip("/") + pin.path if mirror else pin.url
        report(f"downloading {name} {pin.version} from {url}")
        data = _download(url, timeout)
        digest = hashlib.sha256(data).hexdigest()
        if digest != pin.sha256:
            raise SetupError(
                f"{url} has SHA-256 {digest}, not the pinned {pin.sha256}: not installed",
                hint="The file is not the release kubelab pins (a broken mirror or download); "
                "nothing was changed.",
            )
        _write_executable(folder, name, _binary(pin, data))
        record[name] = pin.sha256
        record_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        done[name] = f"{name} {pin.version} installed in {folder}"
        report(done[name])
    return done
