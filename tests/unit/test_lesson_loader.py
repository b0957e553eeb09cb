"""Lesson files: every problem is one line naming file, line and field; exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import ROOT, run_cli

from kubelab.cli.main import run
from kubelab.errors import ValidationFailed
from kubelab.lessons.loader import available_lessons, find_lesson, load_lesson

FIXTURES = ROOT / "tests" / "fixtures" / "lessons"

# fixture folder -> lines (line, field, text) that `kubelab validate` must print.
EXPECTED: dict[str, list[tuple[int, str, str]]] = {
    "bad-yaml": [(5, "", "invalid YAML: while parsing a flow sequence")],
    "empty-file": [(1, "", "the file is empty")],
    "not-a-mapping": [(1, "", "expected a mapping")],
    "unknown-top-key": [(2, "titel", "unknown key 'titel'; did you mean 'title'?")],
    "unknown-exercise-key": [(9, "exercises[0].hint", "unknown key 'hint'; did you mean 'hints'?")],
    "wrong-types": [
        (9, "exercises[0].hints", "expected a list (got 'just a string')"),
        (15, "exercises[0].checks[0].expect.v1", "expected an integer"),
    ],
    "weights-not-100": [
        (15, "exercises[0].checks[0].expect", "weights must sum to 100 (got v1 45 + v2 50 = 95)")
    ],
    "weight-out-of-range": [(15, "exercises[0].checks[0].expect", "between 0 and 100")],
    "unknown-check-type": [
        (
            12,
            "exercises[0].checks[0]",
            "unknown check type 'virtualservice-weight'; did you mean 'virtualservice-weights'?",
        )
    ],
    "check-without-type": [(12, "exercises[0].checks[0]", "missing 'type'")],
    "check-missing-parameter": [(12, "exercises[0].checks[0].name", "required field is missing")],
    "missing-translation": [(7, "exercises[0].title", "missing translation: en")],
    "duplicate-exercise-ids": [(16, "exercises[1].id", "duplicate exercise id 'one'")],
    "solve-missing": [(10, "exercises[0].solve", "solve/missing.sh does not exist")],
    "solve-not-executable": [(10, "exercises[0].solve", "is not executable")],
    "missing-required": [
        (1, "summary", "required field is missing"),
        (5, "exercises[0].instructions", "required field is missing"),
    ],
    "duplicate-yaml-key": [(5, "", "found duplicate key 'components' (first on line 4)")],
    "bad-selector": [(14, "exercises[0].checks[0].selector", "invalid label selector")],
    "unknown-component": [(4, "components[1]", "unknown component 'istoi'; did you mean 'istio'?")],
    "id-mismatch": [(1, "id", "must match the lesson folder name 'id-mismatch'")],
    "requires-unknown-component": [
        (11, "exercises[0].requires[0]", "'kiali' is not in the lesson's components")
    ],
    "offline-bad-path": [
        (13, "exercises[0].offline.requires[0]", "'victoria-metrics' is not in the lesson's"),
        (14, "exercises[0].offline.checks[1]", "'virtualservice-weight' is not a check of this"),
    ],
    "bad-exercise-id": [(6, "exercises[0].id", "must be a lowercase name")],
    "no-exercises": [(5, "exercises", "at least 1 item")],
    "files-outside": [
        (5, "manifests[0]", "../../../../../../etc/hostname is outside the lesson folder"),
        (11, "exercises[0].solve", "../solve-missing/solve.sh is outside the lesson folder"),
    ],
}


def _line(name: str, line: int, field: str, text: str) -> str:
    where = f"tests/fixtures/lessons/{name}/lesson.yaml:{line}: "
    return where + (f"{field}: " if field else "") + text


def test_every_fixture_has_expectations():
    folders = {p.name for p in FIXTURES.iterdir() if p.is_dir()}
    assert folders == set(EXPECTED)
    assert len(folders) >= 15


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_lesson_reports_each_problem(name, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = run(["validate", str(FIXTURES / name)])
    out = capsys.readouterr()
    assert code == 2
    lines = out.err.splitlines()
    for line, field, text in EXPECTED[name]:
        prefix = _line(name, line, field, "")
        matching = [ln for ln in lines if ln.startswith(prefix)]
        assert matching, f"no line starting {prefix!r} in:\n{out.err}"
        assert any(text in ln for ln in matching), f"{text!r} not in {matching}"
    problems = [ln for ln in lines if ln.startswith("tests/fixtures/lessons/")]
    assert len(problems) == len(EXPECTED[name]), out.err
    assert "Traceback" not in out.err + out.out


def test_validate_folder_of_broken_lessons_in_a_real_process():
    proc = run_cli("validate", "tests/fixtures/lessons")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    for name, expected in EXPECTED.items():
        for line, field, _text in expected:
            assert _line(name, line, field, "") in proc.stderr
    assert f"{len(EXPECTED)} of {len(EXPECTED)} lesson file(s) invalid" in proc.stderr


def test_validate_json_lists_problems(capsys, monkeypatch):
    import json

    monkeypatch.chdir(ROOT)
    code = run(["validate", "--output", "json", str(FIXTURES / "weights-not-100")])
    data = json.loads(capsys.readouterr().out)
    assert code == 2
    assert data["valid"] is False
    assert "weights must sum to 100" in data["lessons"][0]["problems"][0]


def test_builtin_lessons_are_valid():
    lessons = available_lessons()
    assert "istio-traffic-splitting" in {loaded.lesson.id for loaded in lessons}


def test_loader_raises_validation_failed_with_details():
    with pytest.raises(ValidationFailed) as info:
        load_lesson(FIXTURES / "weights-not-100")
    assert info.value.exit_code == 2
    assert len(info.value.details) == 1


def test_unknown_lesson_suggests_the_closest():
    from kubelab.errors import UsageError

    with pytest.raises(UsageError) as info:
        find_lesson("istio-traffic-spliting")
    assert "Did you mean istio-traffic-splitting?" in (info.value.hint or "")


def test_traffic_splitting_lesson_matches_the_course():
    lesson = find_lesson("istio-traffic-splitting").lesson
    assert [e.id for e in lesson.exercises] == [
        "observe-initial-split",
        "kiali-graph",
        "split-50-50",
        "jaeger-traces",
        "rollout-v2",
        "confirm-stable",
    ]
    for exercise in lesson.exercises:
        assert exercise.title.pt != exercise.title.en
        assert exercise.instructions.pt.strip() and exercise.instructions.en.strip()
        assert exercise.hints
    weights = {
        e.id: c.expect
        for e in lesson.exercises
        for c in e.checks
        if c.type == "virtualservice-weights"
    }
    assert weights == {
        "observe-initial-split": {"v1": 90, "v2": 10},
        "split-50-50": {"v1": 50, "v2": 50},
        "rollout-v2": {"v1": 0, "v2": 100},
    }
    # Exercises that need dashboards say so (the sandbox skips them).
    needs = {e.id: e.needed_components() for e in lesson.exercises}
    assert needs["kiali-graph"] == {"kiali", "victoria-metrics"}
    assert needs["jaeger-traces"] == {"jaeger"}
    assert needs["split-50-50"] == set()


def test_course_patch_commands_are_in_the_solve_scripts():
    folder = ROOT / "labs" / "istio-traffic-splitting"
    text = (folder / "solve" / "03-split-50-50.sh").read_text()
    assert '"path":"/spec/http/0/route/0/weight","value":50' in text
    assert Path(folder / "solve" / "05-rollout-v2.sh").read_text().count('"value":') == 2


def test_lessons_are_read_as_yaml_1_2_by_one_parser():
    import yaml

    from kubelab.lessons.loader import _LessonLoader

    text = "a: 010\nb: 1:30\nc: yes\nd: 2026-12-01\ne: 0x10\nf: 1e3\ng: 0o17\nh: -7\ni: .5\n"
    assert yaml.load(text, Loader=_LessonLoader) == {
        "a": 10,  # PyYAML's YAML 1.1 says 8
        "b": "1:30",  # and 90
        "c": "yes",  # and True
        "d": "2026-12-01",  # and a date
        "e": 16,
        "f": 1000.0,  # and the text "1e3"
        "g": 15,
        "h": -7,
        "i": 0.5,
    }


def test_the_offline_paths_of_the_traffic_lesson():
    """In the sandbox, the Kiali exercise keeps only its metrics check (under the same id)
    and needs no Kiali; the Jaeger one keeps its check; both get their own text."""
    lesson = find_lesson("istio-traffic-splitting").lesson
    offline = lesson.offline_variant()
    kiali = offline.exercise("kiali-graph")
    jaeger = offline.exercise("jaeger-traces")
    assert kiali is not None and jaeger is not None
    assert [kiali.check_id(i) for i in range(len(kiali.checks))] == ["mesh-traffic-recorded"]
    assert kiali.needed_components() == {"victoria-metrics"}
    assert jaeger.needed_components() == {"jaeger"}
    for exercise in (kiali, jaeger):
        assert exercise.offline is None
        for lang in ("pt", "en"):
            text = exercise.instructions.get(lang)
            assert "kubelab graph" in text or "kubelab traces" in text
            assert "kubelab open" not in text
            assert exercise.title.get(lang) != lesson.exercise(exercise.id).title.get(lang)
    # The other exercises are the same on both paths.
    for before, after in zip(lesson.exercises, offline.exercises, strict=True):
        if before.offline is None:
            assert before == after
    # A lesson without offline paths is itself.
    flagger = find_lesson("flagger-canary").lesson
    assert flagger.offline_variant() is flagger
