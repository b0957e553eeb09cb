"""Languages of lesson text (pt-BR and en) and the choice of one.

CLI messages are English; lesson text (titles, instructions, hints) exists in both
languages and is shown in the one chosen by ``--lang``, else ``KUBELAB_LANG``, else
the locale in ``LC_ALL``/``LC_MESSAGES``/``LANG``, falling back to English.
"""

from __future__ import annotations

import os
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
