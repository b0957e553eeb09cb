"""The CLI's message catalog: every message marked with ``_()`` has a pt-BR translation
with the same placeholders, the compiled ``.mo`` matches the ``.po``, and nothing in the
catalog is left over from messages the code no longer has."""

from __future__ import annotations

import ast
import gettext
import re
import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po

from kubelab import i18n

PACKAGE = Path(i18n.__file__).resolve().parent
PO = PACKAGE / "locale" / "pt_BR" / "LC_MESSAGES" / "kubelab.po"
MO = PO.with_suffix(".mo")
PLACEHOLDER = re.compile(r"\{(\w*)[^}]*\}")


def marked_messages() -> dict[str, str]:
    """msgid -> where, for every ``_("...")`` call in the package."""
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "_"
                and node.args
            ):
                arg = node.args[0]
                assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), (
                    f"{path}:{node.lineno}: _() needs a literal string (gettext cannot "
                    "look up a computed one)"
                )
                found.setdefault(arg.value, f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return found


def catalog() -> dict[str, str]:
    with PO.open("rb") as fh:
        po = read_po(fh)
    assert not po.fuzzy
    return {m.id: m.string for m in po if m.id and "fuzzy" not in m.flags}


def test_every_marked_message_has_a_translation():
    marked = marked_messages()
    assert len(marked) > 30
    translations = catalog()
    missing = [
        f"{where}: {msgid!r}" for msgid, where in marked.items() if not translations.get(msgid)
    ]
    assert missing == []


def test_translations_keep_the_placeholders():
    for msgid, msgstr in catalog().items():
        assert sorted(PLACEHOLDER.findall(msgid)) == sorted(PLACEHOLDER.findall(msgstr)), msgid


def test_the_catalog_has_no_message_the_code_lost():
    assert sorted(set(catalog()) - set(marked_messages())) == []


def test_the_compiled_catalog_matches_its_source():
    with MO.open("rb") as fh:
        compiled = gettext.GNUTranslations(fh)
    for msgid, msgstr in catalog().items():
        assert compiled.gettext(msgid) == msgstr, f"stale {MO.name}: pybabel compile"


def _check_without_a_lesson(home: Path, lang: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", "from kubelab.cli.main import run; run()", "--lang", lang, "check"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"KUBELAB_HOME": str(home), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    return proc.stderr


def test_the_cli_speaks_portuguese_when_asked(tmp_path):
    portuguese = _check_without_a_lesson(tmp_path, "pt")
    assert "erro: nenhuma aula está rodando" in portuguese
    assert "dica: Inicie uma" in portuguese
    assert "error: no lesson is running" in _check_without_a_lesson(tmp_path, "en")


def test_check_results_speak_the_chosen_language():
    """A check's message comes from the catalog too (here field-equals, from core)."""
    from kubelab.checks import types
    from kubelab.checks.registry import CheckContext
    from kubelab.checks.runner import run_check

    class OneObject:
        def get(self, api_version, kind, name, namespace=None):
            return {"metadata": {"name": name, "uid": "u"}, "spec": {"replicas": 2}}

    spec = types.FieldEquals(
        kind="Deployment",
        api_version="apps/v1",
        name="app",
        namespace="istio",
        jsonpath="{.spec.replicas}",
        equals=3,
    )
    ctx = CheckContext(kube=OneObject(), sampler=lambda spec: None)  # type: ignore[arg-type]
    try:
        i18n.use("pt")
        assert run_check(spec, ctx).message == (
            "Deployment istio/app: {.spec.replicas} é 2, esperado 3"
        )
    finally:
        i18n.use("en")
    assert run_check(spec, ctx).message == "Deployment istio/app: {.spec.replicas} is 2, expected 3"
