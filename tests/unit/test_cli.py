"""The CLI: global options anywhere, JSON output, languages, errors without tracebacks."""

from __future__ import annotations

import json

import pytest
from support import run_cli

from kubelab.cli.main import hoist_global_options, run
from kubelab.i18n import detect_lang


def test_global_options_after_the_command_are_hoisted():
    assert hoist_global_options(["check", "--output", "json", "-v", "ex1"]) == [
        "--output",
        "json",
        "-v",
        "check",
        "ex1",
    ]
    assert hoist_global_options(["show", "x", "--lang=pt"]) == ["--lang=pt", "show", "x"]
    # --out (a command's own option) is not --output; nothing after -- moves.
    assert hoist_global_options(["up", "x", "--out", "d", "--", "-v"]) == [
        "up",
        "x",
        "--out",
        "d",
        "--",
        "-v",
    ]


@pytest.mark.parametrize(
    ("explicit", "env", "expected"),
    [
        (None, {"LANG": "pt_BR.UTF-8"}, "pt"),
        (None, {"LANG": "en_US.UTF-8"}, "en"),
        (None, {"LANG": "de_DE.UTF-8"}, "en"),
        (None, {}, "en"),
        ("pt", {"LANG": "en_US.UTF-8"}, "pt"),
        (None, {"LANG": "en_US.UTF-8", "KUBELAB_LANG": "pt"}, "pt"),
        (None, {"LC_ALL": "pt_PT.UTF-8", "LANG": "en_US"}, "pt"),
    ],
)
def test_language_detection(explicit, env, expected, monkeypatch):
    for var in ("LANG", "LC_ALL", "LC_MESSAGES", "KUBELAB_LANG"):
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert detect_lang(explicit) == expected


def test_unknown_language_is_a_usage_error(capsys):
    assert run(["--lang", "fr", "lessons"]) == 2
    assert "use pt or en" in capsys.readouterr().err


def test_lessons_json(capsys):
    assert run(["lessons", "--output", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    lesson = next(d for d in data if d["id"] == "istio-traffic-splitting")
    assert lesson["exercises"] == 6
    assert "kiali" in lesson["components"]


def test_show_in_both_languages(capsys):
    assert run(["show", "istio-traffic-splitting", "--lang", "pt"]) == 0
    pt = capsys.readouterr().out
    assert "Exercícios" in pt and "Divisão de tráfego com Istio" in pt
    assert run(["show", "istio-traffic-splitting", "--lang", "en"]) == 0
    en = capsys.readouterr().out
    assert "Exercises" in en and "Traffic splitting with Istio" in en


def test_show_json(capsys):
    assert run(["-o", "json", "show", "istio-traffic-splitting"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["exercises"][0]["id"] == "observe-initial-split"
    assert data["exercises"][1]["requires"] == ["kiali", "victoria-metrics"]


def test_unknown_lesson_is_exit_2_with_a_hint(capsys):
    assert run(["show", "no-such-lesson"]) == 2
    err = capsys.readouterr().err
    assert "error: no lesson 'no-such-lesson'" in err
    assert "hint:" in err and "Traceback" not in err


def test_doctor_json_reports_each_requirement_with_a_fix(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HCLOUD_TOKEN", "secret-token-value-should-never-print")
    code = run(["doctor", "--provider", "existing", "-o", "json"])
    out = capsys.readouterr().out
    data = json.loads(out)
    assert code == 4 and data["ready"] is False
    kube = next(r for r in data["requirements"] if r["name"] == "kubeconfig")
    assert kube["needed"] is True and kube["ok"] is False and "KUBECONFIG" in kube["fix"]
    token = next(r for r in data["requirements"] if r["name"] == "HCLOUD_TOKEN")
    assert token["ok"] is True and token["needed"] is False
    assert "secret-token-value" not in out


def test_doctor_ready_when_provider_needs_are_met(capsys, monkeypatch, tmp_path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for tool in ("helm", "kubectl"):
        script = fake_bin / tool
        script.write_text("#!/bin/sh\necho fake-1.0\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:/usr/bin:/bin")
    monkeypatch.setattr("kubelab.cluster.facts.REGISTRY_NODE_PORT", _free_port())
    assert run(["doctor", "--provider", "existing", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["ready"] is True


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_doctor_says_when_the_registry_port_is_taken_here(capsys, monkeypatch):
    """`up` pushes through a port-forward on 127.0.0.1:30300 (the address the nodes pull
    by); something already listening there (a kind cluster) is named before `up`."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setattr("kubelab.cluster.facts.REGISTRY_NODE_PORT", busy.getsockname()[1])
        run(["doctor", "--provider", "existing", "-o", "json"])
    data = json.loads(capsys.readouterr().out)
    port = next(r for r in data["requirements"] if r["name"] == "registry port")
    assert port["needed"] is True and port["ok"] is False
    assert "in use" in port["detail"] and "ss -ltnp" in port["fix"]


def test_doctor_unknown_provider(capsys):
    assert run(["doctor", "--provider", "aws"]) == 2
    assert "unknown provider 'aws'" in capsys.readouterr().err


def test_up_on_existing_without_kubeconfig_says_what_to_do(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert run(["up", "istio-traffic-splitting", "--provider", "existing"]) == 4
    err = capsys.readouterr().err
    assert "no kubeconfig found" in err and "KUBECONFIG" in err and "Traceback" not in err


def test_bad_flag_is_a_usage_error_from_a_real_process():
    proc = run_cli("lessons", "--no-such-flag")
    assert proc.returncode == 2
    assert "No such option" in proc.stderr and "Traceback" not in proc.stderr


def test_help_lists_the_commands():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for command in ("lessons", "show", "validate", "doctor", "up"):
        assert command in proc.stdout


def test_an_oserror_no_command_answered_is_said_as_what_the_machine_refused(monkeypatch, capsys):
    import errno

    from kubelab.cli import main as cli_main

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/home/t/.kl/state.json")

    monkeypatch.setattr(cli_main, "app", full)
    assert cli_main.run(["lessons"]) == 4
    err = capsys.readouterr().err
    assert "error: No space left on device: /home/t/.kl/state.json" in err
    assert "Free some disk space where kubelab writes" in err and "Traceback" not in err

    def full_write(*args, **kwargs):  # a write to a full disk names no file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli_main, "app", full_write)
    assert cli_main.run(["lessons"]) == 4
    err = capsys.readouterr().err
    assert "error: No space left on device\n" in err and "network" not in err

    def refused(*args, **kwargs):
        raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")

    monkeypatch.setattr(cli_main, "app", refused)
    assert cli_main.run(["lessons"]) == 4
    assert "cannot reach the network service" in capsys.readouterr().err
