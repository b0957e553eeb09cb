"""scripts/e2e-kind.sh and its workflow cannot run here (no Docker): they are kept right by
reading them. The workflow parses and runs the script; every kubelab command and flag the
script uses exists; its paths and pins agree with the kind provider's."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml
from support import ROOT, run_cli

from kubelab.providers import kind

SCRIPT = ROOT / "scripts" / "e2e-kind.sh"
WORKFLOW = ROOT / ".github" / "workflows" / "e2e-kind.yml"


def test_the_workflow_parses_and_runs_the_script() -> None:
    doc = yaml.safe_load(WORKFLOW.read_text())
    on = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert "workflow_dispatch" in on
    (job,) = doc["jobs"].values()
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert "bash scripts/e2e-kind.sh" in runs
    assert "scripts/install-tools.sh" in runs and "pip install -e" in runs
    version = job["env"]["KIND_VERSION"]
    assert tuple(int(n) for n in version.lstrip("v").split(".")) >= (0, 31, 0), version
    upload = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload"))
    assert upload["if"] == "always()"
    assert "home" not in upload["with"]["path"].replace("# Not e2e-kind/home", "")


def test_the_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert os.access(SCRIPT, os.X_OK)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(SCRIPT)], check=True)


def test_the_kubelab_commands_it_calls_exist() -> None:
    text = SCRIPT.read_text()
    assert '"$KUBELAB" lessons -o json' in text
    listed = run_cli("lessons", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert {"istio-traffic-splitting", "flagger-canary", "argo-rollouts"} <= set(
        re.findall(r'"id": "([^"]+)"', listed.stdout)
    )
    assert '"$KUBELAB" -o json test "$lesson" --provider kind --out' in text
    usage = run_cli("test", "--help")
    assert usage.returncode == 0
    assert "--provider" in usage.stdout and "--out" in usage.stdout


@pytest.mark.parametrize("tool", ["kubectl", "helm"])
def test_the_tools_it_calls_are_the_ones_kubelab_installs(tool: str) -> None:
    assert f'need {tool} "run scripts/install-tools.sh"' in SCRIPT.read_text()
    assert tool in (ROOT / "scripts" / "install-tools.sh").read_text()


def test_its_paths_and_pins_match_the_kind_provider(tmp_path, monkeypatch) -> None:
    text = SCRIPT.read_text()
    assert f"CLUSTER={kind.DEFAULT_NAME} " in text
    monkeypatch.setenv("KUBELAB_HOME", str(tmp_path))
    workdir = kind.KindProvider().workdir
    assert workdir == tmp_path / f"kind-{kind.DEFAULT_NAME}"
    assert 'kubeconfig="$KUBELAB_HOME/kind-$CLUSTER/kubeconfig"' in text
    tag = kind.NODE_IMAGE.split("@")[0].split(":")[1]
    assert f"kindest/node:{tag}" in text
