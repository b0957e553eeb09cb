"""``kubelab grade --output csv --lms ...``: the gradebook CSV of each LMS, laid out as that
LMS documents its import (docs/grading.md, "Gradebook CSV"), RFC 4180 quoting, UTF-8, and
no cell a spreadsheet would run as a formula."""

from __future__ import annotations

import csv
import io

import pytest
from support import run_cli

from kubelab.checks.result import Status
from kubelab.classroom import report
from kubelab.classroom.model import CheckGrade, ClassGrade, ExerciseGrade, StudentGrade

P, F = Status.PASSED, Status.FAILED
TITLES = [("observe", "Observe the initial 90/10 split"), ("split", 'Split, then "check"')]
POINTS = {"observe": 2.0, "split": 1.5}


def graded(ex_id: str, *statuses: Status, superseded_by: str | None = None) -> ExerciseGrade:
    checks = [CheckGrade(f"c{i}", "t", s, str(s)) for i, s in enumerate(statuses)]
    return ExerciseGrade(ex_id, checks, superseded_by=superseded_by, points=POINTS[ex_id])


def student(sid: str, name: str, email: str, *exercises: ExerciseGrade) -> StudentGrade:
    return StudentGrade(sid, name, email, f"istio-{sid}", list(exercises))


STUDENTS = [
    # 2 + 1.5
    student("ana", "Ana Souza", "ana@escola.example", graded("observe", P), graded("split", P)),
    # 2 x 1/3 + 1.5 x 1/2: partial credit, rounded to 2 decimals per cell
    student(
        "joao",
        "João Conceição, Jr.",
        "joao@escola.example",
        graded("observe", P, F, F),
        graded("split", P, F),
    ),
    # superseded: full credit for the first exercise
    student(
        "bia",
        'Bia "Bee" Lima',
        "bia@escola.example",
        graded("observe", F, superseded_by="split"),
        graded("split", P),
    ),
    student(
        "eve",
        '=HYPERLINK("http://evil.example","x")',
        "eve@escola.example",
        graded("observe", F),
        graded("split", F),
    ),
    student("max", "@SUM(A1:A9)", "-max@escola.example", graded("observe", F), graded("split", F)),
    student("tab", "\tTab", "tab@escola.example", graded("observe", F), graded("split", F)),
]
GRADE = ClassGrade(
    "istio-traffic-splitting", "2026-11-22T10:00:00.000Z", TITLES, STUDENTS, exercise_points=POINTS
)
# What each student earns per exercise, as the gradebook writes it (2 decimals).
EARNED = {
    "ana": ["2", "1.5"],
    "joao": ["0.67", "0.75"],
    "bia": ["2", "1.5"],
    "eve": ["0", "0"],
    "max": ["0", "0"],
    "tab": ["0", "0"],
}
TOTAL = {"ana": "3.5", "joao": "1.42", "bia": "3.5", "eve": "0", "max": "0", "tab": "0"}
# 100 x (2/3 + 0.75) / 3.5 = 40.476...
PERCENT = {"ana": "100", "joao": "40.48", "bia": "100", "eve": "0", "max": "0", "tab": "0"}
# Names and e-mails as written: a leading = + - @ or tab gets an apostrophe.
NAME = {
    "ana": "Ana Souza",
    "joao": "João Conceição, Jr.",
    "bia": 'Bia "Bee" Lima',
    "eve": '\'=HYPERLINK("http://evil.example","x")',
    "max": "'@SUM(A1:A9)",
    "tab": "'\tTab",
}
EMAIL = {s.id: s.email for s in STUDENTS} | {"max": "'-max@escola.example"}


def rows_of(lms: str) -> list[list[str]]:
    text = report.gradebook_csv(GRADE, lms)
    text.encode("utf-8")  # written as UTF-8
    assert text.endswith("\r\n")  # RFC 4180: every record ends with CRLF
    return list(csv.reader(io.StringIO(text, newline="")))


def check_numbers(cells: list[str], sid: str) -> None:
    """Plain decimals (a dot, no thousands separator, no %), and the total is their sum."""
    *per_exercise, total = cells
    assert per_exercise == EARNED[sid] and total == TOTAL[sid]
    assert round(sum(float(c) for c in per_exercise), 2) == float(total)


def test_generic_one_row_per_student_with_id_name_email_points_and_total() -> None:
    text = report.gradebook_csv(GRADE)  # the default
    assert text == report.gradebook_csv(GRADE, "generic")
    assert text.split("\r\n")[0] == "id,name,email,observe,split,total,possible,percent"
    _, *rows = rows_of("generic")
    assert [r[0] for r in rows] == [s.id for s in STUDENTS]
    for row in rows:
        sid = row[0]
        assert row[1:3] == [NAME[sid], EMAIL[sid]]
        check_numbers(row[3:6], sid)
        assert row[6] == "3.5"  # possible
        # The percentage is the JSON's: of the points earned, not of the rounded cells.
        assert row[7] == PERCENT[sid]


