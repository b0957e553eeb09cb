"""Every `kubelab ...` command that a message or hint in the code suggests names only
options that command has (a hint pointing at a missing option is a dead end)."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import typer

from kubelab.cli.main import app

PACKAGE = Path(__file__).resolve().parents[2] / "kubelab"
COMMAND = re.compile(r"kubelab((?: [a-z][a-z-]*)+)((?: [^`'\"\n;|()]*)?)")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z-]*)")


def _texts(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal and f-string of a module (placeholders become X)."""
    out = []
    inside = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    for node in ast.walk(tree):
        if id(node) in inside:
            continue  # a piece of an f-string, read whole below
        if isinstance(node, ast.JoinedStr):
            parts = [
                v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "X"
                for v in node.values
            ]
            out.append((node.lineno, "".join(parts)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append((node.lineno, node.value))
    return out


def _suggestions() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, text in _texts(ast.parse(path.read_text(encoding="utf-8"))):
            for match in COMMAND.finditer(text):
                where = f"{path.relative_to(PACKAGE.parent)}:{line}"
                found.append((where, match.group(1).strip(), match.group(2) or ""))
    return found


def _resolve(root: Any, words: list[str]) -> tuple[Any, list[str]] | None:
    command = root
    used = 0
    for word in words:
        children = getattr(command, "commands", None) or {}
        if word in children:
            command = children[word]
            used += 1
        else:
            break
    if used == 0:
        return None
    return command, words[used:]


def test_suggested_options_exist():
    root = typer.main.get_command(app)
    global_options = {o for p in root.params for o in p.opts}
    suggestions = _suggestions()
    assert len(suggestions) > 30  # the scan finds the hints
    wrong = []
    for where, words, rest in suggestions:
        resolved = _resolve(root, words.split())
        if resolved is None:
            continue  # prose ("kubelab is ..."), not a command
        command, _ = resolved
        known = global_options | {o for p in command.params for o in p.opts}
        for option in OPTION.findall(rest):
            if option not in known:
                wrong.append(f"{where}: kubelab {words} has no {option}")
    assert wrong == []


EXTERNAL = re.compile(r"(?<![\w-])(kubectl|helm|kind|gcloud|docker|ss|pip|ssh|curl|git) ")


def _all_options(command: Any) -> set[str]:
    found = {o for p in getattr(command, "params", []) for o in p.opts}
    for child in (getattr(command, "commands", None) or {}).values():
        found |= _all_options(child)
    return found


def test_options_a_hint_names_exist_somewhere():
    """A hint that names an option with no command around it ("pass --x") must name one
    that some kubelab command has, unless it is about another tool."""
    known = _all_options(typer.main.get_command(app))
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.keyword) and node.arg == "hint"):
                continue
            for line, text in _texts(node.value):
                if EXTERNAL.search(text):
                    continue
                for option in OPTION.findall(text):
                    if option not in known:
                        wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {option}")
    assert wrong == []
