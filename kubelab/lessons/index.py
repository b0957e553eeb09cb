"""The lesson catalogue's listing for ``kubelab lessons``, kept between runs.

Reading and validating every lesson (YAML, then msgspec, then the files each points at)
is most of what ``kubelab lessons`` would spend. The listing of the built-in lessons (id, title,
components, number of exercises) is kept in kubelab's cache (:mod:`kubelab.cache`) under
a fingerprint of everything validation reads: the lesson folders, the charts and the app
they point at, and kubelab's own code and data. When one of those files changes, appears
or goes, the lessons are validated again, and an invalid lesson is reported exactly as
without the cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubelab import cache, paths

_PACKAGE = Path(__file__).resolve().parents[1]


def _roots() -> list[Path]:
    data = paths.data_root()
    roots = [_PACKAGE, paths.labs_dir(), paths.charts_dir(), data / "app_backend"]
    unique: list[Path] = []
    for root in roots:
        if root not in unique and not any(root.is_relative_to(u) for u in unique):
            unique.append(root)
    return unique


def lesson_listing() -> list[dict[str, Any]]:
    """The built-in lessons: ``id``, ``title`` (per language), ``components``, ``exercises``.

    Raises what :func:`~kubelab.lessons.loader.available_lessons` raises when a lesson is
    invalid (nothing is kept then).
    """
    key = cache.files_fingerprint(_roots())
    cached = cache.read("lessons", key)
    if cached is not None:
        try:
            listing: list[dict[str, Any]] = json.loads(cached)
            return listing
        except ValueError:
            pass
    from kubelab.lessons.loader import available_lessons

    lessons = [
        {
            "id": loaded.lesson.id,
            "title": {"en": loaded.lesson.title.en, "pt": loaded.lesson.title.pt},
            "components": list(loaded.lesson.components),
            "exercises": len(loaded.lesson.exercises),
        }
        for loaded in available_lessons()
    ]
    cache.write("lessons", key, json.dumps(lessons))
    return lessons
