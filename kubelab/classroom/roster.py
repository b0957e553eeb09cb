"""The class roster: a CSV file with one student per row.

Columns ``id``, ``name`` and ``email`` are required (any order, any case, extra columns are
kept but unused). The whole file is checked before anything is created, and every bad row
is reported with its line number, so an instructor fixes the file once instead of
discovering problems one ``class create`` at a time.

A student's ``id`` becomes part of Kubernetes names (``<lesson namespace>-<id>``), so it
must be a lowercase DNS label of at most :data:`MAX_ID` characters.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from kubelab.errors import ValidationFailed

REQUIRED = ("id", "name", "email")
MAX_ID = 20
# Every student gets a namespace with the lesson's app (two pods or more): past a few hundred a
# roster is a mistake (a whole school's list), and the class would not fit a course cluster.
MAX_STUDENTS = 200
ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
# Enough to catch typos and swapped columns; the address is only shown in reports.
EMAIL_RE = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")


@dataclass(frozen=True)
class Student:
    id: str
    name: str
    email: str
    line: int = 0

    def namespace(self, lesson_namespace: str) -> str:
        return f"{lesson_namespace}-{self.id}"


def parse_roster(text: str, source: str = "roster.csv") -> list[Student]:
    """Students of ``text``; raises ``ValidationFailed`` listing every bad line."""
    problems: list[str] = []
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    rows = [(reader.line_num, row) for row in reader]
    rows = [(n, r) for n, r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise ValidationFailed(
            f"{source} is empty",
            hint="The first line names the columns: id,name,email; then one student per line.",
        )
    header_line, header = rows[0]
    columns = [h.strip().lower() for h in header]
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ValidationFailed(
            f"{source}:{header_line}: missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(columns) or 'none'})",
            hint="The first line must name the columns, e.g. id,name,email.",
        )
    index = {c: columns.index(c) for c in REQUIRED}
    students: list[Student] = []
    seen_ids: dict[str, int] = {}
    seen_emails: dict[str, int] = {}
    for line, row in rows[1:]:
        if len(row) < len(columns):
            row = row + [""] * (len(columns) - len(row))
        elif len(row) > len(columns):
            problems.append(
                f"{source}:{line}: {len(row)} fields but the header has {len(columns)} "
                "(a comma inside a name needs quotes)"
            )
            continue
        sid, name, email = (row[index[c]].strip() for c in REQUIRED)
        bad = []
        if not sid:
            bad.append("id is empty")
        elif len(sid) > MAX_ID or not ID_RE.match(sid):
            bad.append(
                f"id {sid!r} must be lowercase letters, digits and '-', at most {MAX_ID} "
                "characters, starting and ending with a letter or digit"
            )
        elif sid in seen_ids:
            bad.append(f"id {sid!r} is already used on line {seen_ids[sid]}")
        if not name:
            bad.append("name is empty")
        if not EMAIL_RE.match(email):
            bad.append(f"email {email!r} is not an e-mail address")
        elif email.lower() in seen_emails:
            bad.append(f"email {email!r} is already used on line {seen_emails[email.lower()]}")
        if bad:
            problems.extend(f"{source}:{line}: {b}" for b in bad)
            continue
        seen_ids[sid] = line
        seen_emails[email.lower()] = line
        students.append(Student(sid, name, email, line))
    if problems:
        raise ValidationFailed(
            f"{source} has {len(problems)} problem(s); nothing was created",
            details=problems,
            hint="Fix those lines and run the same command again.",
        )
    if not students:
        raise ValidationFailed(f"{source} lists no students (only the header line)")
    if len(students) > MAX_STUDENTS:
        raise ValidationFailed(
            f"{source} lists {len(students)} students; a class has at most {MAX_STUDENTS}",
            hint="Split it into several classes (rosters), each on a cluster sized for it.",
        )
    return students


def load_roster(path: Path) -> list[Student]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValidationFailed(f"roster {path} does not exist") from None
    except IsADirectoryError:
        raise ValidationFailed(
            f"roster {path} is a folder", hint="Give the CSV file: --roster roster.csv."
        ) from None
    except UnicodeDecodeError:
        raise ValidationFailed(
            f"roster {path} is not UTF-8 text",
            hint="Save it as CSV UTF-8 (spreadsheets offer it under 'Save as').",
        ) from None
    return parse_roster(text, str(path))