def test_moodle_identifies_students_by_email_in_the_first_column() -> None:
    """Moodle's CSV import maps one column to a user field (Map from / Map to: Email
    address, which is the first column, Map from's default) and every other column to a
    grade item, a new grade item named after its header, or Ignore."""
    text = report.gradebook_csv(GRADE, "moodle")
    assert text.split("\r\n")[0] == (
        "Email address,Full name,kubelab ID,Observe the initial 90/10 split,"
        '"Split, then ""check""",Total'
    )
    header, *rows = rows_of("moodle")
    assert header[3:5] == [title for _, title in TITLES]  # the new grade items' names
    assert len(rows) == len(STUDENTS)
    for row, s in zip(rows, STUDENTS, strict=True):
        assert row[:3] == [EMAIL[s.id], NAME[s.id], s.id]
        check_numbers(row[3:], s.id)


def test_canvas_has_its_student_columns_and_a_points_possible_row() -> None:
    """Canvas's importer wants Student and ID first and the student columns to end with
    Section (SIS User ID and SIS Login ID between them), a "Points Possible" row for new
    assignments, and skips its read-only total columns such as "Final Points"."""
    text = report.gradebook_csv(GRADE, "canvas")
    lines = text.split("\r\n")
    assert lines[0] == (
        "Student,ID,SIS User ID,SIS Login ID,Section,Observe the initial 90/10 split,"
        '"Split, then ""check""",Final Points'
    )
    assert lines[1] == "Points Possible,,,,,2,1.5,3.5"
    header, _, *rows = rows_of("canvas")
    assert "Student" in header[0] and "ID" in header[1] and header[4] == "Section"
    assert len(rows) == len(STUDENTS)
    for row, s in zip(rows, STUDENTS, strict=True):
        # Matched by SIS Login ID (often the e-mail), else by name; no Canvas ids known.
        assert row[:5] == [NAME[s.id], "", "", EMAIL[s.id], ""]
        check_numbers(row[5:], s.id)


def test_google_classroom_matches_students_by_email() -> None:
    text = report.gradebook_csv(GRADE, "google-classroom")
    assert text.split("\r\n")[0] == (
        "Email Address,Full Name,kubelab ID,Observe the initial 90/10 split,"
        '"Split, then ""check""",Total'
    )
    _, *rows = rows_of("google-classroom")
    assert len(rows) == len(STUDENTS)  # no row without an e-mail address
    for row, s in zip(rows, STUDENTS, strict=True):
        assert row[:3] == [EMAIL[s.id], NAME[s.id], s.id]
        check_numbers(row[3:], s.id)


@pytest.mark.parametrize("lms", report.LMS)
def test_no_cell_starts_like_a_formula_and_text_survives_quoting(lms: str) -> None:
    rows = rows_of(lms)
    cells = [cell for row in rows for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert "João Conceição, Jr." in cells and 'Bia "Bee" Lima' in cells
    raw = report.gradebook_csv(GRADE, lms)
    assert '"Bia ""Bee"" Lima"' in raw and '"João Conceição, Jr."' in raw


def test_titles_that_repeat_get_the_exercise_id_and_titles_are_neutralized() -> None:
    grade = ClassGrade(
        "l",
        "t",
        [("a", "Check it"), ("b", "Check it"), ("c", "=2+2")],
        [student("ana", "Ana", "a@x.org")],
    )
    header = next(csv.reader(io.StringIO(report.gradebook_csv(grade, "moodle"))))
    assert header[3:6] == ["Check it [a]", "Check it [b]", "'=2+2"]
    # A student without a grade for an exercise earns 0 there.
    assert list(csv.reader(io.StringIO(report.gradebook_csv(grade))))[1][3:] == [
        "0",
        "0",
        "0",
        "0",
        "3",
        "0",
    ]


def test_an_unknown_lms_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown LMS 'blackboard'"):
        report.gradebook_csv(GRADE, "blackboard")


def test_lms_needs_csv_output_and_csv_is_for_grade_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"KUBELAB_HOME": str(tmp_path)}
    proc = run_cli("grade", "-o", "json", "--lms", "canvas", env=env)
    assert proc.returncode == 2, proc.stderr
    assert "--lms chooses the layout of a gradebook CSV: it needs --output csv" in proc.stderr
    assert "kubelab grade --output csv --lms canvas --out grades.csv" in proc.stderr
    proc = run_cli("grade", "-o", "csv", "--lms", "blackboard", env=env)
    assert proc.returncode == 2 and "blackboard" in proc.stderr
    proc = run_cli("progress", "-o", "csv", env=env)
    assert proc.returncode == 2 and "cannot write --output csv" in proc.stderr
    assert "Traceback" not in proc.stderr
