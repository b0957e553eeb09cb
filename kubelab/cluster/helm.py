"""helm: rendering charts locally (``helm template``) and managing releases (pyhelm3).

Rendering is what ``kubelab up --dry-run`` and ``kubelab validate --render`` need; it
touches no cluster. A values-schema or template failure becomes a ``ValidationFailed``
whose details are helm's own lines.

Releases go through :class:`HelmClient`, a synchronous face on pyhelm3 (which is async):
each call runs on a private event loop (``asyncio.run``; a worker thread when the caller
is itself inside a loop), so the component installer's threads can install in parallel.

**Skipping unchanged releases.** A second ``kubelab up`` must not run ``helm upgrade``.
:meth:`HelmClient.ensure_release` computes a fingerprint of what it would deploy (chart
name, repository, version, the values, and for a chart on disk a digest of its files)
and writes it into the revision's description (``helm upgrade --description``), which
helm keeps with each revision and ``helm status`` returns. The release is left alone
when its current revision is ``deployed`` and carries the same fingerprint. Any other
hand on the release (``helm rollback``, a manual ``helm upgrade``) writes another
description, and then the deployed chart version and ``helm get values`` are compared
with what kubelab would deploy instead, upgrading when either differs. The fingerprint
is a one-way digest, so values (and their secrets) are never stored in clear by kubelab
nor read back on the fast path.

**Local charts.** :func:`pull_chart` saves a repository chart as the archive ``helm pull``
writes (``kubelab charts pull``), and ``ensure_release(..., archive=PATH)`` installs such an
archive instead of fetching the chart from its repository (``kubelab up --charts``). The
fingerprint still names the repository chart (name, repository, version): the caller has
checked that the archive is exactly that chart, so changing the source is not a change.

**Secrets.** Values reach helm on stdin (pyhelm3's ``--values -``), never on a command
line. Error messages quote helm's last error line with every secret value masked (string
values under keys such as password/token/secret, and any ``secrets`` the caller names),
and are raised ``from None`` so a ``--verbose`` traceback cannot show helm's raw output.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import re
import subprocess
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from kubelab import cache
from kubelab.errors import KubelabError, KubelabTimeout, SetupError, ValidationFailed
from kubelab.tools import require_tool
from kubelab.yamlio import LOADER, dump_yaml, load_all_yaml

TEMPLATE_TIMEOUT = 60.0

T = TypeVar("T")

log = logging.getLogger(__name__)


def template(
    chart: Path, release: str, namespace: str, values: dict[str, Any]
) -> list[dict[str, Any]]:
    """Objects of ``chart`` rendered with ``values`` (``helm template``), in helm's order.

    A rendering is a function of the helm binary, the chart's files and the arguments, and
    is kept in kubelab's cache under a digest of all of them (:mod:`kubelab.cache`),
    unless a value or an object is a secret (secrets are never written to disk by us).
    """
    helm = require_tool("helm")
    values_yaml = dump_yaml(values)
    binary = helm.stat()
    key = cache.digest(
        f"{helm}\0{binary.st_size}\0{binary.st_mtime_ns}",
        cache.files_fingerprint([chart]),
        release,
        namespace,
        values_yaml,
    )
    cacheable = not secret_strings(values)
    rendered = cache.read("helm-template", key) if cacheable else None
    if rendered is not None:
        return load_all_yaml(rendered)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="kubelab-values-") as fh:
        fh.write(values_yaml)
        fh.flush()
        cmd = [str(helm), "template", release, str(chart), "--namespace", namespace]
        cmd += ["--values", fh.name]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=TEMPLATE_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise KubelabTimeout(
                f"helm template of {chart.name} did not finish in {TEMPLATE_TIMEOUT:.0f}s"
            ) from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        raise ValidationFailed(
            f"helm could not render chart {chart.name} for release {release}",
            details=[f"{chart.name}: {ln.removeprefix('Error: ')}" for ln in lines]
            or ["helm exited with no message"],
            hint="Fix the values in the lesson's deploy section.",
        )
    objects = load_all_yaml(proc.stdout)
    if cacheable and not any(o.get("kind") == "Secret" for o in objects):
        cache.write("helm-template", key, proc.stdout)
    return objects


# -- secrets ---------------------------------------------------------------------------------

MASK = "***"
# Keys whose whole value is secret, however deep (a password, a token, a Secret's data).
_SECRET_KEY = re.compile(
    r"pass(word|wd)?|secret|token|credential|api[-_]?key|private[-_]?key|htpasswd",
    re.IGNORECASE,
)
# Keys that name a secret only when they hold a value themselves: `auth: user:pass` or
# `tls.key: ...` are secrets, but `auth: {strategy: token}` is settings (Kiali's), shown in
# the plan as they are.
_SECRET_LEAF_KEY = re.compile(r"auth|(^|[-_.])key$", re.IGNORECASE)


def _is_secret_key(key: Any) -> bool:
    return isinstance(key, str) and _SECRET_KEY.search(key) is not None


def _is_secret(key: Any, value: Any) -> bool:
    """Whether ``value`` under ``key`` is a secret as a whole."""
    if _is_secret_key(key):
        return True
    leaf = not isinstance(value, Mapping | list)
    return leaf and isinstance(key, str) and _SECRET_LEAF_KEY.search(key) is not None


def secret_strings(values: Any, extra: Iterable[str] = ()) -> set[str]:
    """Every string value under a secret-looking key in ``values`` (any depth), plus
    ``extra``; what :func:`mask` hides."""
    found = {s for s in extra if s}

    def walk(node: Any, secret: bool) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, secret or _is_secret(key, value))
        elif isinstance(node, list):
            for item in node:
                walk(item, secret)
        elif secret and isinstance(node, str | int) and not isinstance(node, bool):
            text = str(node)
            # Masking "1" or "no" everywhere would garble every message.
            found.update([text] if len(text) >= 3 else [])

    walk(values, False)
    return found


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***`` (longest first, so a secret that
    contains another is masked whole)."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def mask_values(values: Any) -> Any:
    """A copy of ``values`` fit for logs: everything under a secret-looking key is ``***``."""
    if isinstance(values, Mapping):
        return {k: _mask_all(v) if _is_secret(k, v) else mask_values(v) for k, v in values.items()}
    if isinstance(values, list):
        return [mask_values(v) for v in values]
    return values


def _mask_all(values: Any) -> Any:
    if isinstance(values, Mapping):
        return {k: _mask_all(v) for k, v in values.items()}
    if isinstance(values, list):
        return [_mask_all(v) for v in values]
    return MASK


# -- fingerprints ----------------------------------------------------------------------------

FINGERPRINT_KEY = "kubelab-fingerprint"
_FINGERPRINT_RE = re.compile(rf"{FINGERPRINT_KEY}=([0-9a-f]{{16,64}})")


def _normal(values: Any) -> Any:
    """``values`` as helm stores them: through JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(values, default=str))


