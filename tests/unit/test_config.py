"""The user's config file: defaults for up, flags win, bad files are clear errors."""

from __future__ import annotations

import json

import pytest

from kubelab.cli.main import run
from kubelab.config import load_config
from kubelab.errors import UsageError


def test_config_gives_defaults_and_flags_win(_isolated_home, capsys):
    (_isolated_home / "config.yaml").write_text("provider: existing\ndomain: lab.example.org\n")
    assert load_config().provider == "existing"
    assert run(["up", "istio-traffic-splitting", "--dry-run", "-o", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["provider"] == "existing"
    hosts = [h for o in plan["component_objects"] for h in o["hosts"]]
    assert hosts == ["*/gitea.lab.example.org", "gitea.lab.example.org"], hosts
    # Gitea is named by the registry address the nodes pull from, domain or not.
    gitea = next(c for c in plan["components"] if c["release"] == "gitea")
    assert gitea["values"]["gitea"]["config"]["server"]["ROOT_URL"] == "http://localhost:30300/"
    assert run(["up", "istio-traffic-splitting", "--dry-run", "-p", "sandbox", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["provider"] == "sandbox"


def test_bad_config_is_a_usage_error(_isolated_home):
    (_isolated_home / "config.yaml").write_text("provder: kind\n")
    with pytest.raises(UsageError, match="not a valid kubelab config"):
        load_config()
