"""Where kubelab finds its data (lessons, charts) and keeps its own files.

From a source checkout the ``labs/`` and ``charts/`` folders beside the package are used;
an installed wheel carries them under ``kubelab/_data``. User files (state, kubeconfigs,
keys) live under ``$KUBELAB_HOME`` or the XDG state directory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_root() -> Path:
    """Folder holding ``labs/`` and ``charts/`` (source checkout first, then the wheel)."""
    checkout = _PACKAGE_DIR.parent
    if (checkout / "labs").is_dir() and (checkout / "charts").is_dir():
        return checkout
    return _PACKAGE_DIR / "_data"


def labs_dir() -> Path:
    """Folder of the built-in lessons, overridable with ``KUBELAB_LABS_DIR``."""
    override = os.environ.get("KUBELAB_LABS_DIR")
    return Path(override) if override else data_root() / "labs"


def charts_dir() -> Path:
    return data_root() / "charts"


def home_path() -> Path:
    """Where kubelab's own folder is (``$KUBELAB_HOME``), without creating it."""
    override = os.environ.get("KUBELAB_HOME")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "kubelab"


def home_dir() -> Path:
    """kubelab's own folder for state and secrets (created 0700 on first use)."""
    path = home_path()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def user_tools_dir() -> Path:
    """Where ``kubelab tools install`` puts helm and kubectl (the XDG data directory)."""
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "kubelab" / "bin"


def tools_dirs() -> list[Path]:
    """Extra folders searched for helm/kubectl after PATH: ``$KUBELAB_TOOLS_DIR``, the
    checkout's ``.tools/bin`` (``scripts/install-tools.sh``), ``kubelab tools install``'s."""
    dirs = []
    override = os.environ.get("KUBELAB_TOOLS_DIR")
    if override:
        dirs.append(Path(override))
    dirs.append(_PACKAGE_DIR.parent / ".tools" / "bin")
    dirs.append(user_tools_dir())
    # Tools installed with kubelab itself (ansible-playbook, envoy) live beside the
    # interpreter, which is not on PATH when .venv/bin/kubelab runs unactivated.
    dirs.append(Path(sys.executable).parent)
    return dirs


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600 (folder 0700): for files holding
    secrets (kubeconfigs, keys, tokens), which must never be readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)  # an existing temp file keeps its mode through O_CREAT
    os.replace(tmp, path)
