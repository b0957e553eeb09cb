"""The traffic-splitting lesson, end to end in the sandbox, through the real CLI.

One sandbox serves the whole module (`kubelab up`: a detached daemon, API, Envoy, app
processes): the course's own kubectl commands, the checks, student-mangled states. Each
test puts the lesson in the state it needs first (weights, a fresh or a hung v1), so any
test runs alone or in any order. `kubelab down` is tested on a sandbox of its own, after
which no process it started may be left.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from support import SandboxHome, course_patch, lesson_block, lesson_sandbox, run_bash

from kubelab.tools import find_tool

pytestmark = [
    pytest.mark.skipif(find_tool("helm") is None, reason="helm missing: scripts/install-tools.sh"),
    pytest.mark.skipif(
        find_tool("kubectl") is None, reason="kubectl missing: scripts/install-tools.sh"
    ),
    pytest.mark.timeout(300),
]

# Every credential kubelab reads, marked: none of them may reach the sandbox's processes,
# a pod's `kubectl exec ... env`, kubelab's files or its output.
MARKS = {
    "HCLOUD_TOKEN": "mark-hcloud-7f3a9c",
    "GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/mark-google-2b8e1d.json",
    "CLOUDSDK_CONFIG": "/nonexistent/mark-gcloud-5c0d4e",
}
# Without Prometheus, as on a machine that has none: the metrics exercise is unavailable.
LAB = SandboxHome("kubelab-sandbox-test-", env={**MARKS, "KUBELAB_PROMETHEUS": ""})
SHARED_HOME = LAB.home
OUTPUTS = LAB.outputs  # what every kubelab command of this module printed
LESSON = "istio-traffic-splitting"
kubelab = LAB.kubelab
lesson_up = lesson_sandbox(LAB, LESSON)


def _marked(text: str) -> list[str]:
    return [name for name, value in MARKS.items() if value in text]


def kubectl(kubeconfig: str, *args: str, check: bool = True):
    proc = subprocess.run(
        [str(find_tool("kubectl")), "--kubeconfig", kubeconfig, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def check_json(exercise: str):
    proc = kubelab("check", exercise, "--output", "json")
    data = json.loads(proc.stdout)
    return proc.returncode, data, {c["id"]: c for c in data["checks"]}


def pids_alive(pids):
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z":
            continue
        alive.append(pid)
    return alive


@pytest.fixture(scope="module")
def sandbox(lesson_up: str) -> dict:
    assert "Kiali's and Jaeger's web UIs and Gitea are not part of it" in lesson_up
    return json.loads(kubelab("status", "--output", "json").stdout)


def set_weights(sandbox, v1: int, v2: int) -> None:
    """The course's patch to v1/v2; Envoy applies a VirtualService change within a second."""
    kubectl(sandbox["kubeconfig"], *course_patch(v1, v2))
    time.sleep(1.0)


def fresh_v1(sandbox) -> None:
    """A new v1 pod: its request pool is full again (it hangs after 30 requests to /)."""
    kubectl(sandbox["kubeconfig"], "rollout", "restart", "deployment/app-backend-v1", "-n", "istio")
    kubectl(
        sandbox["kubeconfig"],
        "rollout",
        "status",
        "deployment/app-backend-v1",
        "-n",
        "istio",
        "--timeout=60s",
    )


def hung_v1(sandbox) -> None:
    """v1 hung, as the student's own requests leave it: 35 requests to / all sent to v1."""
    set_weights(sandbox, 100, 0)
    # (curl's timeouts, exit 28, are the point; the loop itself ends with 0.)
    loop = "for i in $(seq 35); do curl -s -o /dev/null -m 0.5 http://app-backend/; done; true"
    kubectl(sandbox["kubeconfig"], "exec", "-n", "istio", "curl-test", "--", "sh", "-c", loop)


def sandbox_pids(home: Path = SHARED_HOME):
    workdir = home / "sandbox"
    runtime = json.loads((workdir / "runtime.json").read_text())
    recorded = json.loads((workdir / "processes.json").read_text())["pids"]
    return [runtime["pid"], runtime["envoy_pid"], *recorded]


def test_status_names_provider_kubeconfig_ingress_and_lesson(sandbox):
    assert sandbox["provider"] == "sandbox"
    assert sandbox["lesson"] == LESSON
    assert sandbox["ingress"].startswith("http://127.0.0.1:")
    assert Path(sandbox["kubeconfig"]).is_file()
    assert oct(Path(sandbox["kubeconfig"]).stat().st_mode & 0o777) == "0o600"


