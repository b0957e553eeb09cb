"""A local chart source: the catalog's pinned charts as archives in one folder.

``kubelab charts pull DIR`` fills the folder (:func:`pull_charts`): one ``helm pull`` per
release of the lessons' components, at the catalog's exact version and repository, and an
index, ``charts.json``, naming for each release the chart, version and repository it came
from, the archive's file name and its sha256. A re-run downloads only what is missing or
different. ``kubelab up --charts DIR`` then installs from the folder instead of the
repositories (:meth:`LocalCharts.archives`): before anything is installed every archive is
checked against the index (sha256) and against the catalog (its own ``Chart.yaml`` name and
version), so a class installs exactly the pinned charts without reaching the chart
repositories (poor internet, air-gapped clusters).

This module decides what is where; ``helm pull`` itself runs in
``kubelab.cluster.helm.pull_chart`` (the caller passes it in as the ``puller``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from kubelab.cluster.helm import packaged_chart_metadata
from kubelab.components import catalog
from kubelab.components.catalog import Release
from kubelab.errors import KubelabError, SetupError

INDEX_FILE = "charts.json"
INDEX_FORMAT = 1

#: ``(release, folder) -> archive``: downloads ``release``'s chart into the empty ``folder``.
Puller = Callable[[Release, Path], Path]
#: ``(release, status, detail)``: ``status`` is pulling, pulled, replaced, present or failed.
PullProgress = Callable[[Release, str, str], None]

Action = Literal["pulled", "replaced", "present", "failed"]


def archive_name(release: Release) -> str:
    """The file ``helm pull`` saves ``release``'s chart as: ``<chart>-<version>.tgz``."""
    return f"{release.chart}-{release.version}.tgz"


def sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def lesson_releases(components: Iterable[str], tls: bool = False) -> list[Release]:
    """The releases of ``components`` (dependencies included) in install order; with
    ``tls`` also cert-manager's, which ``kubelab up --tls`` adds."""
    names = list(dict.fromkeys(components))
    if tls and "cert-manager" not in names:
        names.append("cert-manager")
    return catalog.release_order(catalog.install_order(names))


def pull_command(directory: Path, lessons: Iterable[str], tls: bool = False) -> str:
    """The ``kubelab charts pull`` command that fills ``directory`` for ``lessons``."""
    parts = ["kubelab", "charts", "pull", str(directory), *lessons]
    if tls:
        parts.append("--tls")
    return " ".join(parts)


# -- the index -------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexEntry:
    """One release's chart in the folder: where it came from, its file and digest."""

    release: str
    chart: str
    version: str
    repo: str
    file: str
    sha256: str

    def pins(self, release: Release) -> bool:
        """Whether this is the chart the catalog pins for ``release``."""
        return (self.release, self.chart, self.version, self.repo) == (
            release.name,
            release.chart,
            release.version,
            release.repo,
        )


