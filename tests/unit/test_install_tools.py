"""scripts/install-tools.sh without network: fake helm/kubectl on PATH, a temp tools dir."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install-tools.sh"

# Commands the script may call; linked into a private bin dir so a test controls what exists.
BASE_COMMANDS = (
    "bash", "cat", "chmod", "cp", "dirname", "head", "ln", "mkdir", "mktemp", "mv", "readlink",
    "rm", "tail", "tar", "uname", "gzip", "sh", "env",
)  # fmt: skip

FAKE_TOOL = """#!/bin/sh
# fake {name}: answers the version commands the script uses
echo "fake-{name} $*"
"""


def make_bin(path: Path, *, fakes: tuple[str, ...] = ()) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in BASE_COMMANDS:
        found = shutil.which(name)
        if found:
            (path / name).symlink_to(found)
    for name in fakes:
        tool = path / name
        tool.write_text(FAKE_TOOL.format(name=name))
        tool.chmod(0o755)
    return path


def run(
    tools_dir: Path, bin_dir: Path, path: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    full_env = {
        "PATH": path or str(bin_dir),
        "HOME": str(tools_dir.parent),
        "TMPDIR": str(tools_dir.parent),
        "KUBELAB_TOOLS_DIR": str(tools_dir),
        **env,
    }
    return subprocess.run(
        [str(bin_dir / "bash"), str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
        check=False,
    )


def test_links_tools_found_on_path_and_is_idempotent(tmp_path: Path) -> None:
    bin_dir = make_bin(tmp_path / "bin", fakes=("helm", "kubectl"))
    tools = tmp_path / "tools"
    first = run(tools, bin_dir)
    assert first.returncode == 0, first.stderr
    for name in ("helm", "kubectl"):
        assert (tools / name).is_symlink()
        assert os.readlink(tools / name) == str(bin_dir / name)
        assert f"{name}: linked" in first.stdout
    second = run(tools, bin_dir)
    assert second.returncode == 0, second.stderr
    assert "helm: ok" in second.stdout and "kubectl: ok" in second.stdout
    assert "download" not in second.stdout


def test_does_not_link_the_tools_dir_to_itself(tmp_path: Path) -> None:
    """PATH containing the tools dir (with a dangling link) must not produce a self-link."""
    bin_dir = make_bin(tmp_path / "bin", fakes=("helm", "kubectl"))
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "helm").symlink_to(tmp_path / "gone" / "helm")  # broken
    result = run(tools, bin_dir, path=f"{tools}:{bin_dir}")
    assert result.returncode == 0, result.stderr
    assert "broken" in result.stdout
    assert os.readlink(tools / "helm") == str(bin_dir / "helm")


def test_existing_working_binary_is_kept_even_when_forced(tmp_path: Path) -> None:
    bin_dir = make_bin(tmp_path / "bin")
    tools = tmp_path / "tools"
    make_bin(tmp_path / "fakes", fakes=("helm", "kubectl"))
    tools.mkdir()
    for name in ("helm", "kubectl"):
        shutil.copy(tmp_path / "fakes" / name, tools / name)
    result = run(tools, bin_dir, KUBELAB_FORCE_NPM_TOOLS="1")
    assert result.returncode == 0, result.stderr
    assert "helm: ok" in result.stdout and "kubectl: ok" in result.stdout


def test_clear_error_without_tools_npm_or_curl(tmp_path: Path) -> None:
    bin_dir = make_bin(tmp_path / "bin")
    result = run(tmp_path / "tools", bin_dir)
    assert result.returncode == 1
    assert "helm is not on PATH and npm (or curl) is not available" in result.stderr
    assert "apt-get install npm" in result.stderr
    assert not list(tmp_path.glob("kubelab-tools.*"))


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_clean() -> None:
    result = subprocess.run(
        ["shellcheck", str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout
