"""Results of pure, repeatable work kept between runs, under ``$KUBELAB_HOME/cache``.

Rendering a chart with ``helm template``, validating an object against its schema and
validating the built-in lessons give the same answer for the same inputs. Each result is
stored under a digest of everything it depends on (the inputs themselves, and the size
and modification time of every file read to produce it), so an entry is used only for
exactly the inputs it was made from: a change anywhere is a different key, never a stale
answer. Failures are not stored. The cache is best effort: an unreadable or unwritable
one costs the work again and nothing else. ``MAX_ENTRIES`` bounds each kind.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from kubelab import __version__, paths

MAX_ENTRIES = 256


def digest(*parts: str) -> str:
    """A hex digest of ``parts`` (and kubelab's version), unambiguous about boundaries."""
    h = hashlib.sha256(__version__.encode())
    for part in parts:
        data = part.encode("utf-8", "surrogateescape")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def files_fingerprint(roots: Iterable[Path]) -> str:
    """The name, size and modification time of every file under ``roots`` (bytecode
    caches left out), as one digest; a root that is a file counts as itself."""
    lines: list[str] = []
    for root in roots:
        lines.append(f"root {root}")
        if root.is_file():
            stat = root.stat()
            lines.append(f"{root}\0{stat.st_size}\0{stat.st_mtime_ns}")
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                try:
                    stat = os.stat(os.path.join(folder, name))
                except OSError:
                    continue
                lines.append(f"{folder}/{name}\0{stat.st_size}\0{stat.st_mtime_ns}")
    return digest(*lines)


def _folder(kind: str) -> Path:
    return paths.home_dir() / "cache" / kind


def read(kind: str, key: str) -> str | None:
    """The text stored for ``key``, or None."""
    try:
        return (_folder(kind) / key).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def write(kind: str, key: str, text: str) -> None:
    """Store ``text`` for ``key`` (atomically; the oldest entries go past MAX_ENTRIES)."""
    try:
        folder = _folder(kind)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = folder / f".{key}.{os.getpid()}"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(folder / key)
        entries = list(folder.iterdir())
        if len(entries) > MAX_ENTRIES:
            by_age = sorted(entries, key=lambda p: p.stat().st_mtime_ns)
            for old in by_age[: len(entries) - MAX_ENTRIES]:
                old.unlink(missing_ok=True)
    except OSError:
        pass
