"""Find the external programs kubelab drives (helm, kubectl, kind, docker, ...).

PATH first, then the folders ``scripts/install-tools.sh`` fills (``.tools/bin`` of a
checkout, or ``$KUBELAB_TOOLS_DIR``), so a fresh clone works after that script alone.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kubelab import paths
from kubelab.errors import SetupError

INSTALL_HINTS = {
    "helm": "Run `kubelab tools install` (pinned, checksum-verified), or install it: "
    "https://helm.sh/docs/intro/install/",
    "kubectl": "Run `kubelab tools install` (pinned, checksum-verified), or install it: "
    "https://kubernetes.io/docs/tasks/tools/",
    "kind": "Install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
    "docker": "Install Docker Engine (https://docs.docker.com/engine/install/) and start it.",
    "ansible-playbook": "pip install ansible-core ansible-runner (in kubelab's environment)",
    "ssh": "Install an OpenSSH client (Debian/Ubuntu: apt-get install openssh-client).",
}


def find_tool(name: str) -> Path | None:
    """Absolute path of ``name`` or None when it is nowhere kubelab looks."""
    found = shutil.which(name)
    if found:
        return Path(found)
    for folder in paths.tools_dirs():
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_tool(name: str) -> Path:
    """Like :func:`find_tool` but a missing tool is a :class:`SetupError` with the fix."""
    path = find_tool(name)
    if path is None:
        raise SetupError(
            f"{name} not found on PATH or in kubelab's tools folders", hint=INSTALL_HINTS.get(name)
        )
    return path