def test_pods_have_labels_and_a_sidecar(sandbox):
    out = kubectl(
        sandbox["kubeconfig"],
        "get",
        "pods",
        "-n",
        "istio",
        "-l",
        "app=app-backend",
        "-o",
        "jsonpath={range .items[*]}{.metadata.labels.version} {range .spec.containers[*]}"
        "{.name} {end}{'\\n'}{end}",
    ).stdout
    lines = sorted(line.strip() for line in out.strip().splitlines())
    assert lines == ["v1 app-backend istio-proxy", "v2 app-backend istio-proxy"]


def test_first_exercise_passes_and_course_command_counts_versions(sandbox):
    set_weights(sandbox, 90, 10)
    code, data, checks = check_json("observe-initial-split")
    assert code == 0, data
    assert set(data) == {"lesson", "exercise", "status", "checks"}
    assert set(checks["traffic-split"]) == {"id", "type", "status", "message", "hint", "evidence"}
    # The lesson's own counting command, as printed, run by bash through `kubectl exec`.
    out = run_printed(sandbox, "observe-initial-split", "uniq -c")
    counts = {line.split()[1]: int(line.split()[0]) for line in out.strip().splitlines()}
    assert sum(counts.values()) == 10, out
    assert set(counts) <= {"v1", "v2", "timeout"}, out


def run_printed(sandbox, exercise_id: str, containing: str) -> str:
    """Run the lesson's printed bash block (English text) that contains ``containing``."""
    proc = run_bash(lesson_block(LESSON, exercise_id, containing), sandbox["kubeconfig"])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_v1_hangs_for_the_students_requests_and_the_split_still_grades(sandbox):
    # kubelab's checks ask /version, which does not touch the pool: the student's own loop
    # over / is what spends v1's 30 requests, so v1 answers first and hangs later.
    set_weights(sandbox, 90, 10)
    fresh_v1(sandbox)
    runs = [run_printed(sandbox, "observe-initial-split", "uniq -c") for _ in range(6)]
    counts = [
        {line.split()[1]: int(line.split()[0]) for line in out.strip().splitlines()} for out in runs
    ]
    assert counts[0].get("v1", 0) >= 5, counts  # P(fewer than 5 of 10 at 90%) < 0.002
    assert "timeout" not in counts[0], counts
    assert counts[-1].get("timeout", 0) >= 5, counts  # 60 requests: v1 is long hung
    code, data, checks = check_json("observe-initial-split")
    split = checks["traffic-split"]
    assert code == 0, data
    assert split["evidence"]["hung"] == {}
    assert split["evidence"]["seconds"] < 2


def test_course_patch_moves_to_50_50(sandbox):
    set_weights(sandbox, 90, 10)
    code, _, checks = check_json("split-50-50")
    assert code == 1
    assert "subset v1 gets 90%, expected 50%" in checks["virtualservice-weights"]["message"]
    kubectl(sandbox["kubeconfig"], *course_patch(50, 50))
    time.sleep(1.0)  # Envoy applies a VirtualService change within a second
    code, data, checks = check_json("split-50-50")
    assert code == 0, data


@pytest.mark.parametrize(
    ("mangle", "expected"),
    [
        (
            ["delete", "virtualservice", "app-backend", "-n", "istio"],
            "VirtualService istio/app-backend does not exist",
        ),
        (
            course_patch(45, 55),
            "subset v1 gets 45%, expected 50%; subset v2 gets 55%, expected 50%",
        ),
        (
            [
                "patch",
                "virtualservice",
                "app-backend",
                "-n",
                "istio",
                "--type=json",
                '-p=[{"op":"replace","path":"/spec/http/0/route/1/weight","value":25},'
                '{"op":"add","path":"/spec/http/0/route/-","value":{"destination":'
                '{"host":"app-backend","subset":"v3"},"weight":25}}]',
            ],
            "subset v2 gets 25%, expected 50%; subset v3 gets 25%, expected 0%; "
            "DestinationRule istio/app-backend does not define subset v3",
        ),
        (
            [
                "patch",
                "destinationrule",
                "app-backend",
                "-n",
                "istio",
                "--type=json",
                '-p=[{"op":"remove","path":"/spec/subsets/1"}]',
            ],
            "DestinationRule istio/app-backend does not define subset v2 (it defines v1)",
        ),
    ],
    ids=["vs-deleted", "weights-45-55", "three-destinations", "subset-missing-in-dr"],
)
def test_mangled_routing_gives_a_precise_failure(sandbox, mangle, expected):
    set_weights(sandbox, 50, 50)
    snapshot = {
        kind: kubectl(
            sandbox["kubeconfig"], "get", kind, "app-backend", "-n", "istio", "-o", "json"
        ).stdout
        for kind in ("virtualservice", "destinationrule")
    }
    kubectl(sandbox["kubeconfig"], *mangle)
    try:
        proc = kubelab("check", "split-50-50", "--output", "json")
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        checks = {c["id"]: c for c in json.loads(proc.stdout)["checks"]}
        weights = checks["virtualservice-weights"]
        assert weights["status"] == "failed"
        assert expected in weights["message"], weights["message"]
    finally:
        for text in snapshot.values():
            obj = json.loads(text)
            for key in (
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "generation",
                "managedFields",
            ):
                obj["metadata"].pop(key, None)
            kind = obj["kind"].lower()
            kubectl(
                sandbox["kubeconfig"], "delete", kind, "app-backend", "-n", "istio", check=False
            )
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
                json.dump(obj, fh)
            kubectl(sandbox["kubeconfig"], "create", "-f", fh.name)