def read_index(directory: Path) -> dict[str, IndexEntry]:
    """The index of ``directory`` by release name; ``{}`` when there is none yet.

    Raises ``SetupError`` naming the file when it exists but cannot be read."""
    path = directory / INDEX_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
            raise ValueError(f"not format {INDEX_FORMAT}")
        entries = [IndexEntry(**{k: str(item[k]) for k in _FIELDS}) for item in data["charts"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SetupError(
            f"{path} is not a kubelab chart index ({type(exc).__name__}: {exc})",
            hint=f"Run `kubelab charts pull {directory}` again: it rewrites the index.",
        ) from None
    return {e.release: e for e in entries}


_FIELDS = ("release", "chart", "version", "repo", "file", "sha256")


def write_index(directory: Path, entries: dict[str, IndexEntry]) -> Path:
    """Write the index atomically (a reader never sees half of it)."""
    path = directory / INDEX_FILE
    data = {
        "format": INDEX_FORMAT,
        "written_by": "kubelab charts pull",
        "charts": [asdict(entries[name]) for name in sorted(entries)],
    }
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{INDEX_FILE}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(data, indent=2) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def _problem(directory: Path, release: Release, entry: IndexEntry | None) -> str | None:
    """Why the folder does not hold the pinned chart of ``release`` (None: it does)."""
    what = f"chart {release.chart} {release.version} (release {release.name})"
    if entry is None:
        return f"{directory / archive_name(release)}: {what} is not in {INDEX_FILE}"
    if not entry.pins(release):
        return (
            f"{directory / entry.file}: {INDEX_FILE} has chart {entry.chart} {entry.version} "
            f"from {entry.repo} for release {release.name}; kubelab pins {release.chart} "
            f"{release.version} from {release.repo}"
        )
    path = directory / entry.file
    if not path.is_file():
        return f"{path}: missing ({what}, listed in {INDEX_FILE})"
    digest = sha256_file(path)
    if digest != entry.sha256:
        return (
            f"{path}: sha256 {digest[:12]}… differs from {entry.sha256[:12]}… in {INDEX_FILE} "
            "(changed or damaged since it was pulled)"
        )
    try:
        meta = packaged_chart_metadata(path)
    except SetupError as exc:
        return exc.message
    found = (str(meta.get("name")), str(meta.get("version")))
    if found != (release.chart, release.version):
        return f"{path}: holds chart {found[0]} {found[1]}, not {release.chart} {release.version}"
    return None


# -- pulling ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PullResult:
    """What :func:`pull_charts` did for one release."""

    release: Release
    action: Action
    seconds: float
    entry: IndexEntry | None = None
    error: str | None = None
    hint: str = ""  # with an error: what to do about it
    note: str = ""  # why an archive was replaced

    def to_json(self) -> dict[str, Any]:
        r = self.release
        out: dict[str, Any] = {
            "release": r.name,
            "chart": r.chart,
            "version": r.version,
            "repo": r.repo,
            "action": self.action,
            "file": self.entry.file if self.entry else None,
            "sha256": self.entry.sha256 if self.entry else None,
            "seconds": round(self.seconds, 2),
        }
        if self.error:
            out["error"] = self.error
        if self.note:
            out["note"] = self.note
        return out


def _quiet(release: Release, status: str, detail: str) -> None:
    pass


def pull_charts(
    directory: Path,
    releases: Iterable[Release],
    puller: Puller,
    progress: PullProgress = _quiet,
) -> list[PullResult]:
    """Make ``directory`` hold the pinned chart of every release in ``releases``.

    A release whose archive is already there, listed in the index with the right pin and
    digest, is left alone. Others are pulled into a private folder beside the index, checked
    (the archive's own name and version are the pin) and moved into place; the index is
    rewritten after each, so an interrupted run keeps what it finished; the archive of an
    older pin that the index no longer names is deleted. A failed pull does
    not stop the others: every failure is reported at the end, in one ``SetupError``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    try:
        index = read_index(directory)
        unreadable = ""
    except SetupError as exc:
        index, unreadable = {}, exc.message  # rewritten below; every chart is checked again
    results: list[PullResult] = []
    for release in releases:
        started = time.monotonic()
        previous = index.get(release.name)
        problem = unreadable or _problem(directory, release, previous)
        if problem is None and previous is not None:
            results.append(PullResult(release, "present", time.monotonic() - started, previous))
            progress(release, "present", previous.file)
            continue
        # Something was there for this release (an older pin, a damaged file): say so.
        replaced = previous is not None or (directory / archive_name(release)).exists()
        progress(release, "pulling", release.repo)
        try:
            entry = _pull_one(directory, release, puller)
        except KubelabError as exc:
            seconds = time.monotonic() - started
            results.append(
                PullResult(release, "failed", seconds, error=exc.message, hint=exc.hint or "")
            )
            progress(release, "failed", exc.message)
            continue
        index[release.name] = entry
        write_index(directory, index)
        # The archive kubelab saved for an older pin, if nothing refers to it any more.
        if previous is not None and all(e.file != previous.file for e in index.values()):
            (directory / previous.file).unlink(missing_ok=True)
        action: Action = "replaced" if replaced else "pulled"
        note = (problem or "") if replaced else ""
        seconds = time.monotonic() - started
        results.append(PullResult(release, action, seconds, entry, note=note))
        progress(release, action, f"{entry.file} ({seconds:.1f}s)")
    failed = [r for r in results if r.action == "failed"]
    if len(failed) == 1:
        raise SetupError(str(failed[0].error), hint=failed[0].hint or None)
    if failed:
        kept = len(results) - len(failed)
        keeping = f": the {kept} charts already in {directory} are kept" if kept else ""
        raise SetupError(
            f"could not download {len(failed)} of {len(results)} charts into {directory}",
            details=[f"{r.release.name}: {r.error}" for r in failed],
            hint=f"Check that this machine reaches {', '.join(_repos(failed))} (a proxy "
            f"needs HTTPS_PROXY), then run the same command again{keeping}.",
        )
    return results


def _repos(results: list[PullResult]) -> list[str]:
    return list(dict.fromkeys(r.release.repo for r in results))


def _pull_one(directory: Path, release: Release, puller: Puller) -> IndexEntry:
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=".pull-"))
    try:
        archive = puller(release, staging)
        meta = packaged_chart_metadata(archive)
        found = (str(meta.get("name")), str(meta.get("version")))
        if found != (release.chart, release.version):
            raise SetupError(
                f"{release.repo} served chart {found[0]} {found[1]} when asked for "
                f"{release.chart} {release.version} (release {release.name})",
                hint="Check the repository's index.yaml; nothing was saved for this chart.",
            )
        target = directory / archive.name
        os.replace(archive, target)
        os.chmod(target, 0o644)
        return IndexEntry(
            release.name,
            release.chart,
            release.version,
            release.repo,
            target.name,
            sha256_file(target),
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -- installing from the folder ----------------------------------------------------------------


def lesson_archives(
    directory: Path, lesson_id: str, components: Iterable[catalog.Component], tls: bool = False
) -> dict[str, Path]:
    """The checked archive of each release of ``components`` in ``directory``: what
    ``kubelab up LESSON --charts DIR`` installs (and ``--dry-run`` plans), with the command
    that fetches them quoted when some are missing."""
    releases = [r for c in components for r in c.releases]
    hint = pull_command(directory, [lesson_id], tls=tls)
    return LocalCharts(directory, hint).archives(releases)


@dataclass(frozen=True)
class LocalCharts:
    """A folder filled by ``kubelab charts pull``, as the components' chart source."""

    directory: Path
    # The command that fills the folder, quoted in errors (``pull_command``).
    pull_hint: str = ""

    def archives(self, releases: Iterable[Release]) -> dict[str, Path]:
        """The checked archive of every release, by release name.

        Raises one ``SetupError`` naming every archive that is missing, not in the index,
        of another chart or version than the pin, or whose sha256 differs from the index
        (one detail line each), with the command that downloads them."""
        releases = list(releases)
        hint = (
            f"Run `{self.pull_hint or pull_command(self.directory, [])}` where the chart "
            "repositories are reachable: it downloads what is missing or different and "
            "keeps the rest."
        )
        if not (self.directory / INDEX_FILE).is_file():
            raise SetupError(
                f"{self.directory / INDEX_FILE} is missing: {self.directory} is not a chart "
                "folder made by `kubelab charts pull`",
                hint=hint,
            )
        index = read_index(self.directory)
        problems = [
            p for r in releases if (p := _problem(self.directory, r, index.get(r.name))) is not None
        ]
        if problems:
            raise SetupError(
                problems[0]
                if len(problems) == 1
                else f"{len(problems)} of {len(releases)} charts are not usable in "
                f"{self.directory}",
                details=problems if len(problems) > 1 else [],
                hint=hint,
            )
        return {r.name: self.directory / index[r.name].file for r in releases}
