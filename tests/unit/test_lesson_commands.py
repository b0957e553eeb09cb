"""Every shell command a lesson prints must work when typed or pasted.

Each ```bash block of every exercise text and hint, in both languages, is checked with
``bash -n``; a curl in a loop has a --max-time (a hung request otherwise waits out Envoy's
300 s); a count ends in ``cut -d" " -f1 | sort | uniq -c`` (the bodies carry a request
number, so a bare ``sort | uniq -c`` prints one line per request). Every line is short
enough to survive a terminal that wraps at 80 columns (kubelab's panel takes a few). The
commands that run in the sandbox are run there by tests/integration/test_sandbox_lesson.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from kubelab.lessons.loader import find_lesson

LESSONS = ["istio-traffic-splitting", "flagger-canary", "argo-rollouts"]
SHORT_LINES = set(LESSONS)
MAX_LINE = 76


def blocks(lesson_id: str) -> list[tuple[str, str]]:
    """(where, script) for every bash block of the lesson."""
    out = []
    for exercise in find_lesson(lesson_id).lesson.exercises:
        texts = [("instructions", exercise.instructions)] + [
            (f"hint {i + 1}", hint) for i, hint in enumerate(exercise.hints)
        ]
        for what, text in texts:
            for lang in ("pt", "en"):
                for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text.get(lang), re.S):
                    out.append((f"{lesson_id} {exercise.id} {what} ({lang})", block))
    return out


ALL = [(where, script) for lesson in LESSONS for where, script in blocks(lesson)]


def test_there_are_commands_to_check():
    assert len(ALL) > 40
    assert {where.split()[0] for where, _ in ALL} == set(LESSONS)


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash missing")
@pytest.mark.parametrize(("where", "script"), ALL, ids=[w for w, _ in ALL])
def test_each_block_parses_with_bash(where, script):
    proc = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert proc.returncode == 0, f"{where}: {proc.stderr}"


def _loops(script: str) -> list[str]:
    """The curl commands that run inside a shell loop (for/while ... done)."""
    found = []
    for loop in re.findall(r"\b(?:for|while)\b.*?\bdone\b", script, re.S):
        found += re.findall(r"curl [^;|&]*", loop)
    return found


@pytest.mark.parametrize(("where", "script"), ALL, ids=[w for w, _ in ALL])
def test_every_curl_in_a_loop_gives_up(where, script):
    for curl in _loops(script):
        assert "--max-time" in curl or re.search(r"\s-m\s?\d", curl), f"{where}: {curl}"


@pytest.mark.parametrize(("where", "script"), ALL, ids=[w for w, _ in ALL])
def test_every_count_counts_versions(where, script):
    joined = script.replace("\\\n", " ")
    for match in re.finditer(r"sort\s*\|\s*uniq -c", joined):
        before = joined[: match.start()]
        assert re.search(r"""cut -d['"] ['"] -f1\s*\|\s*$""", before), f"{where}: {script}"


@pytest.mark.parametrize(
    ("where", "script"),
    [(w, s) for w, s in ALL if w.split()[0] in SHORT_LINES],
    ids=[w for w, _ in ALL if w.split()[0] in SHORT_LINES],
)
def test_lines_fit_a_terminal_of_80_columns(where, script):
    for line in script.splitlines():
        assert len(line) <= MAX_LINE, f"{where}: {len(line)} columns: {line}"


def test_the_weights_hint_does_not_claim_istio_rejects_other_sums():
    exercise = find_lesson("istio-traffic-splitting").lesson.exercise("split-50-50")
    assert exercise is not None
    for hint in exercise.hints:
        for lang in ("pt", "en"):
            text = hint.get(lang)
            assert "rejeita" not in text and "rejects" not in text, text
    first = exercise.hints[0].get("en")
    assert "convention" in first and "relative" in first and "istio/istio#39544" in first
