"""Class grade reports: a table for the terminal, JUnit XML for CI systems and LMS graders,
one self-contained HTML file (inline CSS and SVG, no script, nothing fetched) that opens
offline and shows per-student and per-exercise progress and progress over time, and a
gradebook CSV that Moodle, Canvas and Google Classroom import (:func:`gradebook_csv`).

The JSON report is :meth:`ClassGrade.to_json` itself.
"""

from __future__ import annotations

import csv
import html
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kubelab.checks.result import Status
from kubelab.classroom.model import ClassGrade

SYMBOL = {
    Status.PASSED: ("✔", "green"),
    Status.FAILED: ("✘", "red"),
    Status.PENDING: ("…", "yellow"),
    Status.ERROR: ("!", "magenta"),
}
COLOUR = {
    Status.PASSED: "#2e7d32",
    Status.PENDING: "#f9a825",
    Status.FAILED: "#c62828",
    Status.ERROR: "#6a1b9a",
}


# ----------------------------------------------------------------------------- numbers


def number(value: float, decimals: int = 2) -> str:
    """``value`` rounded to ``decimals`` places, without trailing zeros: 2, 1.5, 0.67."""
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def percent(value: float) -> str:
    """A percentage (0-100) for people: 75%, 66.7%."""
    return f"{number(value, 1)}%"


# ----------------------------------------------------------------------------- table


def table(grade: ClassGrade) -> Table:
    """Students x exercises, with a score column; errors spelled out under the table."""
    out = Table(
        title=f"{grade.lesson}: {len(grade.students)} students, graded {grade.taken_at}",
        show_lines=False,
    )
    out.add_column("student")
    for index, _ in enumerate(grade.exercises, start=1):
        out.add_column(str(index), justify="center")
    out.add_column("score", justify="right")
    possible = grade.possible
    for student in grade.students:
        cells: list[Text | str] = [Text(f"{student.id} {student.name}")]
        for ex_id, _ in grade.exercises:
            ex = student.exercise(ex_id)
            status = ex.status if ex else Status.ERROR
            symbol, style = SYMBOL[status]
            cells.append(Text(symbol, style=style))
        cells.append(
            f"{number(grade.total(student))}/{number(possible)} {percent(grade.percent(student))}"
        )
        out.add_row(*cells)
    legend = "; ".join(
        f"{i} {ex_id} ({number(grade.points_of(ex_id))} pts)"
        for i, (ex_id, _) in enumerate(grade.exercises, start=1)
    )
    mean = f"class mean {percent(grade.mean_percent())}" if grade.students else ""
    errors = [f"{s.id}: {s.error}" for s in grade.students if s.error]
    lines = [line for line in (legend, mean, *errors) if line]
    out.caption = escape("\n".join(lines))
    return out


# ----------------------------------------------------------------------------- JUnit


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: str | None) -> str:
    """``text`` without the characters XML 1.0 cannot hold (an API error may carry ESC)."""
    return _NOT_XML.sub("", text or "")


