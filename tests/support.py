"""Helpers the tests import: the repository root, ../shared, and the real CLI in a
subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 60):
    """Run the real ``kubelab`` console entry point in a subprocess."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", "from kubelab.cli.main import run; run()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def course_patch(v1: int, v2: int) -> list[str]:
    """The course's weight change (``kubectl patch ... --type=json``), as kubectl args."""
    return [
        "patch",
        "virtualservice",
        "app-backend",
        "-n",
        "istio",
        "--type=json",
        f'-p=[{{"op":"replace","path":"/spec/http/0/route/0/weight","value":{v1}}},'
        f'{{"op":"replace","path":"/spec/http/0/route/1/weight","value":{v2}}}]',
    ]


def lesson_block(
    lesson: str, exercise_id: str, containing: str, lang: str = "en", offline: bool = False
) -> str:
    """The bash block of an exercise's printed text that contains ``containing`` (the text
    of its offline path, as the sandbox prints it, with ``offline``)."""
    import re

    from kubelab.lessons.loader import find_lesson

    found = find_lesson(lesson).lesson
    exercise = (found.offline_variant() if offline else found).exercise(exercise_id)
    assert exercise is not None, exercise_id
    text = exercise.instructions.get(lang)  # type: ignore[arg-type]
    (block,) = [b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if containing in b]
    return block.strip()


def run_bash(script: str, kubeconfig: Path | str, timeout: float = 120):
    """Run ``script`` with bash as a student pastes it: KUBECONFIG set, kubectl on PATH."""
    from kubelab.tools import find_tool

    kubectl = find_tool("kubectl")
    assert kubectl is not None, "kubectl missing: scripts/install-tools.sh"
    return subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PATH": f"{kubectl.parent}:{os.environ['PATH']}",
        },
    )


class SandboxHome:
    """A kubelab home of a test module's own, with the CLI and kubectl pointed at it.
    ``env`` is added to every kubelab command's environment; what each printed is kept in
    ``outputs``."""

    def __init__(self, prefix: str, env: dict[str, str] | None = None) -> None:
        import tempfile

        self.home = Path(tempfile.mkdtemp(prefix=prefix))
        self.env = {"KUBELAB_HOME": str(self.home), **(env or {})}
        self.kubeconfig = self.home / "sandbox" / "kubeconfig"
        self.outputs: list[str] = []

    def kubelab(self, *args: str, timeout: float = 180):
        proc = run_cli(*args, env=self.env, timeout=timeout)
        self.outputs.append(proc.stdout + proc.stderr)
        return proc

    def kubectl(self, *args: str) -> str:
        from kubelab.tools import find_tool

        proc = subprocess.run(
            [str(find_tool("kubectl")), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout


def lesson_sandbox(lab: SandboxHome, lesson: str = "istio-traffic-splitting") -> Any:
    """The one fixture of the tests that run a lesson in the sandbox: module-scoped and
    autouse, `kubelab up <lesson> --provider sandbox` in ``lab``'s home before the module's
    first test, `kubelab down` after its last. It yields the output of `up`."""
    import pytest

    @pytest.fixture(scope="module", autouse=True)
    def lesson_up() -> Iterator[str]:
        proc = lab.kubelab("up", lesson, "--provider", "sandbox")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield proc.stdout
        lab.kubelab("down")

    return lesson_up


class FakeTime:
    """A clock that moves only when slept on: retry policies run in microseconds."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def offline_class_tools(
    tmp_path: Path, registry: str | None = None, available: set[str] | None = None
) -> Any:
    """A class service's tools whose cluster is never reached: rendering a student's
    objects and the class's policy needs none."""
    from kubelab.checks.registry import CheckContext
    from kubelab.classroom.service import ClassTools
    from kubelab.cluster.kube import Kube

    kube = Kube(tmp_path / "no-cluster.kubeconfig")
    return ClassTools(
        kube=kube,
        admin_kubeconfig={},
        admin_context=None,
        admin_folder=None,
        registry=registry,
        pull_token=lambda: ("unused", "unused"),
        context=lambda: CheckContext(kube, sampler=lambda spec: None),  # type: ignore[arg-type,return-value]
        available=available or {"istio"},
    )


class ProportionalMesh:
    """A sampler for traffic checks without a mesh: answers sampled requests by the
    VirtualService's weights, exactly in proportion, from versions that have a Ready pod;
    no VirtualService, or no Ready pod of a version, answers 503."""

    def __init__(self, kube: Any) -> None:
        self.kube = kube

    def sample(self, dest: Any, count: int, timeout: float, concurrency: int) -> list[Any]:
        from kubelab.checks.mesh import ISTIO_API, route_weights
        from kubelab.checks.sampling import Sample

        vs = self.kube.get(ISTIO_API, "VirtualService", dest.service, dest.namespace)
        if vs is None:
            return [Sample(None, 503, False)] * count
        pods = self.kube.list("v1", "Pod", dest.namespace, f"app={dest.service}")
        running = {
            p["metadata"]["labels"].get("version")
            for p in pods
            if any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (p.get("status") or {}).get("conditions") or []
            )
        }
        samples: list[Any] = []
        for version, weight in route_weights(vs)[0].items():
            answer = Sample(version, 200, False) if version in running else Sample(None, 503, False)
            samples += [answer] * round(count * weight / 100)
        return (samples + [Sample(None, 503, False)] * count)[:count]

    def hanging_versions(self, dest: Any, versions: Any, timeout: float) -> set[str]:
        return set()


def send_json(handler: Any, status: int, body: str) -> None:
    """Answer an http.server request with ``body`` as JSON (tests' stand-in servers)."""
    data = body.encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
