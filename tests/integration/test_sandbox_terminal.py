"""kubectl's interactive features on the sandbox, typed in a pseudo-terminal as a student
types them: ``kubectl exec -it curl-test -- sh`` (echo, Ctrl-C, exit), and an
interrupted ``kubectl exec`` that must not leave its command running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest
from support import SandboxHome, lesson_sandbox

from kubelab.tools import find_tool

pexpect = pytest.importorskip("pexpect")

pytestmark = [
    pytest.mark.skipif(find_tool("kubectl") is None, reason="kubectl missing: install-tools.sh"),
    pytest.mark.timeout(240),
]

LAB = SandboxHome("kubelab-terminal-")
LESSON = "istio-traffic-splitting"
SHELL_PROMPT = re.compile(r"[#$] $")


lesson_up = lesson_sandbox(LAB, LESSON)


def kubectl_in_terminal(*args: str) -> pexpect.spawn:
    kubectl = find_tool("kubectl")
    assert kubectl is not None
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(LAB.home),
        "KUBECONFIG": str(LAB.kubeconfig),
        "TERM": "xterm",
    }
    return pexpect.spawn(
        str(kubectl),
        list(args),
        env=env,
        dimensions=(30, 100),
        encoding="utf-8",
        codec_errors="replace",
        timeout=20,
    )


def test_exec_it_is_a_real_terminal():
    term = kubectl_in_terminal("exec", "-it", "-n", "istio", "curl-test", "--", "sh")
    try:
        term.expect(SHELL_PROMPT)
        # Enter on a terminal is a carriage return; the pod's terminal makes it a newline.
        term.send("echo hi\r")
        term.expect(r"echo hi\r\nhi\r\n")
        term.expect(SHELL_PROMPT)
        # Ctrl-C interrupts the foreground command, not the session.
        term.send("sleep 30\r")
        time.sleep(0.5)
        started = time.monotonic()
        term.sendcontrol("c")
        term.expect(SHELL_PROMPT, timeout=5)
        assert time.monotonic() - started < 5
        # The window size kubectl sends reaches the pod's terminal.
        term.send("stty size\r")
        term.expect(r"30 100\r\n")
        term.expect(SHELL_PROMPT)
        term.send("exit\r")
        term.expect(pexpect.EOF, timeout=10)
    finally:
        term.close()
    assert term.exitstatus == 0, term.before


def _sleepers(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and "kubectl" not in cmdline and "sh -c" not in cmdline:
            found.append(int(entry))
    return found


def test_an_interrupted_exec_ends_what_it_started():
    kubectl = find_tool("kubectl")
    assert kubectl is not None
    marker = "987.654"  # a sleep no other process has
    client = subprocess.Popen(
        [
            str(kubectl),
            "--kubeconfig",
            str(LAB.kubeconfig),
            "exec",
            "-n",
            "istio",
            "curl-test",
            "--",
            "sh",
            "-c",
            f"sleep {marker}; echo done",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _sleepers(marker):
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.1)
    finally:
        client.send_signal(signal.SIGINT)
        client.wait(10)
    deadline = time.monotonic() + 5
    while _sleepers(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sleepers(marker) == [], "the sleep under the shell outlived kubectl exec"


def test_logs_of_the_sidecar_are_the_requests_that_pod_answered():
    for _ in range(6):
        LAB.kubectl(
            "exec",
            "-n",
            "istio",
            "curl-test",
            "--",
            "curl",
            "-s",
            "-m",
            "5",
            "http://app-backend/version",
        )
    pods = LAB.kubectl(
        "get",
        "pods",
        "-n",
        "istio",
        "-l",
        "app=app-backend",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.metadata.labels.version}{'\\n'}{end}",
    ).split("\n")
    versions = dict(line.split() for line in pods if line.strip())
    deadline = time.monotonic() + 5
    while True:
        sidecar = {
            name: LAB.kubectl("logs", "-n", "istio", name, "-c", "istio-proxy") for name in versions
        }
        if sum(log.count('"GET /version HTTP/1.1" 200') for log in sidecar.values()) >= 6:
            break
        assert time.monotonic() < deadline, sidecar
        time.sleep(0.2)
    for name, version in versions.items():
        lines = [line for line in sidecar[name].splitlines() if line.strip()]
        # Istio's access-log format, and only this version's cluster.
        assert all(line.startswith("[") and '"GET ' in line for line in lines), lines
        assert all(f"outbound|80|{version}|app-backend" in line for line in lines), lines
    app_log = LAB.kubectl("logs", "-n", "istio", next(iter(versions)), "-c", "app-backend")
    assert "outbound|80|" not in app_log


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as answer:
        return str(answer.read().decode())


def test_port_forward_to_the_service_reaches_its_pods():
    port = _free_port()
    term = kubectl_in_terminal("port-forward", "-n", "istio", "svc/app-backend", f"{port}:80")
    try:
        term.expect(rf"Forwarding from 127.0.0.1:{port} -> 8080")
        answers = [_get(f"http://127.0.0.1:{port}/version") for _ in range(3)]
        assert all('"version": "v' in a for a in answers), answers
        term.expect(f"Handling connection for {port}")
        term.sendcontrol("c")
        term.expect(pexpect.EOF, timeout=10)
    finally:
        term.close()


def test_port_forward_to_a_pod_without_a_listener_says_so():
    port = _free_port()
    term = kubectl_in_terminal("port-forward", "-n", "istio", "pod/curl-test", f"{port}:80")
    try:
        term.expect(rf"Forwarding from 127.0.0.1:{port} -> 80")
        import urllib.error

        with pytest.raises((urllib.error.URLError, ConnectionError)):
            _get(f"http://127.0.0.1:{port}/")
        term.expect("error forwarding port 80 to pod curl-test")
        term.sendcontrol("c")
        term.expect(pexpect.EOF, timeout=10)
    finally:
        term.close()