def junit(grade: ClassGrade) -> str:
    """One testsuite per student, one testcase per check (``classname`` = student.exercise).

    A student who could not be graded at all gets one errored testcase per exercise, so the
    totals stay comparable between students."""
    root = ET.Element("testsuites", name=f"kubelab grade {grade.lesson}")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for student in grade.students:
        suite = ET.SubElement(
            root,
            "testsuite",
            name=_xml(f"{student.id} {student.name}"),
            id=student.id,
            timestamp=grade.taken_at,
            time=f"{student.seconds:.3f}",
        )
        props = ET.SubElement(suite, "properties")
        for key, value in (
            ("email", student.email),
            ("namespace", student.namespace),
            ("lesson", grade.lesson),
            ("points_earned", number(grade.total(student), 4)),
            ("points_possible", number(grade.possible, 4)),
            ("percent", number(grade.percent(student), 4)),
        ):
            ET.SubElement(props, "property", name=key, value=_xml(value))
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        for ex_id, _ in grade.exercises:
            ex = student.exercise(ex_id)
            if student.error or ex is None:
                case = ET.SubElement(
                    suite, "testcase", classname=f"{student.id}.{ex_id}", name="graded"
                )
                ET.SubElement(case, "error", message=_xml(student.error or "not graded"))
                counts["tests"] += 1
                counts["errors"] += 1
                continue
            for check in ex.checks:
                case = ET.SubElement(
                    suite, "testcase", classname=f"{student.id}.{ex_id}", name=check.id
                )
                counts["tests"] += 1
                message = _xml(check.message)
                if ex.superseded_by and check.status is not Status.PASSED:
                    ET.SubElement(case, "system-out").text = (
                        f"done: {ex.superseded_by}, which starts from this exercise's end "
                        f"state, passes (now: {check.status}: {message})"
                    )
                elif not check.required:  # never counted against the student, as in JSON
                    ET.SubElement(
                        case, "system-out"
                    ).text = f"optional check: {check.status}: {message}"
                elif check.status is Status.FAILED:
                    node = ET.SubElement(case, "failure", message=message, type="failed")
                    node.text = _xml(check.hint)
                    counts["failures"] += 1
                elif check.status is Status.ERROR:
                    ET.SubElement(case, "error", message=message, type="error")
                    counts["errors"] += 1
                elif check.status is Status.PENDING:
                    # Not done yet is not passed: report it as a failure named pending.
                    ET.SubElement(case, "failure", message=message, type="pending")
                    counts["failures"] += 1
        for key, count in counts.items():
            suite.set(key, str(count))
            totals[key] += count
    for key, total in totals.items():
        root.set(key, str(total))
    root.set("time", f"{grade.seconds:.3f}")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