def test_wrong_namespace_label_is_named(sandbox):
    kubectl(
        sandbox["kubeconfig"],
        "label",
        "namespace",
        "istio",
        "istio-injection=disabled",
        "--overwrite",
    )
    try:
        proc = kubelab("check", "observe-initial-split", "--output", "json")
        checks = {c["id"]: c for c in json.loads(proc.stdout)["checks"]}
        assert proc.returncode == 1
        assert checks["sidecar-injected"]["status"] == "failed"
        assert (
            "namespace istio does not have the label istio-injection=enabled (it is 'disabled')"
            in checks["sidecar-injected"]["message"]
        )
        assert "kubectl label namespace istio" in checks["sidecar-injected"]["hint"]
    finally:
        kubectl(
            sandbox["kubeconfig"],
            "label",
            "namespace",
            "istio",
            "istio-injection=enabled",
            "--overwrite",
        )


def test_rollout_to_v2_then_stable(sandbox):
    kubectl(sandbox["kubeconfig"], *course_patch(0, 100))
    time.sleep(1.0)
    code, data, _ = check_json("rollout-v2")
    assert code == 0, data
    code, data, checks = check_json("confirm-stable")
    assert code == 0, data
    assert checks["http-stable"]["evidence"]["counts"] == {"v2": 300}
    # The lesson's own 300-request count, as printed: every answer from v2.
    out = run_printed(sandbox, "confirm-stable", "uniq -c")
    assert out.split() == ["300", "v2"], out


def test_unavailable_exercise_says_why(sandbox):
    proc = kubelab("check", "kiali-graph")
    assert proc.returncode == 2
    # Its offline path needs only the metrics, which Prometheus would give.
    assert "needs victoria-metrics" in proc.stderr
    assert "sudo apt install prometheus" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
    # The traces exercise follows its offline path here: the span receiver is always there.
    shown = json.loads(kubelab("exercise", "jaeger-traces", "--output", "json").stdout)
    assert shown["available"] is True and "kubelab traces" in shown["instructions"]


def test_progress_records_the_checks(sandbox):
    set_weights(sandbox, 0, 100)
    code, data, _ = check_json("rollout-v2")
    assert code == 0, data
    data = json.loads(kubelab("progress", "--output", "json").stdout)
    statuses = {e["exercise"]: e["status"] for e in data["exercises"]}
    assert statuses["rollout-v2"] == "passed"
    assert statuses["kiali-graph"] == "unavailable"


def test_exec_sampler_through_the_tester_pod(sandbox):
    """The real-cluster transport (curl in the in-mesh tester, via the API's exec) works
    against the sandbox too, and names the subset of hung requests."""
    from kubelab.checks.sampling import Destination, ExecSampler, attribute_hung, tally
    from kubelab.cluster.kube import Kube

    hung_v1(sandbox)
    set_weights(sandbox, 50, 50)
    try:
        sampler = ExecSampler(Kube(Path(sandbox["kubeconfig"])), "curl-test", "istio")
        samples = sampler.sample(Destination("app-backend", "istio"), 40, 1.0, 40)
    finally:
        set_weights(sandbox, 0, 100)
    assert len(samples) == 40
    # v1 is hung: its requests are no answer from v1, but the mesh names their subset.
    hung_samples = [s for s in samples if s.hung]
    assert hung_samples and {s.subset for s in hung_samples} == {"v1"}
    assert all(s.version is None for s in hung_samples)
    assert {s.version for s in samples if not s.hung} == {"v2"}
    answered, hung, unknown = tally(attribute_hung(samples, {"v1"}))
    assert unknown == 0 and set(answered) == {"v1", "v2"}
    assert hung.get("v2", 0) == 0  # v2 never hangs
    assert hung["v1"] == answered["v1"]