def chart_digest(path: Path) -> str:
    """A digest of a chart on disk (a directory's files, or a packaged archive), so an
    edited template redeploys even when the chart's version was not bumped."""
    sha = hashlib.sha256()
    if path.is_file():
        sha.update(path.read_bytes())
        return sha.hexdigest()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        sha.update(str(file.relative_to(path)).encode() + b"\0")
        sha.update(file.read_bytes())
    return sha.hexdigest()


def fingerprint(
    chart: str, repo: str | None, version: str | None, values: Any, chart_files: str = ""
) -> str:
    """The digest of one deployment of a chart: what :meth:`HelmClient.ensure_release`
    stores in the revision description and compares next time."""
    payload = {
        "chart": chart,
        "repo": repo or "",
        "version": version or "",
        "files": chart_files,
        "values": _normal(values),
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def description_fingerprint(description: str | None) -> str | None:
    """The fingerprint kubelab wrote into a revision's description, if it did."""
    match = _FINGERPRINT_RE.search(description or "")
    return match.group(1) if match else None


# -- results ---------------------------------------------------------------------------------

Action = Literal["installed", "upgraded", "unchanged"]


@dataclass(frozen=True)
class Result:
    """What :meth:`HelmClient.ensure_release` did, and the release's revision after it."""

    action: Action
    revision: int


@dataclass(frozen=True)
class ReleaseInfo:
    """One helm release as ``helm list``/``helm status`` describe it."""

    name: str
    namespace: str
    revision: int
    status: str
    chart: str
    chart_version: str | None
    app_version: str | None = None
    updated: str = ""
    description: str = ""


_CHART_VERSION = re.compile(r"^(?P<name>.+)-(?P<version>v?\d+\.\d+\.\d+\S*)$")


def split_chart(chart: str) -> tuple[str, str | None]:
    """``istiod-1.24.2`` (helm list's chart column) -> (``istiod``, ``1.24.2``)."""
    match = _CHART_VERSION.match(chart)
    if not match:
        return chart, None
    return match.group("name"), match.group("version")


def _duration(seconds: float) -> str:
    # helm's --timeout is a Go duration: a bare number ("300") is rejected.
    return f"{max(round(seconds), 1)}s"


def _run_bounded(make: Callable[[], Awaitable[T]], limit: float) -> T:
    """Run the coroutine ``make()`` to completion on a private loop, cancelling it
    (pyhelm3 then terminates helm) after ``limit`` seconds."""
    # Imported here: this module is on the CLI's fast paths (load_all_yaml, template).
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    async def bounded() -> T:
        return await asyncio.wait_for(make(), limit)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(bounded())
    # asyncio.run cannot nest inside a running loop: give the call its own thread.
    with ThreadPoolExecutor(1, thread_name_prefix="kubelab-helm") as pool:
        return pool.submit(asyncio.run, bounded()).result()


# -- packaged charts -------------------------------------------------------------------------


def packaged_chart_metadata(archive: Path) -> dict[str, Any]:
    """The ``Chart.yaml`` of a packaged chart (``<name>/Chart.yaml`` in the .tgz helm
    writes); raises ``SetupError`` naming the file when it is not one."""
    import tarfile  # only for local chart sources

    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = member.name.strip("/").split("/")
                if len(parts) == 2 and parts[1] == "Chart.yaml" and member.isfile():
                    handle = tar.extractfile(member)
                    loaded = yaml.load(handle.read() if handle else b"", Loader=LOADER)
                    if isinstance(loaded, dict):
                        return loaded
                    break
    except (OSError, tarfile.TarError, yaml.YAMLError) as exc:
        raise SetupError(
            f"{archive} is not a packaged Helm chart: {exc}",
            hint="Delete it and download it again (`kubelab charts pull`).",
        ) from None
    raise SetupError(
        f"{archive} is not a packaged Helm chart: it has no <chart>/Chart.yaml",
        hint="Delete it and download it again (`kubelab charts pull`).",
    )


def pull_chart(
    helm_bin: Path,
    chart: str,
    repo: str,
    version: str,
    destination: Path,
    *,
    timeout: float = 300.0,
) -> Path:
    """``helm pull CHART --repo REPO --version VERSION`` into ``destination`` (a folder
    that should hold nothing else); returns the archive helm saved there.

    Goes through pyhelm3's ``Command`` (its ``Client.pull_chart`` only unpacks, and the
    archive itself is what a local chart source keeps). Failures are a ``SetupError``
    naming the chart, its version and the repository; a helm still running after
    ``timeout`` seconds is stopped (``KubelabTimeout``).
    """
    pyhelm3_command = importlib.import_module("pyhelm3.command")
    errors = importlib.import_module("pyhelm3.errors")
    what = f"chart {chart} {version} from {repo}"
    if not helm_bin.is_file():
        raise SetupError(
            f"cannot run helm at {helm_bin}: no such file",
            hint="Run `kubelab tools install`, or put helm 3 on PATH.",
        )
    destination.mkdir(parents=True, exist_ok=True)
    command = pyhelm3_command.Command(executable=str(helm_bin))
    args = ["pull", chart, "--repo", repo, "--version", version, "--destination", destination]

    async def pull() -> bytes:
        return bytes(await command.run(args))

    try:
        _run_bounded(pull, timeout)
    except TimeoutError:
        raise KubelabTimeout(
            f"timed out downloading {what} ({_duration(timeout)})",
            hint=f"Is {repo} slow or unreachable from here? Run the same command again: "
            "charts already downloaded are kept.",
        ) from None
    except errors.Error as exc:
        raw = exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else ""
        lines = [ln.strip() for ln in raw.splitlines() if ln.strip()]
        last = lines[-1].removeprefix("Error: ") if lines else f"helm exited with {exc.returncode}"
        if isinstance(exc, errors.ChartNotFoundError):
            hint = (
                f"{repo} has no chart {chart} at version {version}: check the pin in "
                "kubelab/components/catalog.py against the repository's index.yaml."
            )
        else:
            hint = (
                f"Check that this machine reaches {repo} (a proxy needs HTTPS_PROXY), then "
                "run the same command again: charts already downloaded are kept."
            )
        raise SetupError(
            f"could not download {what}: {last}", hint=hint, details=lines[-5:-1]
        ) from None
    archives = sorted(destination.glob("*.tgz"))
    if len(archives) != 1:
        raise SetupError(
            f"helm pull of {what} left {len(archives)} archives in {destination}, not one",
            hint="Pull into an empty folder.",
        )
    return archives[0]


@dataclass(frozen=True)
class _Chart:
    """The chart as asked for: its reference for helm, and its name/version if known."""

    ref: str | Path
    repo: str | None
    name: str
    version: str | None
    files: str  # digest of a chart on disk, "" for repository charts


class HelmClient:
    """Releases on one cluster, through pyhelm3 and the ``helm`` binary at ``helm_bin``.

    ``timeout`` (seconds) is the default for helm's own ``--timeout``; a helm process
    still running ``grace`` seconds after that is stopped and the call times out.
    """

    def __init__(
        self,
        kubeconfig: Path,
        helm_bin: Path,
        *,
        context: str | None = None,
        timeout: float = 300.0,
        grace: float = 60.0,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.helm_bin = helm_bin
        self.context = context
        self.timeout = timeout
        self.grace = grace
        self._client: Any = None
        # The component installer calls from several threads at once; make one Client.
        self._lock = threading.Lock()

    # -- the async bridge ------------------------------------------------------------------

    def client(self) -> Any:
        """The pyhelm3 ``Client`` (made on first use: it runs ``helm version``)."""
        with self._lock:
            if self._client is None:
                pyhelm3 = importlib.import_module("pyhelm3")
                try:
                    self._client = pyhelm3.Client(
                        executable=str(self.helm_bin),
                        kubeconfig=self.kubeconfig,
                        kubecontext=self.context,
                        default_timeout=_duration(self.timeout),
                    )
                except (AssertionError, OSError, subprocess.CalledProcessError, ValueError) as exc:
                    raise SetupError(
                        f"cannot run helm at {self.helm_bin}: {type(exc).__name__}",
                        hint="Run `kubelab tools install`, or put helm 3 on PATH.",
                    ) from exc
            return self._client

    def _run(self, make: Callable[[], Awaitable[T]], limit: float) -> T:
        return _run_bounded(make, limit)

    # -- releases --------------------------------------------------------------------------

    def _chart(self, chart: str | Path, repo: str | None, version: str | None) -> _Chart:
        path = Path(chart)
        if repo is None and not str(chart).startswith("oci://") and path.exists():
            path = path.resolve()
            meta: dict[str, Any] = {}
            chart_yaml = path / "Chart.yaml"
            if chart_yaml.is_file():
                loaded = yaml.load(chart_yaml.read_text(encoding="utf-8"), Loader=LOADER)
                meta = loaded if isinstance(loaded, dict) else {}
            elif path.is_file():
                meta = packaged_chart_metadata(path)
            name = str(meta.get("name") or path.name)
            found = meta.get("version")
            return _Chart(path, None, name, str(found) if found else version, chart_digest(path))
        name = str(chart).rstrip("/").rsplit("/", 1)[-1]
        return _Chart(str(chart), repo, name, version, "")

    def ensure_release(
        self,
        name: str,
        chart: str | Path,
        repo: str | None = None,
        version: str | None = None,
        namespace: str = "default",
        values: Mapping[str, Any] | None = None,
        wait: bool = True,
        timeout: float | None = None,
        *,
        secrets: Iterable[str] = (),
        archive: Path | None = None,
    ) -> Result:
        """Install or upgrade release ``name`` of ``chart`` (a path, or a chart name in
        ``repo``, or an ``oci://`` reference) at ``version`` with ``values``, unless the
        deployed revision already is exactly that (see the module docstring).

        ``archive``: a packaged copy of that repository chart (as ``helm pull`` saved it,
        checked by the caller to be ``chart`` at ``version``), installed instead of
        fetching the chart from ``repo``; it leaves the fingerprint as it is."""
        values = dict(values or {})
        hidden = secret_strings(values, secrets)
        limit = self.timeout if timeout is None else timeout
        want = self._chart(chart, repo, version)
        digest = fingerprint(want.name, want.repo, want.version, values, want.files)
        what = f"release {name} (chart {want.name} {want.version or 'latest'})"
        # What helm is given: the archive (no repository to reach) or the chart as asked.
        ref, source_repo = (
            (archive.resolve(), None) if archive is not None else (want.ref, want.repo)
        )

        async def ensure() -> Result:
            client = self.client()
            current = await client.get_proceedable_revision(
                name, namespace=namespace, timeout=_duration(limit)
            )
            if current is not None and await self._up_to_date(current, want, values, digest):
                return Result("unchanged", int(current.revision))
            log.debug(
                "helm upgrade --install %s %s %s from %s values=%s",
                name,
                want.name,
                want.version,
                ref if archive is not None else (want.repo or want.ref),
                mask_values(values),
            )
            resolved = await client.get_chart(ref, repo=source_repo, version=want.version)
            revision = await client.install_or_upgrade_release(
                name,
                resolved,
                values,
                namespace=namespace,
                create_namespace=True,
                atomic=False,
                wait=wait,
                timeout=_duration(limit),
                description=f"kubelab {FINGERPRINT_KEY}={digest}",
            )
            return Result("installed" if current is None else "upgraded", int(revision.revision))

        return self._call(ensure, limit, "install", what, namespace, hidden)

    async def _up_to_date(self, current: Any, want: _Chart, values: Any, digest: str) -> bool:
        if str(getattr(current.status, "value", current.status)) != "deployed":
            return False  # failed, superseded...: deploy again
        stored = description_fingerprint(current.description)
        if stored is not None:
            return stored == digest
        # Somebody else wrote the latest revision (helm rollback, a manual upgrade): compare
        # what is observable. Without a known version there is nothing to compare with.
        if want.version is None or want.files:
            return False
        deployed = await current.chart_metadata()
        if deployed.name != want.name or str(deployed.version) != want.version:
            return False
        return bool(_normal(await current.values()) == _normal(values))

    def uninstall(
        self, name: str, namespace: str, wait: bool = True, timeout: float | None = None
    ) -> None:
        """Uninstall release ``name``; nothing happens when it does not exist."""
        limit = self.timeout if timeout is None else timeout

        async def uninstall() -> None:
            await self.client().uninstall_release(
                name, namespace=namespace, wait=wait, timeout=_duration(limit)
            )

        self._call(uninstall, limit, "uninstall", f"release {name}", namespace, set())

    def list_releases(self) -> list[ReleaseInfo]:
        """Every release in every namespace, whatever its status."""

        async def listing() -> list[ReleaseInfo]:
            found = await self.client().list_release_definitions(all=True, all_namespaces=True)
            out = []
            for item in found:
                chart, chart_version = split_chart(str(item.get("chart", "")))
                out.append(
                    ReleaseInfo(
                        name=str(item["name"]),
                        namespace=str(item["namespace"]),
                        revision=int(item.get("revision") or 0),
                        status=str(item.get("status", "")),
                        chart=chart,
                        chart_version=chart_version,
                        app_version=item.get("app_version") or None,
                        updated=str(item.get("updated", "")),
                    )
                )
            return out

        return self._call(listing, self.timeout, "list", "releases", None, set())

    def get_release(self, name: str, namespace: str) -> ReleaseInfo | None:
        """Release ``name``'s current revision, or None when there is no such release."""
        errors = importlib.import_module("pyhelm3.errors")

        async def get() -> ReleaseInfo | None:
            try:
                current = await self.client().get_current_revision(name, namespace=namespace)
            except errors.ReleaseNotFoundError:
                return None
            meta = await current.chart_metadata()
            return ReleaseInfo(
                name=name,
                namespace=namespace,
                revision=int(current.revision),
                status=str(getattr(current.status, "value", current.status)),
                chart=str(meta.name),
                chart_version=str(meta.version),
                app_version=getattr(meta, "app_version", None),
                updated=str(getattr(current, "updated", "") or ""),
                description=str(current.description or ""),
            )

        return self._call(get, self.timeout, "read", f"release {name}", namespace, set())

    # -- errors ----------------------------------------------------------------------------

    def _call(
        self,
        make: Callable[[], Awaitable[T]],
        limit: float,
        action: str,
        what: str,
        namespace: str | None,
        secrets: set[str],
    ) -> T:
        errors = importlib.import_module("pyhelm3.errors")
        where = f" in namespace {namespace}" if namespace else ""
        try:
            return self._run(make, limit + self.grace)
        except TimeoutError:
            raise KubelabTimeout(
                f"timed out waiting for helm to {action} {what}{where} "
                f"({_duration(limit + self.grace)}). Try: kubelab status --verbose"
            ) from None
        except errors.Error as exc:
            raise self._helm_error(exc, action, what, where, limit, secrets) from None

    @staticmethod
    def _helm_error(
        exc: Any, action: str, what: str, where: str, limit: float, secrets: set[str]
    ) -> KubelabError:
        errors = importlib.import_module("pyhelm3.errors")
        raw = exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else ""
        lines = [mask(ln.strip(), secrets) for ln in raw.splitlines() if ln.strip()]
        last = lines[-1].removeprefix("Error: ") if lines else f"helm exited with {exc.returncode}"
        lowered = raw.lower()
        if "timed out waiting for the condition" in lowered or "deadline exceeded" in lowered:
            return KubelabTimeout(
                f"timed out waiting for helm to {action} {what}{where} ({_duration(limit)}): "
                f"{last}. Try: kubelab status --verbose",
                details=lines[-5:],
            )
        hints: list[tuple[type[BaseException], str]] = [
            (
                errors.ChartNotFoundError,
                "Check the chart's name, repository and version in the component catalog, "
                "and that the repository is reachable.",
            ),
            (errors.ConnectionError, "Is the cluster reachable? `kubelab status` tells."),
            (
                errors.FailedToRenderChartError,
                "The chart rejected its values; `kubelab up --dry-run` renders it locally.",
            ),
            (
                errors.ResourceAlreadyExistsError,
                "An object of the chart already exists outside helm: delete it, then retry.",
            ),
            (
                errors.InvalidResourceError,
                "The cluster rejected an object of the chart; check the values and the "
                "cluster's version.",
            ),
        ]
        if "don't meet the specifications of the schema" in lowered:
            # pyhelm3 has no class for a values-schema failure; it is the values' fault.
            hints.insert(0, (errors.Error, hints[2][1]))
        hint = next(
            (text for cls, text in hints if isinstance(exc, cls)),
            "Run `helm status` on the release, or retry `kubelab up` (it resumes).",
        )
        return SetupError(
            f"helm could not {action} {what}{where}: {last}", hint=hint, details=lines[-5:]
        )
