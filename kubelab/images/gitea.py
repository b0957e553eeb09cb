"""Configure Gitea through its HTTP API, and ask its container registry about tags.

After the ``gitea`` component is installed, the images step needs four things from it: an
access token for the admin user (stored by the caller in a Kubernetes Secret, since Gitea
shows a token only once), the course's organization, a repository holding the demo app's
source (kaniko builds from it), and an answer to "is ``<org>/<image>:<tag>`` already in the
registry?" so that a re-run builds nothing. :func:`configure_gitea` does the first three,
:meth:`GiteaClient.tag_exists` the last.

Endpoints used (Gitea API v1, ``templates/swagger/v1_json.tmpl``):

* ``GET /version``; ``GET /user`` (is a stored token still valid?)
* ``GET|POST /users/{username}/tokens``, ``DELETE /users/{username}/tokens/{token}``
  (basic auth only; 201 ``{id, name, sha1, token_last_eight, scopes}``; 400 when the name
  is taken)
* ``GET /orgs/{org}``, ``POST /orgs`` (201; 422 when the name exists)
* ``GET /repos/{owner}/{repo}``, ``POST /orgs/{org}/repos`` (201; 409 when it exists)
* ``GET /repos/{owner}/{repo}/git/trees/{ref}?recursive=true`` (blob SHAs of the branch)
* ``POST /repos/{owner}/{repo}/contents`` (``repoChangeFiles``, Gitea >= 1.20: one commit for
  many files, 201), else ``POST|PUT /repos/{owner}/{repo}/contents/{filepath}`` one file at
  a time (201 create / 200 update with the blob ``sha``)
* registry (OCI distribution): ``HEAD /v2/{org}/{image}/manifests/{tag}``; a 401 names the
  token endpoint (``WWW-Authenticate: Bearer realm=".../v2/token"``), which answers
  ``{"token": ...}`` to basic auth.

Every call is idempotent as used: objects are looked up before they are created ("already
exists" answers count as success, in case of a race), and files whose git blob SHA already
matches are not sent, so a second run makes no write request at all. 429, 5xx, connection
errors and timeouts are retried with exponential backoff under a deadline; 401/403 become a
:class:`~kubelab.errors.SetupError` saying what to check. The password and every token are
masked out of every message and never logged.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from kubelab.errors import SetupError
from kubelab.retry import (
    NO_RETRY,
    RETRYABLE_STATUSES,
    RetryPolicy,
    Verdict,
    call_with_retry,
    parse_retry_after,
)

log = logging.getLogger(__name__)

# Scope names of Gitea >= 1.19 (models/auth/access_token_scope.go): write implies read.
# read:user lets a stored token be checked with GET /user.
DEFAULT_TOKEN_SCOPES: tuple[str, ...] = (
    "write:repository",
    "write:package",
    "write:organization",
    "read:user",
)

# Manifest types a tag may point at: single-platform images and multi-platform indexes, in
# their OCI and Docker flavours (docker push and kaniko produce the Docker ones).
MANIFEST_MEDIA_TYPES: tuple[str, ...] = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)

RETRY_STATUSES = RETRYABLE_STATUSES
MAX_BACKOFF = 8.0
# Gitea's change-files endpoint (one commit for many files) exists since 1.20.0 (PR #24887).
CHANGE_FILES_SINCE = (1, 20)
# Never pushed into the repository: caches and tooling, not source.
IGNORED_DIRS = frozenset(
    {".git", "__pycache__", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox"}
)
IGNORED_SUFFIXES = (".pyc", ".pyo")
TREE_PAGE_SIZE = 1000


def git_blob_sha(data: bytes) -> str:
    """The SHA-1 git gives a file's content (``git hash-object``): ``blob <len>\\0<data>``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def source_files(folder: Path) -> dict[str, bytes]:
    """Every regular file under ``folder`` by its POSIX path relative to it, caches skipped."""
    if not folder.is_dir():
        raise SetupError(
            f"cannot push {folder}: it is not a folder",
            hint="point the lesson's image context at the folder holding the Dockerfile",
        )
    files: dict[str, bytes] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part in IGNORED_DIRS for part in rel.parts) or path.name.endswith(IGNORED_SUFFIXES):
            continue
        if path.is_file() and not path.is_symlink():
            files[rel.as_posix()] = path.read_bytes()
    return files


