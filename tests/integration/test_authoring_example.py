"""The worked example of docs/authoring.md is a real lesson: it validates, and its own test
(`kubelab test docs/examples/web-basics --provider sandbox`) passes, every check failing
before its solve script and passing after it; the guide shows the files as they are."""

from __future__ import annotations

import json
import re

import pytest
from support import ROOT, run_cli

from kubelab.tools import find_tool

pytestmark = [
    pytest.mark.skipif(find_tool("kubectl") is None, reason="kubectl missing: install-tools.sh"),
    pytest.mark.timeout(300),
]

EXAMPLE = ROOT / "docs" / "examples" / "web-basics"
GUIDE = ROOT / "docs" / "authoring.md"


def test_the_example_is_data_only() -> None:
    files = sorted(str(p.relative_to(EXAMPLE)) for p in EXAMPLE.rglob("*") if p.is_file())
    assert files == [
        "lesson.yaml",
        "manifests/web.yaml",
        "solve/01-scale.sh",
        "solve/02-label.sh",
        "solve/03-greeting.sh",
        "solve/lib.sh",
    ]


def test_the_example_validates(_isolated_home) -> None:  # type: ignore[no-untyped-def]
    for extra in ([], ["--render"]):
        proc = run_cli("validate", *extra, str(EXAMPLE), env={"KUBELAB_HOME": str(_isolated_home)})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "ok" in proc.stdout and "(web-basics)" in proc.stdout


def test_the_guide_quotes_the_example_as_it_is() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    lesson = (EXAMPLE / "lesson.yaml").read_text(encoding="utf-8")
    quoted = re.findall(r"```yaml\n(.*?)```", guide, re.S)
    checks = [block for block in quoted if "type: assert" in block]
    assert checks, "the guide shows no assert check"
    for block in checks:
        for line in block.splitlines():
            if line.strip() and not line.strip().startswith("#"):
                assert line.split("  #")[0].rstrip() in lesson, f"not in lesson.yaml: {line!r}"


def test_kubelab_test_of_the_example_in_the_sandbox(tmp_path, _isolated_home) -> None:  # type: ignore[no-untyped-def]
    report = tmp_path / "report.json"
    proc = run_cli(
        "test",
        str(EXAMPLE),
        "--provider",
        "sandbox",
        "--output",
        "json",
        "--out",
        str(report),
        env={"KUBELAB_HOME": str(_isolated_home)},
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(report.read_text(encoding="utf-8"))
    exercises = {e["exercise"]: e for e in result["exercises"]}
    assert list(exercises) == ["scale-web", "label-for-the-service", "change-greeting"]
    for exercise in exercises.values():
        assert exercise["before"]["status"] == "failed", exercise
        assert exercise["after"]["status"] == "passed", exercise
    held = next(
        c for c in exercises["change-greeting"]["after"]["checks"] if c["id"] == "greeting-stays"
    )
    assert held["message"].startswith("held for 4 s (")