def test_exercise_and_hints_in_both_languages(sandbox):
    proc = kubelab("exercise", "split-50-50", "--lang", "pt")
    assert proc.returncode == 0 and "Mude a divisão para 50/50" in proc.stdout
    first = json.loads(kubelab("hint", "split-50-50", "-o", "json").stdout)
    second = json.loads(kubelab("hint", "split-50-50", "-o", "json", "--lang", "pt").stdout)
    third = json.loads(kubelab("hint", "split-50-50", "-o", "json").stdout)
    assert (first["hint"], second["hint"], third["hint"]) == (1, 2, 2)
    assert second["last"] is True and "peso do primeiro destino" in second["text"]
    progress = json.loads(kubelab("progress", "-o", "json").stdout)
    hints = {e["exercise"]: e["hints_shown"] for e in progress["exercises"]}
    assert hints["split-50-50"] == 2


def test_no_credential_reaches_the_sandbox(sandbox):
    env = kubectl(sandbox["kubeconfig"], "exec", "-n", "istio", "curl-test", "--", "env").stdout
    assert "POD_NAME=curl-test" in env and "PATH=" in env
    assert _marked(env) == [], env
    assert "KUBELAB_HOME" not in env  # a pod has the basics only, not kubelab's settings
    pids = sandbox_pids()
    assert len(pids) >= 4  # the daemon, Envoy and the app processes
    for pid in pids:
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        assert _marked(environ) == [], (pid, Path(f"/proc/{pid}/cmdline").read_bytes())
    for path in SHARED_HOME.rglob("*"):
        if path.is_file():
            assert _marked(path.read_bytes().decode(errors="replace")) == [], path
    # (A class needs a real cluster: its grading run is grepped in
    # tests/realk8s/test_classroom_real.py.)
    work = SHARED_HOME.parent / f"{SHARED_HOME.name}-dry-runs"
    # Dry-runs of every provider, with what they write.
    for provider in ("sandbox", "existing", "kind", "hetzner", "gke"):
        out = work / f"dry-run-{provider}"
        planned = kubelab("up", LESSON, "--dry-run", "-p", provider, "--out", str(out))
        assert planned.returncode == 0, planned.stdout + planned.stderr
    for folder in (SHARED_HOME, work):
        for path in folder.rglob("*"):
            if path.is_file():
                assert _marked(path.read_bytes().decode(errors="replace")) == [], path
    # up, status and the dry-runs at least (and every other test's commands before it).
    assert len(OUTPUTS) >= 7 and all(_marked(out) == [] for out in OUTPUTS)


def test_a_killed_envoy_comes_back(sandbox):
    import signal

    runtime = SHARED_HOME / "sandbox" / "runtime.json"
    old = json.loads(runtime.read_text())["envoy_pid"]
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 10
    new = old
    while new == old and time.monotonic() < deadline:
        time.sleep(0.1)
        new = json.loads(runtime.read_text())["envoy_pid"]
    assert new != old and pids_alive([new]) == [new]
    assert json.loads(kubelab("status", "-o", "json").stdout)["mesh_running"] is True
    log = (SHARED_HOME / "sandbox" / "daemon.log").read_text()
    assert "Envoy had exited (code -9); started it again" in log
    set_weights(sandbox, 0, 100)
    code, data, _ = check_json("rollout-v2")  # its requests go through the new Envoy
    assert code == 0, data


def test_down_leaves_no_process():
    """On a sandbox of its own, so that the module's stays up for the other tests."""
    lab = SandboxHome("kubelab-sandbox-down-")
    proc = lab.kubelab("up", LESSON, "--provider", "sandbox")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pids = sandbox_pids(lab.home)
    assert pids_alive(pids) == pids  # all running before
    proc = lab.kubelab("down")
    assert proc.returncode == 0, proc.stderr
    deadline = time.monotonic() + 10
    while pids_alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pids_alive(pids) == []
    assert not (lab.home / "sandbox").exists()
    assert json.loads(lab.kubelab("status", "--output", "json").stdout)["lessons"] == []