@dataclass
class PushResult:
    """What :meth:`GiteaClient.push_tree` changed: nothing at all on a re-run."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    commits: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)


def _parse_version(text: str) -> tuple[int, int] | None:
    # Gitea answers "1.22.3"; Forgejo "7.0.0+gitea-1.21.11", whose API is Gitea's.
    match = re.search(r"gitea-(\d+)\.(\d+)", text) or re.match(r"v?(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _challenges(response: requests.Response) -> list[tuple[str, dict[str, str]]]:
    """``WWW-Authenticate`` challenges as (scheme, params); Gitea sends Bearer then Basic."""
    raw_headers = getattr(response.raw, "headers", None)
    values: list[str] = []
    if raw_headers is not None and hasattr(raw_headers, "getlist"):
        values = [str(v) for v in raw_headers.getlist("WWW-Authenticate")]
    if not values and response.headers.get("WWW-Authenticate"):
        values = [response.headers["WWW-Authenticate"]]
    out: list[tuple[str, dict[str, str]]] = []
    for value in values:
        # A proxy may have merged several challenges into one line.
        for part in re.split(r",\s*(?=[A-Za-z]+(?:\s|$))", value):
            scheme, _, rest = part.strip().partition(" ")
            if scheme:
                out.append((scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))))
    return out


class _Transient(Exception):
    """A failure worth another try: no answer, or an answer of ``RETRY_STATUSES``."""

    def __init__(self, response: requests.Response | None, failure: str) -> None:
        super().__init__(failure)
        self.response = response


def _classify(exc: BaseException) -> Verdict:
    if not isinstance(exc, _Transient):
        return NO_RETRY
    after = None
    if exc.response is not None and exc.response.status_code == 429:
        after = parse_retry_after(exc.response.headers.get("Retry-After"))
    return Verdict(True, after, str(exc))


class GiteaClient:
    """A small client for the parts of Gitea's API that kubelab needs.

    ``admin_password`` is needed to create tokens (Gitea accepts only basic auth there);
    with just a ``token`` every other call works. ``registry_url`` is where the container
    registry is reached (default ``base_url``: Gitea serves ``/v2/`` on its own host).
    ``sleep`` is injectable so tests wait for nothing.
    """

    def __init__(
        self,
        base_url: str,
        admin_user: str,
        admin_password: str | None = None,
        *,
        token: str | None = None,
        verify: bool | str = True,
        timeout: float = 10.0,
        retries: int = 4,
        deadline: float = 60.0,
        backoff: float = 0.5,
        registry_url: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        session: requests.Session | None = None,
    ) -> None:
        if not admin_password and not token:
            raise SetupError(
                f"no credentials for Gitea user {admin_user!r}",
                hint="pass the admin password (to create a token) or an existing token",
            )
        self.base_url = base_url.rstrip("/")
        self.api_url = self.base_url + "/api/v1"
        self.registry_url = (registry_url or self.base_url).rstrip("/")
        self.user = admin_user
        self._password = admin_password
        self._token = token
        self.verify = verify
        self.timeout = timeout
        # No jitter: one client per run, nothing to spread out, and tests see exact waits.
        self._policy = RetryPolicy(
            deadline=deadline,
            max_attempts=retries + 1,
            initial_delay=backoff,
            max_delay=MAX_BACKOFF,
            jitter=0.0,
            sleep=sleep,
        )
        self._session = session or requests.Session()
        self._secrets: set[str] = set()
        self._remember_secret(admin_password)
        self._remember_secret(token)
        self._version: tuple[int, int] | None = None
        self._registry_tokens: dict[str, str] = {}

    def __repr__(self) -> str:  # never the password or the token
        return f"GiteaClient({self.base_url!r}, user={self.user!r})"

    @property
    def token(self) -> str | None:
        """The token calls use (the one given, or the last one :meth:`ensure_token` made)."""
        return self._token

    def use_token(self, token: str) -> None:
        """Authenticate further calls with ``token`` (e.g. one read back from a Secret)."""
        self._remember_secret(token)
        self._token = token
        self._registry_tokens.clear()

    # -- plumbing ----------------------------------------------------------------------

    def _remember_secret(self, secret: str | None) -> None:
        if not secret:
            return
        self._secrets.add(secret)
        # A server may echo an Authorization header back: its base64 form is masked too.
        basic = base64.b64encode(f"{self.user}:{secret}".encode()).decode()
        self._secrets.add(basic)

    def mask(self, text: str) -> str:
        """``text`` with every secret this client knows replaced by ``***``."""
        for secret in sorted(self._secrets, key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    def _auth(self, mode: str) -> tuple[dict[str, str], tuple[str, str] | None]:
        """Headers and requests-auth for ``mode``: ``token``, ``basic`` or ``none``."""
        if mode == "none":
            return {}, None
        if mode == "token" and self._token:
            return {"Authorization": f"token {self._token}"}, None
        if self._password:
            return {}, (self.user, self._password)
        if mode == "basic":
            raise SetupError(
                f"creating a Gitea access token needs the password of {self.user!r}",
                hint="Gitea accepts only basic auth on /users/{username}/tokens; "
                "pass the admin password kept in the gitea admin Secret",
            )
        return {"Authorization": f"token {self._token}"}, None

    def _send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
    ) -> requests.Response:
        """One HTTP call, retried on 429/5xx/connection errors/timeouts until the deadline
        (kubelab.retry's policy; a 429's Retry-After is honoured)."""
        display = urlsplit(url).path
        start = time.monotonic()
        tries = 0

        def attempt(_remaining: float) -> requests.Response:
            nonlocal tries
            tries += 1
            try:
                response = self._session.request(
                    method,
                    url,
                    headers=dict(headers or {}),
                    auth=auth,
                    json=json,
                    params=params,
                    timeout=self.timeout,
                    verify=self.verify,
                )
            except requests.Timeout as exc:
                raise _Transient(None, f"no answer within {self.timeout:g}s") from exc
            except requests.ConnectionError as exc:
                raise _Transient(None, f"cannot connect ({type(exc).__name__})") from exc
            log.debug("gitea %s %s -> %s", method, display, response.status_code)
            if response.status_code in RETRY_STATUSES:
                raise _Transient(response, f"HTTP {response.status_code}")
            return response

        def note(number: int, exc: BaseException, delay: float) -> None:
            log.info(
                "gitea %s %s: %s; retrying in %.1fs (attempt %d)",
                method,
                display,
                exc,
                delay,
                number,
            )

        try:
            return call_with_retry(attempt, self._policy, _classify, on_retry=note)
        except _Transient as exc:
            if exc.response is not None:
                return exc.response  # the caller reports the status with Gitea's message
            raise SetupError(
                f"Gitea at {self.base_url} did not answer {method} {display}: {exc} "
                f"(tried {tries} times in {time.monotonic() - start:.0f}s)",
                hint=f"check that Gitea is running and reachable at {self.base_url} "
                "(kubectl -n gitea get pods), then run the command again",
            ) from None

    def _api(
        self,
        method: str,
        path: str,
        *,
        ok: Collection[int],
        auth: str = "token",
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
    ) -> requests.Response:
        headers, basic = self._auth(auth)
        headers["Accept"] = "application/json"
        response = self._send(
            method, self.api_url + path, headers=headers, auth=basic, json=json, params=params
        )
        if response.status_code in ok:
            return response
        raise self._error(response, method, path)

    def _message(self, response: requests.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            text = str(body.get("message") or body.get("errors") or "")
        else:
            text = response.text
        return self.mask(" ".join(text.split()))[:300]

    def _error(self, response: requests.Response, method: str, path: str) -> SetupError:
        status = response.status_code
        message = self._message(response)
        where = f"{method} {path}"
        if status == 401:
            return SetupError(
                f"Gitea at {self.base_url} rejected the credentials of user {self.user!r} "
                f"({where}: HTTP 401)",
                hint="check the Gitea admin user and password kubelab stored for this cluster "
                "(or the token, if it was deleted in Gitea), then run the command again",
            )
        if status == 403:
            return SetupError(
                f"Gitea at {self.base_url} refused {where} for user {self.user!r} "
                f"(HTTP 403{': ' + message if message else ''})",
                hint="the user must be a Gitea site administrator, and its token needs the "
                f"scopes {', '.join(DEFAULT_TOKEN_SCOPES)}",
            )
        return SetupError(
            f"Gitea at {self.base_url}: {where} failed with HTTP {status}"
            f"{': ' + message if message else ''}",
            hint="look at the Gitea pod's logs (kubectl -n gitea logs deploy/gitea)",
        )

    def _json(self, response: requests.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise SetupError(
                f"Gitea at {self.base_url} answered {what} with something that is not JSON",
                hint="check that the URL points at Gitea itself, not at a proxy's error page",
            ) from None

    # -- API ---------------------------------------------------------------------------

    def version(self) -> tuple[int, int] | None:
        """Gitea's (major, minor), or None when the answer cannot be read."""
        if self._version is None:
            response = self._api("GET", "/version", ok=(200,))
            body = self._json(response, "GET /version")
            text = str(body.get("version", "")) if isinstance(body, dict) else ""
            self._version = _parse_version(text) or (0, 0)
        return None if self._version == (0, 0) else self._version

    def token_works(self, token: str, probe: str = "/user") -> bool:
        """True when ``token`` still authenticates: GET ``probe`` answers 200. Gitea asks a
        token for the route's scope (``/user`` needs read:user, 403 without it), so a token
        of narrower scope is probed on a route of its own (``/packages/<owner>`` for
        read:package)."""
        self._remember_secret(token)
        response = self._send(
            "GET",
            self.api_url + probe,
            headers={"Authorization": f"token {token}", "Accept": "application/json"},
        )
        if response.status_code == 200:
            return True
        if response.status_code in (401, 403):
            return False
        raise self._error(response, "GET", probe)

    def _token_ids(self, name: str) -> list[int]:
        ids: list[int] = []
        page = 1
        while True:
            response = self._api(
                "GET",
                f"/users/{quote(self.user)}/tokens",
                ok=(200,),
                auth="basic",
                params={"page": page, "limit": 50},
            )
            batch = self._json(response, "GET /users/{username}/tokens")
            if not isinstance(batch, list) or not batch:
                return ids
            ids += [int(t["id"]) for t in batch if isinstance(t, dict) and t.get("name") == name]
            if len(batch) < 50:
                return ids
            page += 1

    def ensure_token(self, name: str, scopes: Iterable[str] = DEFAULT_TOKEN_SCOPES) -> str:
        """A fresh access token named ``name`` for the admin; an old one is deleted first.

        Gitea shows a token's value only when it is created, so an existing token of that
        name cannot be reused: it is replaced. Further calls of this client use the new
        token. Store it (a Kubernetes Secret) and pass it to :meth:`use_token` next time.
        """
        user = quote(self.user)
        for attempt in range(2):
            for token_id in self._token_ids(name):
                self._api("DELETE", f"/users/{user}/tokens/{token_id}", ok=(204, 404), auth="basic")
                log.info("deleted the old Gitea token %r of %s", name, self.user)
            response = self._api(
                "POST",
                f"/users/{user}/tokens",
                ok=(201, 400),
                auth="basic",
                json={"name": name, "scopes": list(scopes)},
            )
            if response.status_code == 400:
                message = self._message(response)
                if "used already" in message and attempt == 0:
                    continue  # created meanwhile (or by a retried POST): delete, create again
                raise SetupError(
                    f"Gitea refused to create the token {name!r} for {self.user!r}: {message}",
                    hint="Gitea >= 1.19 is required (scoped tokens); check the scopes "
                    f"{', '.join(scopes)}",
                )
            body = self._json(response, "POST /users/{username}/tokens")
            token = str(body.get("sha1") or "") if isinstance(body, dict) else ""
            if not token:
                raise SetupError(
                    f"Gitea created the token {name!r} but did not return its value",
                    hint="delete the token in Gitea (Settings > Applications) and run again",
                )
            self.use_token(token)
            log.info("created the Gitea token %r for %s", name, self.user)
            return token
        raise AssertionError("unreachable")  # pragma: no cover

    def ensure_org(self, name: str, description: str = "", visibility: str = "public") -> bool:
        """Create the organization unless it exists; True when it was created."""
        response = self._api("GET", f"/orgs/{quote(name)}", ok=(200, 404))
        if response.status_code == 200:
            return False
        response = self._api(
            "POST",
            "/orgs",
            ok=(201, 422),
            json={"username": name, "description": description, "visibility": visibility},
        )
        if response.status_code == 422:
            message = self._message(response)
            if "exist" not in message.lower():
                raise SetupError(
                    f"Gitea refused to create the organization {name!r}: {message}",
                    hint="organization names are letters, digits, '-', '_' and '.'",
                )
            return False
        log.info("created the Gitea organization %s", name)
        return True

    def ensure_repo(
        self,
        org: str,
        name: str,
        description: str = "",
        private: bool = False,
        default_branch: str = "main",
    ) -> bool:
        """Create ``org/name`` (initialised, on ``default_branch``) unless it exists."""
        response = self._api("GET", f"/repos/{quote(org)}/{quote(name)}", ok=(200, 404))
        if response.status_code == 200:
            return False
        response = self._api(
            "POST",
            f"/orgs/{quote(org)}/repos",
            ok=(201, 409),
            json={
                "name": name,
                "description": description,
                "private": private,
                # An initialised repository has the branch the contents API commits to.
                "auto_init": True,
                "default_branch": default_branch,
                "readme": "Default",
            },
        )
        if response.status_code == 409:
            return False
        log.info("created the Gitea repository %s/%s", org, name)
        return True

    def remote_blobs(self, org: str, repo: str, branch: str = "main") -> dict[str, str]:
        """``{path: blob sha}`` of every file on ``branch``; empty when the branch is empty."""
        blobs: dict[str, str] = {}
        page = 1
        while True:
            response = self._api(
                "GET",
                f"/repos/{quote(org)}/{quote(repo)}/git/trees/{quote(branch, safe='')}",
                ok=(200, 400, 404, 409),
                params={"recursive": "true", "page": page, "per_page": TREE_PAGE_SIZE},
            )
            if response.status_code != 200:
                return blobs  # no such branch yet (an empty repository)
            body = self._json(response, "GET /repos/{owner}/{repo}/git/trees/{sha}")
            for entry in body.get("tree") or []:
                if entry.get("type") == "blob":
                    blobs[str(entry["path"])] = str(entry["sha"])
            if not body.get("truncated"):
                return blobs
            page += 1

    def push_tree(
        self, org: str, repo: str, folder: Path, message: str, branch: str = "main"
    ) -> PushResult:
        """Make ``branch`` hold every file of ``folder`` (at the repository root).

        Files whose blob SHA already matches are skipped, so a re-run commits nothing.
        Files only in the repository (e.g. its README) are left alone.
        """
        local = source_files(folder)
        result = PushResult()
        for round_ in range(2):
            remote = self.remote_blobs(org, repo, branch)
            changes: list[tuple[str, str, str | None]] = []  # (operation, path, old sha)
            for path, data in local.items():
                old = remote.get(path)
                if old is None:
                    changes.append(("create", path, None))
                elif old != git_blob_sha(data):
                    changes.append(("update", path, old))
            result.unchanged = len(local) - len(changes)
            if not changes:
                return result
            try:
                commits = self._commit(org, repo, branch, message, changes, local)
            except _StaleTree as exc:
                if round_ == 0:
                    continue  # the branch moved, or a retried request landed: compare again
                raise SetupError(
                    f"Gitea refused the files for {org}/{repo} ({branch}): {exc}",
                    hint="run the command again; if it repeats, look at the Gitea pod's logs",
                ) from None
            result.created += [p for op, p, _ in changes if op == "create"]
            result.updated += [p for op, p, _ in changes if op == "update"]
            result.commits += commits
            log.info(
                "pushed %d new and %d changed files to %s/%s",
                len(result.created),
                len(result.updated),
                org,
                repo,
            )
            return result
        return result  # pragma: no cover

    def _commit(
        self,
        org: str,
        repo: str,
        branch: str,
        message: str,
        changes: list[tuple[str, str, str | None]],
        local: Mapping[str, bytes],
    ) -> list[str]:
        base = f"/repos/{quote(org)}/{quote(repo)}/contents"
        version = self.version()
        if version is None or version >= CHANGE_FILES_SINCE:
            files = []
            for op, path, sha in changes:
                item: dict[str, str] = {
                    "operation": op,
                    "path": path,
                    "content": base64.b64encode(local[path]).decode(),
                }
                if sha:
                    item["sha"] = sha
                files.append(item)
            response = self._api(
                "POST",
                base,
                ok=(201, 404, 405, 409, 422),
                json={"branch": branch, "message": message, "files": files},
            )
            if response.status_code == 201:
                body = self._json(response, f"POST {base}")
                sha = ((body.get("commit") or {}) if isinstance(body, dict) else {}).get("sha")
                return [str(sha)] if sha else []
            if response.status_code in (409, 422):
                raise _StaleTree(self._message(response))
            # 404/405: a server without the endpoint; one file at a time below.
        commits: list[str] = []
        for op, path, sha in changes:
            payload: dict[str, str] = {
                "branch": branch,
                "message": message,
                "content": base64.b64encode(local[path]).decode(),
            }
            if sha:
                payload["sha"] = sha
            response = self._api(
                "PUT" if op == "update" else "POST",
                f"{base}/{quote(path)}",
                ok=(200, 201, 409, 422),
                json=payload,
            )
            if response.status_code in (409, 422):
                raise _StaleTree(self._message(response))
            body = self._json(response, f"{op} {base}/{{filepath}}")
            commit = ((body.get("commit") or {}) if isinstance(body, dict) else {}).get("sha")
            if commit:
                commits.append(str(commit))
        return commits

    # -- registry ----------------------------------------------------------------------

    def _registry_secret(self) -> str:
        secret = self._token or self._password
        if not secret:  # pragma: no cover - the constructor requires one
            raise SetupError("no Gitea credentials for the registry")
        return secret

    def _bearer(self, challenge: dict[str, str], repository: str) -> str:
        realm = challenge.get("realm", "")
        if not realm:
            raise SetupError(
                f"the registry at {self.registry_url} asked for a token without saying where "
                "to get it",
                hint="check that registry_url points at Gitea",
            )
        # Gitea builds the realm from its ROOT_URL, which may be an address only the
        # cluster reaches; the same server answers /v2/token at the URL we already reach.
        realm_parts = urlsplit(realm)
        registry_parts = urlsplit(self.registry_url)
        if realm_parts.path.endswith("/v2/token") and realm_parts.netloc != registry_parts.netloc:
            realm = f"{self.registry_url}{realm_parts.path}"
        params: dict[str, str | int] = {"scope": f"repository:{repository}:pull"}
        if challenge.get("service"):
            params["service"] = challenge["service"]
        response = self._send(
            "GET", realm, auth=(self.user, self._registry_secret()), params=params
        )
        if response.status_code in (401, 403):
            raise SetupError(
                f"the Gitea registry at {self.registry_url} rejected the credentials of "
                f"{self.user!r} (HTTP {response.status_code})",
                hint="the token needs the scope read:package (write:package includes it); "
                "run the command again to recreate it",
            )
        if response.status_code != 200:
            raise self._error(response, "GET", urlsplit(realm).path)
        body = self._json(response, "GET /v2/token")
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise SetupError(
                f"the registry at {self.registry_url} returned no token",
                hint="check that registry_url points at Gitea",
            )
        self._remember_secret(str(token))
        return str(token)

    def tag_exists(self, org: str, image: str, tag: str) -> bool:
        """True when ``<org>/<image>:<tag>`` is in Gitea's container registry."""
        repository = f"{org.lower()}/{image}"
        path = f"/v2/{repository}/manifests/{tag}"
        url = self.registry_url + path
        headers = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        cached = self._registry_tokens.get(repository)
        first = {**headers, "Authorization": f"Bearer {cached}"} if cached else headers
        response = self._send("HEAD", url, headers=first)
        if response.status_code == 401:
            challenges = dict(_challenges(response))
            if "bearer" in challenges:
                token = self._bearer(challenges["bearer"], repository)
                self._registry_tokens[repository] = token
                response = self._send(
                    "HEAD", url, headers={**headers, "Authorization": f"Bearer {token}"}
                )
            else:  # a registry that takes basic auth directly
                response = self._send(
                    "HEAD", url, headers=headers, auth=(self.user, self._registry_secret())
                )
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        if response.status_code in (401, 403):
            raise SetupError(
                f"the Gitea registry at {self.registry_url} refused HEAD {path} for "
                f"{self.user!r} (HTTP {response.status_code})",
                hint="the token needs the scope read:package (write:package includes it)",
            )
        raise SetupError(
            f"the registry at {self.registry_url}: HEAD {path} failed with HTTP "
            f"{response.status_code}",
            hint="check that Gitea's container registry is enabled ([packages] ENABLED=true)",
        )


