"""Every lesson on a real cluster: up, every exercise's checks -> solve -> checks, down.

Opt-in: set ``KUBELAB_E2E_KUBECONFIG`` to the kubeconfig of a disposable cluster. Skipped
otherwise, never faked: on a cluster nothing is skipped either, so Flagger's analysis (the
weights it moves, the metrics it reads from VictoriaMetrics, the load tester's webhooks,
the rollback) and Argo Rollouts' analyses (the load-test Job, the success-rate queries,
the VirtualService weights it moves) really run. How to run it on kind or on any cluster,
and what it costs: docs/testing.md, "End-to-end tests on a real cluster".

``KUBELAB_E2E_PROVIDER`` says how kubelab reaches the cluster: ``kind`` (the kind cluster
``kubelab`` that kubelab's kind provider made: gateway and Gitea NodePorts mapped to the
host, containerd mirror for Gitea's registry) or ``existing`` (any cluster; it needs a
LoadBalancer for the gateway, a default StorageClass and kube-proxy in iptables mode, so
the nodes pull from Gitea's NodePort as ``localhost:30300``). Default: ``kind`` when the
kubeconfig's current context is ``kind-kubelab``.

Every assertion reads the JSON kubelab prints (``e2e_harness``), and every test leaves the
cluster as it found it: a fixture runs ``kubelab down`` after it, passed or failed, then
checks with kubectl and helm that none of the lesson's objects and releases are left.
``down --all`` is never used: on kind it would delete the cluster.

flagger-canary starts a real Flagger analysis of about 4 minutes (30 s intervals) in each
exercise, so that run takes 30 to 40 minutes after the components are installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_harness import (
    Kubelab,
    follow_course,
    leftovers,
    lesson_test_problems,
    parse_json_file,
    removed_problems,
    second_up_problems,
    status_problems,
    tail,
    up_changes,
    up_drift,
    up_problems,
)
from e2e_harness import current_context as context_of
from e2e_harness import current_server as server_of
from e2e_harness import kubectl as run_kubectl

from kubelab.lessons.loader import find_lesson
from kubelab.tools import find_tool

KUBECONFIG = os.environ.get("KUBELAB_E2E_KUBECONFIG")
PROVIDERS = ("existing", "kind")
KIND_CLUSTER = "kubelab"  # kubelab/providers/kind.py DEFAULT_NAME

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not KUBECONFIG, reason="KUBELAB_E2E_KUBECONFIG is not set: no real cluster to test on"
    ),
]

# Seconds each command may take. Components (Istio, Kiali, Jaeger, VictoriaMetrics, Gitea,
# Flagger or Argo Rollouts) are installed from scratch by every test and removed after it.
UP = 2400
DOWN = 1200
# The cleanup after each test: `down`, then waiting for the lesson's objects to go.
CLEANUP = DOWN + 300

# (lesson, seconds the `kubelab test` run may take)
LESSONS = [
    ("istio-traffic-splitting", 3500),
    ("flagger-canary", 5300),
    ("argo-rollouts", 5300),
]
COURSE = "istio-traffic-splitting"


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    provider: str


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    """The cluster KUBELAB_E2E_KUBECONFIG names, proven to answer (a bad setting fails
    every test at once, with the fix, rather than timing out in each)."""
    assert KUBECONFIG is not None
    path = Path(KUBECONFIG).expanduser()
    if not path.is_file():
        pytest.fail(f"KUBELAB_E2E_KUBECONFIG={KUBECONFIG} is not a file", pytrace=False)
    default = "kind" if context_of(path) == f"kind-{KIND_CLUSTER}" else "existing"
    provider = os.environ.get("KUBELAB_E2E_PROVIDER") or default
    if provider not in PROVIDERS:
        pytest.fail(f"KUBELAB_E2E_PROVIDER={provider}: use one of {PROVIDERS}", pytrace=False)
    answer = run_kubectl(path, "version", "-o", "json", "--request-timeout", "20s")
    if answer.returncode != 0 or '"serverVersion"' not in answer.stdout:
        pytest.fail(
            f"the cluster of {path} does not answer: {tail(answer.stderr, 5)}", pytrace=False
        )
    if provider == "kind":
        _same_cluster_as_kind(path)
    return Cluster(path, provider)


def _same_cluster_as_kind(path: Path) -> None:
    """kubelab's kind provider talks to the kind cluster `kubelab` with the kubeconfig kind
    prints: it must be the cluster the tests were given (and this run must not make one)."""
    kind = find_tool("kind")
    if kind is None:
        pytest.fail("KUBELAB_E2E_PROVIDER=kind needs the kind CLI on PATH", pytrace=False)
    printed = subprocess.run(
        [str(kind), "get", "kubeconfig", "--name", KIND_CLUSTER],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if printed.returncode != 0:
        pytest.fail(
            f"there is no kind cluster {KIND_CLUSTER!r} ({tail(printed.stderr, 2)}): create "
            "it as docs/testing.md says",
            pytrace=False,
        )
    with tempfile.NamedTemporaryFile("w", suffix=".kubeconfig") as handle:
        handle.write(printed.stdout)
        handle.flush()
        theirs = server_of(Path(handle.name))
    if theirs != server_of(path):
        pytest.fail(
            f"KUBELAB_E2E_KUBECONFIG points at {server_of(path)}, the kind cluster "
            f"{KIND_CLUSTER!r} is at {theirs}: `kind get kubeconfig --name {KIND_CLUSTER}`",
            pytrace=False,
        )


@pytest.fixture
def lab(cluster: Cluster, _isolated_home: Path) -> Iterator[Kubelab]:
    """kubelab with a fresh home on the cluster; afterwards, whatever happened, `down` and
    a look at the cluster: nothing of the lessons this test brought up may be left."""
    env = {"KUBECONFIG": str(cluster.kubeconfig), "KUBELAB_HOME": str(_isolated_home)}
    kubelab = Kubelab(env, cluster.provider)
    yield kubelab
    problems = []
    down = kubelab.run("down", "-o", "json", timeout=DOWN)
    if down.returncode != 0:
        problems.append(f"kubelab down exited {down.returncode}: {tail(down.stderr, 20)}")
    for lesson in sorted(kubelab.lessons):
        plan = kubelab.plan(lesson)
        problems += [f"left on the cluster: {line}" for line in leftovers(cluster.kubeconfig, plan)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("lesson", "seconds"),
    [
        pytest.param(lesson, seconds, id=lesson, marks=pytest.mark.timeout(seconds + CLEANUP + 300))
        for lesson, seconds in LESSONS
    ],
)
def test_lesson_end_to_end(lab: Kubelab, tmp_path: Path, lesson: str, seconds: int) -> None:
    """`kubelab test`: every exercise fails before its solve script and passes after it."""
    exercises = [e.id for e in find_lesson(lesson).lesson.exercises]
    report_file = tmp_path / "report.json"
    proc = lab.run(
        "test",
        lesson,
        "--provider",
        lab.provider,
        "-o",
        "json",
        "--out",
        str(report_file),
        timeout=seconds,
    )
    report = parse_json_file(report_file, proc)
    problems = lesson_test_problems(report, exercises)  # on a cluster nothing is skipped
    assert not problems, "\n".join(problems)
    assert proc.returncode == 0, tail(proc.stdout + proc.stderr)
    # `kubelab test` takes its lesson down itself (the fixture then checks the cluster).
    assert lab.running() == []


@pytest.mark.timeout(2 * UP + CLEANUP + 600)
def test_second_up_changes_nothing(lab: Kubelab) -> None:
    """A second `up` reports every component unchanged and sends no write at all."""
    plan = lab.plan(COURSE)
    first = lab.up(COURSE, timeout=UP)
    problems = up_problems(first, COURSE, lab.provider, plan)
    assert not problems, "\n".join(problems)
    second = lab.up(COURSE, timeout=UP)
    problems = up_problems(second, COURSE, lab.provider, plan)
    problems += second_up_problems(first, second)
    problems += status_problems(lab.json("status"), COURSE, lab.provider)
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(UP + 3000 + CLEANUP + 600)
def test_student_follows_the_course(lab: Kubelab, cluster: Cluster) -> None:
    """The course as a student does it: exercise, check, the course's commands (the solve
    scripts), check again, progress; then `down` removes the lesson and its components."""
    plan = lab.plan(COURSE)
    up = lab.up(COURSE, timeout=UP)
    problems = up_problems(up, COURSE, lab.provider, plan)
    assert not problems, "\n".join(problems)
    problems = follow_course(lab, find_lesson(COURSE).lesson)
    assert not problems, "\n".join(problems)
    # Another `up` keeps the student's work (the weights at 0/100) and says so.
    again = lab.up(COURSE, timeout=UP)
    problems = [f"up after the course changed: {line}" for line in up_changes(again)]
    if not up_drift(again):
        problems.append("up after the course reports no drift of the student's VirtualService")
    assert not problems, "\n".join(problems)
    down = lab.json("down", COURSE, timeout=DOWN)
    problems = removed_problems(down, COURSE, plan)
    problems += [f"left on the cluster: {line}" for line in leftovers(cluster.kubeconfig, plan)]
    assert not problems, "\n".join(problems)
    assert lab.running() == []


@pytest.mark.timeout(UP + 1200 + CLEANUP + 600)
def test_a_class_runs_under_pod_security_baseline_and_students_are_apart(
    lab: Kubelab, cluster: Cluster, tmp_path: Path
) -> None:
    """Student namespaces enforce baseline, and the lesson still runs in them: its pods are
    admitted (Istio CNI: istio-validation, not istio-init) and Ready. A privileged pod is
    refused there, and one student's tester cannot call another student's app."""
    lab.up(COURSE, timeout=UP)
    roster = tmp_path / "roster.csv"
    roster.write_text("id,name,email\nana,Ana,ana@example.org\nbia,Bia,bia@example.org\n")
    created = lab.json(
        "class", "create", COURSE, "--roster", str(roster), "--out", str(tmp_path / "k"),
        timeout=1200,
    )  # fmt: skip
    namespaces = {s["id"]: s["namespace"] for s in created["students"]}
    try:
        for namespace in namespaces.values():
            shown = run_kubectl(cluster.kubeconfig, "get", "ns", namespace, "-o", "json")
            labels = json.loads(shown.stdout)["metadata"]["labels"]
            assert labels["pod-security.kubernetes.io/enforce"] == "baseline", labels
            waited = run_kubectl(
                cluster.kubeconfig, "wait", "pods", "--all", "-n", namespace,
                "--for=condition=Ready", "--timeout=600s", timeout=660,
            )  # fmt: skip
            assert waited.returncode == 0, waited.stderr
            pods = json.loads(
                run_kubectl(cluster.kubeconfig, "get", "pods", "-n", namespace, "-o", "json").stdout
            )["items"]
            assert len(pods) >= 3, namespace  # v1, v2, the tester
            for pod in pods:
                inits = [c["name"] for c in pod["spec"].get("initContainers") or []]
                assert "istio-init" not in inits and "istio-validation" in inits, inits
            refused = run_kubectl(
                cluster.kubeconfig, "run", "psa-probe", "-n", namespace, "--image=busybox",
                "--restart=Never", "--dry-run=server", "--overrides",
                json.dumps({"spec": {"containers": [{"name": "psa-probe", "image": "busybox",
                                                      "securityContext": {"privileged": True}}]}}),
            )  # fmt: skip
            assert refused.returncode != 0, refused.stdout
            assert "violates PodSecurity" in refused.stderr, refused.stderr

        def status_from(source: str, target: str) -> str:
            url = f"http://app-backend.{target}.svc.cluster.local/"
            proc = run_kubectl(
                cluster.kubeconfig, "exec", "-n", source, "curl-test", "-c", "curl-test", "--",
                "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", url,
            )  # fmt: skip
            return proc.stdout.strip()

        ana, bia = namespaces["ana"], namespaces["bia"]
        assert status_from(ana, ana) == "200"
        # bia's namespace admits only itself and the mesh's own: its AuthorizationPolicy
        # answers 403 (RBAC: access denied), or, where the cluster's CNI enforces the
        # NetworkPolicy, the connection never opens (curl's 000).
        assert status_from(ana, bia) in ("403", "000")
        assert status_from(bia, ana) in ("403", "000")
    finally:
        deleted = lab.run("class", "delete", COURSE, timeout=600)
        assert deleted.returncode == 0, tail(deleted.stderr)