# ----------------------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.muted{color:#666} table{border-collapse:collapse;margin-top:8px}
th,td{padding:4px 8px;border-bottom:1px solid #e0e0e0;text-align:left;vertical-align:top}
th{background:#fafafa;font-weight:600} td.c{text-align:center}
.s{display:inline-block;min-width:18px;padding:1px 6px;border-radius:9px;color:#fff;
font-size:12px;text-align:center}
.passed{background:#2e7d32}.failed{background:#c62828}.pending{background:#f9a825}
.error{background:#6a1b9a}
.bar{display:inline-block;width:140px;height:10px;background:#eee;border-radius:5px;
vertical-align:middle;overflow:hidden}.bar i{display:block;height:100%;background:#2e7d32}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #e0e0e0;border-radius:8px;
padding:10px 14px;min-width:130px}.card b{display:block;font-size:22px}
details{margin:2px 0} summary{cursor:pointer} .legend{list-style:none;padding:0}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _badge(status: Status) -> str:
    symbol, _ = SYMBOL[status]
    return f'<span class="s {status}" title="{status}">{symbol}</span>'


def _exercise_chart(grade: ClassGrade) -> str:
    """Horizontal stacked bars: per exercise, students passed / pending / failed / error."""
    rows = grade.per_exercise()
    n = max(len(grade.students), 1)
    width, label_w, bar_h, gap = 640, 190, 18, 8
    height = len(rows) * (bar_h + gap) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="students per exercise and status">'
    ]
    for i, (ex_id, counts) in enumerate(rows.items()):
        y = i * (bar_h + gap)
        parts.append(
            f'<text x="0" y="{y + 13}" font-size="12">{_e(f"{i + 1}. {ex_id}"[:28])}</text>'
        )
        x = float(label_w)
        for status in (Status.PASSED, Status.PENDING, Status.FAILED, Status.ERROR):
            count = counts[str(status)]
            if not count:
                continue
            w = (width - label_w - 50) * count / n
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                f'fill="{COLOUR[status]}"><title>{count} {status}</title></rect>'
            )
            x += w
        parts.append(
            f'<text x="{x + 6:.1f}" y="{y + 13}" font-size="12">'
            f"{counts[str(Status.PASSED)]}/{len(grade.students)}</text>"
        )
    legend_y = len(rows) * (bar_h + gap) + 16
    for j, status in enumerate((Status.PASSED, Status.PENDING, Status.FAILED, Status.ERROR)):
        lx = label_w + j * 95
        parts.append(
            f'<rect x="{lx}" y="{legend_y - 10}" width="12" height="12" '
            f'fill="{COLOUR[status]}"/><text x="{lx + 16}" y="{legend_y}" '
            f'font-size="12">{status}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _history_chart(history: Sequence[ClassGrade]) -> str:
    """Completion (share of exercises passed by the class) over the stored snapshots."""
    if len(history) < 2:
        return '<p class="muted">One snapshot so far: grade again later to see progress.</p>'
    width, height, left, bottom, top = 640, 220, 40, 40, 10
    plot_w, plot_h = width - left - 10, height - bottom - top
    points = []
    for i, snap in enumerate(history):
        x = left + plot_w * i / (len(history) - 1)
        y = top + plot_h * (1 - snap.completion())
        points.append((x, y, snap))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'role="img" aria-label="class completion over time">'
    ]
    for pct in (0, 25, 50, 75, 100):
        y = top + plot_h * (1 - pct / 100)
        parts.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{pct}%'
            "</text>"
        )
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)
    parts.append(f'<polyline points="{path}" fill="none" stroke="#1565c0" stroke-width="2"/>')
    for i, (x, y, snap) in enumerate(points):
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#1565c0"><title>'
            f"{_e(snap.taken_at)}: {snap.completion():.0%}</title></circle>"
        )
        if i in (0, len(points) - 1) or len(points) <= 6:
            anchor = "start" if i == 0 else "end" if i == len(points) - 1 else "middle"
            parts.append(
                f'<text x="{x:.1f}" y="{height - bottom + 16}" font-size="11" '
                f'text-anchor="{anchor}">{_e(snap.taken_at[11:19])}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def html_report(grade: ClassGrade, history: Sequence[ClassGrade] = ()) -> str:
    """The whole report as one HTML document (``history``: earlier snapshots, oldest first,
    ending with ``grade`` or not; it is added when missing)."""
    snapshots = list(history)
    if not snapshots or snapshots[-1].taken_at != grade.taken_at:
        snapshots.append(grade)
    total = len(grade.exercises)
    summary = grade.to_json()["summary"]
    head = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>kubelab grades: {_e(grade.lesson)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Grades: {_e(grade.lesson)}</h1>",
        f'<p class="muted">Graded {_e(grade.taken_at)} in {grade.seconds:.1f} s; '
        f"{len(snapshots)} snapshot(s).</p>",
        '<div class="cards">',
        f'<div class="card"><b>{summary["students"]}</b>students</div>',
        f'<div class="card"><b>{summary["completed"]}</b>finished every exercise</div>',
        f'<div class="card"><b>{grade.completion():.0%}</b>of all exercises passed</div>',
        f'<div class="card"><b>{percent(grade.mean_percent())}</b>mean score '
        f"(of {number(grade.possible)} points)</div>",
        f'<div class="card"><b>{summary["errors"]}</b>could not be graded</div>',
        "</div>",
        "<h2>Exercises</h2>",
        _exercise_chart(grade),
    ]
    if grade.skipped:
        head.append("<p class='muted'>Not graded: ")
        head.append("; ".join(f"{_e(k)} ({_e(v)})" for k, v in grade.skipped.items()))
        head.append("</p>")
    head += ["<h2>Progress over time</h2>", _history_chart(snapshots), "<h2>Students</h2>"]
    rows = [
        "<table><thead><tr><th>student</th><th>progress</th>",
        *(
            f'<th title="{_e(title)} ({number(grade.points_of(ex_id))} points)">{i}<br>'
            f'<span class="muted">{number(grade.points_of(ex_id))} pts</span></th>'
            for i, (ex_id, title) in enumerate(grade.exercises, 1)
        ),
        "<th>details</th></tr></thead><tbody>",
    ]
    for student in grade.students:
        share = grade.percent(student)
        cells = [
            f"<tr><td><b>{_e(student.id)}</b> {_e(student.name)}<br>"
            f'<span class="muted">{_e(student.email)} · {_e(student.namespace)}</span></td>',
            f'<td><span class="bar"><i style="width:{share:.0f}%"></i></span> '
            f"{number(grade.total(student))}/{number(grade.possible)} points "
            f"({percent(share)})<br>"
            f'<span class="muted">{student.passed}/{total} exercises passed</span></td>',
        ]
        for ex_id, _ in grade.exercises:
            ex = student.exercise(ex_id)
            cells.append(
                f'<td class="c">{_badge(ex.status if ex else Status.ERROR)}<br>'
                f'<span class="muted">{number(grade.earned(student, ex_id))}/'
                f"{number(grade.points_of(ex_id))}</span></td>"
            )
        problems = []
        if student.error:
            problems.append(f"<b>{_e(student.error)}</b>")
        for ex in student.exercises:
            if ex.superseded_by:
                continue  # done: a later exercise that starts from its end state passes
            for check in ex.checks:
                if check.status is not Status.PASSED:
                    problems.append(
                        f"{_e(ex.exercise)} / {_e(check.id)}: {check.status}: {_e(check.message)}"
                    )
        detail = (
            f"<details><summary>{len(problems)} open</summary>{'<br>'.join(problems)}</details>"
            if problems
            else "all passed"
        )
        cells.append(f"<td>{detail}</td></tr>")
        rows.append("".join(cells))
    rows.append("</tbody></table>")
    legend = "".join(
        f"<li>{i}. {_e(ex_id)}: {_e(title)} ({number(grade.points_of(ex_id))} points)</li>"
        for i, (ex_id, title) in enumerate(grade.exercises, 1)
    )
    tail = [
        f"<h2>Exercise list</h2><ol class='muted' style='list-style:none;padding:0'>{legend}</ol>"
    ]
    tail.append("</body></html>")
    return "\n".join(head + rows + tail) + "\n"


# ----------------------------------------------------------------------------- gradebook CSV

#: The gradebook layouts of ``kubelab grade --output csv --lms ...`` (docs/grading.md).
LMS = ("generic", "moodle", "canvas", "google-classroom")

# A cell starting with one of these is read as a formula by Excel, LibreOffice and Google
# Sheets (CSV injection, CWE-1236): such a text cell gets a leading apostrophe, as OWASP
# ASVS 5.0 (V1.2.10) asks of exported CSV.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\0")


def _text(value: str) -> str:
    """A text cell no spreadsheet evaluates."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _columns(grade: ClassGrade, titles: bool) -> list[str]:
    """One header per exercise: its title (or id), made unique with the id if needed."""
    names = [title if titles else ex_id for ex_id, title in grade.exercises]
    return [
        _text(f"{name} [{ex_id}]" if names.count(name) > 1 else name)
        for name, (ex_id, _) in zip(names, grade.exercises, strict=True)
    ]


def gradebook_rows(grade: ClassGrade, lms: str = "generic") -> list[list[str]]:
    """The rows of :func:`gradebook_csv` (header first), every cell a string."""
    if lms not in LMS:
        raise ValueError(f"unknown LMS {lms!r} (one of {', '.join(LMS)})")
    exercises = [ex_id for ex_id, _ in grade.exercises]
    columns = _columns(grade, titles=lms != "generic")
    possible = [number(grade.points_of(ex_id)) for ex_id in exercises]
    rows: list[list[str]] = []
    if lms == "generic":
        rows.append(["id", "name", "email", *columns, "total", "possible", "percent"])
    elif lms == "moodle":
        rows.append(["Email address", "Full name", "kubelab ID", *columns, "Total"])
    elif lms == "canvas":
        # The student columns and the "Points Possible" row of Canvas's own export (the
        # importer requires the header up to "Section"); "Final Points" is one of the
        # read-only total columns the importer skips.
        student_columns = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
        rows.append([*student_columns, *columns, "Final Points"])
        rows.append(["Points Possible", "", "", "", "", *possible, number(grade.possible)])
    else:
        rows.append(["Email Address", "Full Name", "kubelab ID", *columns, "Total"])
    for student in grade.students:
        earned = [round(grade.earned(student, ex_id), 2) for ex_id in exercises]
        cells = [number(e) for e in earned]
        total = number(round(sum(earned), 2))  # the sum of the cells as written
        sid, name, email = _text(student.id), _text(student.name), _text(student.email)
        if lms == "generic":
            share = number(grade.percent(student))
            rows.append([sid, name, email, *cells, total, number(grade.possible), share])
        elif lms == "moodle":
            rows.append([email, name, sid, *cells, total])
        elif lms == "canvas":
            rows.append([name, "", "", email, "", *cells, total])
        else:
            rows.append([email, name, sid, *cells, total])
    return rows


def gradebook_csv(grade: ClassGrade, lms: str = "generic") -> str:
    """The class's points as a gradebook CSV (RFC 4180: header row, CRLF, fields quoted
    when they hold a comma, quote or line break) for ``lms`` (one of :data:`LMS`): one row
    per student, a column per exercise with the points earned (2 decimals), and the total
    (the sum of those cells). Write it as UTF-8."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerows(gradebook_rows(grade, lms))
    return buffer.getvalue()
