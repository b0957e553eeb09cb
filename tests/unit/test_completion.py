"""Shell completion is on: lesson ids and the running lesson's exercise ids complete."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def complete(words: str, home, **env: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", "from kubelab.cli.main import run; run()"],
        env={
            **os.environ,
            "KUBELAB_HOME": str(home),
            "_KUBELAB_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split(" ")) - 1),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.stdout.split()


def test_completion_options_are_offered():
    proc = subprocess.run(
        [sys.executable, "-c", "from kubelab.cli.main import run; run()", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--install-completion" in proc.stdout and "--show-completion" in proc.stdout


def test_lesson_ids_complete(tmp_path):
    assert complete("kubelab up is", tmp_path) == ["istio-traffic-splitting"]
    assert complete("kubelab test a", tmp_path) == ["argo-rollouts"]
    assert complete("kubelab show f", tmp_path) == ["flagger-canary"]


def test_exercise_ids_of_the_running_lesson_complete(tmp_path):
    lesson = "istio-traffic-splitting"
    (tmp_path / "state.json").write_text(
        json.dumps(
            {
                "schema_version": 2,
                "lessons": {lesson: {"lesson": lesson, "steps_done": ["deploy"]}},
            }
        )
    )
    assert complete("kubelab check s", tmp_path) == ["split-50-50"]
    assert set(complete("kubelab exercise ", tmp_path)) >= {
        "observe-initial-split",
        "confirm-stable",
    }
    # Nothing running: nothing to complete, and no error on the terminal.
    assert complete("kubelab hint ", tmp_path / "elsewhere") == []