class _StaleTree(Exception):
    """Gitea refused a file change because the branch moved (or a retry already landed)."""


@dataclass(frozen=True)
class GiteaSetup:
    """What the course needs in Gitea."""

    org: str
    repo: str
    source: Path
    org_description: str = "kubelab course"
    repo_description: str = "Source of the lesson's demo application"
    token_name: str = "kubelab"
    branch: str = "main"
    private: bool = False
    message: str = "kubelab: update the application source"


@dataclass
class GiteaResult:
    """The token to store, and what :func:`configure_gitea` changed."""

    token: str
    token_created: bool
    org_created: bool
    repo_created: bool
    push: PushResult

    def changes(self) -> list[str]:
        """One line per change; empty on a re-run that changed nothing."""
        out: list[str] = []
        if self.token_created:
            out.append("created a new access token")
        if self.org_created:
            out.append("created the organization")
        if self.repo_created:
            out.append("created the repository")
        if self.push.changed:
            out.append(
                f"committed {len(self.push.created)} new and {len(self.push.updated)} changed files"
            )
        return out


def configure_gitea(
    client: GiteaClient, setup: GiteaSetup, stored_token: str | None = None
) -> GiteaResult:
    """Token, organization, repository and source, each only when missing or different.

    ``stored_token`` is the token an earlier run stored: reused when it still works, so a
    re-run sends no write request at all.
    """
    if stored_token and client.token_works(stored_token):
        client.use_token(stored_token)
        token, token_created = stored_token, False
    else:
        token, token_created = client.ensure_token(setup.token_name), True
    org_created = client.ensure_org(setup.org, setup.org_description)
    repo_created = client.ensure_repo(
        setup.org, setup.repo, setup.repo_description, setup.private, setup.branch
    )
    push = client.push_tree(setup.org, setup.repo, setup.source, setup.message, setup.branch)
    return GiteaResult(token, token_created, org_created, repo_created, push)
