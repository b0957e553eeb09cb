"""Running an exercise's solve script against the lesson's cluster.

The script gets ``KUBECONFIG`` (the lesson's cluster), ``KUBELAB_NAMESPACE``,
``KUBELAB_LESSON`` and ``KUBELAB_EXERCISE``, and a PATH where kubelab's tools
(``.tools/bin``) come after the user's own. It never gets the Hetzner token; in the
sandbox and on kind it gets only the basics of the caller's environment
(``kubelab.childenv``). On other clusters it keeps the rest, Google's credentials
included: kubectl may run the kubeconfig's token helper (a GKE cluster's needs them).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass

from kubelab import childenv, paths
from kubelab.errors import KubelabTimeout
from kubelab.lessons.loader import LoadedLesson
from kubelab.lessons.model import Exercise
from kubelab.state import LessonRecord

SOLVE_TIMEOUT = 600.0
# Clusters on this machine: their kubeconfigs need no cloud credentials at all.
LOCAL_PROVIDERS = ("sandbox", "kind")


@dataclass(frozen=True)
class SolveResult:
    returncode: int
    output: str
    seconds: float


def solve_env(loaded: LoadedLesson, exercise: Exercise, record: LessonRecord) -> dict[str, str]:
    if record.provider in LOCAL_PROVIDERS:
        env = childenv.for_sandbox()
    else:
        env = childenv.without_credentials(keep=childenv.GOOGLE)
    if record.details.get("kubeconfig"):
        env["KUBECONFIG"] = str(record.details["kubeconfig"])
    env["KUBELAB_NAMESPACE"] = str(record.details.get("namespace") or "")
    env["KUBELAB_LESSON"] = loaded.lesson.id
    env["KUBELAB_EXERCISE"] = exercise.id
    extra = os.pathsep.join(str(d) for d in paths.tools_dirs() if d.is_dir())
    if extra:
        env["PATH"] = f"{env.get('PATH', '')}{os.pathsep}{extra}"
    if not env["KUBELAB_NAMESPACE"]:
        del env["KUBELAB_NAMESPACE"]
    return env


def run_solve(
    loaded: LoadedLesson,
    exercise: Exercise,
    record: LessonRecord,
    capture: bool = True,
    timeout: float = SOLVE_TIMEOUT,
) -> SolveResult:
    script = loaded.folder / exercise.solve
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [str(script)],
            cwd=loaded.folder,
            env=solve_env(loaded, exercise, record),
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.STDOUT if capture else None,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise KubelabTimeout(
            f"solve script of {exercise.id} did not finish in {timeout:.0f}s",
            hint=f"Run it by hand to see where it waits: {script}",
        ) from None
    return SolveResult(proc.returncode, proc.stdout or "", round(time.monotonic() - started, 2))
