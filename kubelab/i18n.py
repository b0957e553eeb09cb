"""Languages (pt-BR and en): the choice of one, and the CLI's message catalog.

Lesson text (titles, instructions, hints) exists in both languages in the lesson files.
The CLI's own messages are written in English in the code and translated through a
gettext catalog: ``kubelab/locale/pt_BR/LC_MESSAGES/kubelab.po`` (the source) compiled
to ``kubelab.mo`` beside it. Mark a message with :func:`_` (a literal string with
``{named}`` placeholders, formatted after translation), then, with Babel (a dev tool)::

    pybabel extract --sort-output -k _ --no-default-keywords --no-location \
        -o /tmp/kubelab.pot kubelab
    pybabel update -i /tmp/kubelab.pot -d kubelab/locale -D kubelab --no-fuzzy-matching
    # translate the new entries in the .po, then
    pybabel compile -d kubelab/locale -D kubelab

``tests/unit/test_messages.py`` fails when a message has no translation, a placeholder
differs, the ``.mo`` is stale or the catalog keeps a message the code lost. Student
commands (exercise, hint, check, progress), error labels and the messages and hints of
the checks (kubelab/checks) are translated; commands inside a hint, Kubernetes kinds and
field names, and texts quoted from a controller (Argo Rollouts' phase messages, Flagger's
events, an answer's body) stay as they are.

The language is the one chosen by ``--lang``, else ``KUBELAB_LANG``, else the locale in
``LC_ALL``/``LC_MESSAGES``/``LANG``, falling back to English.
"""

from __future__ import annotations

import gettext
import os
from pathlib import Path
from typing import Literal

Lang = Literal["pt", "en"]
LANGS: tuple[Lang, ...] = ("pt", "en")


def detect_lang(explicit: str | None = None) -> Lang:
    """The language to show lesson text in."""
    candidates = [explicit, os.environ.get("KUBELAB_LANG")]
    candidates += [os.environ.get(v) for v in ("LC_ALL", "LC_MESSAGES", "LANG")]
    for value in candidates:
        if not value:
            continue
        code = value.split(".")[0].split("_")[0].split("-")[0].lower()
        if code == "pt":
            return "pt"
        if code == "en":
            return "en"
        if value is explicit:
            # An explicit but unknown language is a usage error reported by the CLI.
            raise ValueError(value)
    return "en"


LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "kubelab"
_GETTEXT_LANGS = {"pt": "pt_BR"}
_current: gettext.NullTranslations = gettext.NullTranslations()


def use(lang: Lang) -> None:
    """Translate the CLI's messages into ``lang`` from now on."""
    global _current
    code = _GETTEXT_LANGS.get(lang)
    _current = (
        gettext.translation(DOMAIN, localedir=LOCALE_DIR, languages=[code], fallback=True)
        if code
        else gettext.NullTranslations()
    )


def _(message: str) -> str:
    """``message`` in the chosen language (a catalog entry; the English text otherwise)."""
    return _current.gettext(message)
