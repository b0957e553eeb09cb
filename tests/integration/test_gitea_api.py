"""``kubelab.images.gitea`` against a stub Gitea over real HTTP on loopback.

The stub (``StubGitea``, a threaded ``http.server``) answers the endpoints the client uses
with the status codes and JSON shapes of Gitea's swagger (``templates/swagger/v1_json.tmpl``)
and handlers: token create 201 ``{id, name, sha1, token_last_eight, scopes}`` and 400 when
the name is taken, basic auth only on ``/users/{username}/tokens``; org create 201 / 422;
repo create 201 / 409; ``git/trees`` with blob SHAs; change-files 201 (405 on a Gitea older
than 1.20, as its router has only GET there), single-file create 201 / update 200; the
registry's ``/v2`` 401 with ``WWW-Authenticate: Bearer realm=...`` then ``Basic``, the token
endpoint, and ``HEAD`` manifests 200 with ``Docker-Content-Digest`` or 404. It records every
request, so the tests count writes, and it can fail or stall a request on demand.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from kubelab.errors import SetupError
from kubelab.images.gitea import (
    DEFAULT_TOKEN_SCOPES,
    GiteaClient,
    GiteaSetup,
    configure_gitea,
    git_blob_sha,
    source_files,
)

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app_backend"
ADMIN = "gitea_admin"
PASSWORD = "Adm1n-Pa55w0rd-xyzzy"
# models/auth/access_token_scope.go: read/write per category, plus "all" and "public-only".
SCOPE_CATEGORIES = (
    "activitypub", "admin", "misc", "notification", "organization", "package", "issue",
    "repository", "user",
)  # fmt: skip
VALID_SCOPES = {f"{level}:{c}" for level in ("read", "write") for c in SCOPE_CATEGORIES} | {
    "all",
    "public-only",
}
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass
class Request:
    method: str
    path: str
    auth: str  # basic | token | bearer | none | bad


@dataclass
class Repo:
    owner: str
    name: str
    description: str
    private: bool
    default_branch: str
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)


@dataclass
class StubState:
    version: str = "1.22.3"
    root_url: str = ""  # ROOT_URL; the registry realm is built from it
    tokens: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_id: int = 1
    orgs: dict[str, dict[str, Any]] = field(default_factory=dict)
    repos: dict[tuple[str, str], Repo] = field(default_factory=dict)
    manifests: dict[tuple[str, str], str] = field(default_factory=dict)
    registry_tokens: set[str] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)
    failures: list[list[Any]] = field(default_factory=list)  # [method, regex, status, times]
    stalls: list[list[Any]] = field(default_factory=list)  # [method, regex, seconds, times]
    hide_existing: bool = False  # GET says 404 although it exists (a creation race)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, method: str, pattern: str, status: int, times: int = 1) -> None:
        self.failures.append([method, re.compile(pattern), status, times])

    def stall(self, method: str, pattern: str, seconds: float, times: int = 1) -> None:
        self.stalls.append([method, re.compile(pattern), seconds, times])

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method in WRITES]

    def valid_token(self, value: str) -> bool:
        return any(t["sha1"] == value for t in self.tokens.values())

    def token_scopes(self, value: str) -> set[str]:
        return next((set(t["scopes"]) for t in self.tokens.values() if t["sha1"] == value), set())


def required_scope(method: str, path: str) -> str | None:
    """The scope Gitea 1.27's API router asks of a token for ``path`` (routers/api/v1/api.go:
    tokenRequiresScopes per route group; read for GET/HEAD, write otherwise), None where it
    asks none (/version, and the token routes, which take basic auth only)."""
    level = "read" if method in ("GET", "HEAD") else "write"
    for prefix, category in (
        ("/user", "user"),
        ("/users/", "user"),
        ("/orgs", "organization"),
        ("/repos/", "repository"),
        ("/packages/", "package"),
        ("/admin/", "admin"),
    ):
        if path == prefix.rstrip("/") or path.startswith(prefix):
            return f"{level}:{category}"
    return None


def scope_granted(scopes: set[str], needed: str) -> bool:
    """``all`` grants everything, ``write:x`` also grants ``read:x`` (Gitea's AccessTokenScope)."""
    level, _, category = needed.partition(":")
    return (
        bool({"all", needed, f"write:{category}"} & scopes)
        if level == "read"
        else bool({"all", needed} & scopes)
    )


def _take(rules: list[list[Any]], method: str, path: str) -> Any:
    for rule in rules:
        if rule[0] == method and rule[1].search(path) and rule[3] > 0:
            rule[3] -= 1
            return rule[2]
    return None


def tree_entries(files: dict[str, bytes]) -> list[dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for path, data in files.items():
        parts = path.split("/")
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            entries.setdefault(
                folder, {"path": folder, "mode": "040000", "type": "tree", "size": 0}
            )
        entries[path] = {
            "path": path,
            "mode": "100644",
            "type": "blob",
            "size": len(data),
            "sha": git_blob_sha(data),
        }
    for entry in entries.values():
        entry.setdefault("sha", hashlib.sha1(entry["path"].encode()).hexdigest())
        entry["url"] = "http://stub/api/v1/git/" + entry["sha"]
    return [entries[k] for k in sorted(entries)]


class Handler(BaseHTTPRequestHandler):
    server: StubServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- helpers -------------------------------------------------------------------------

    @property
    def state(self) -> StubState:
        return self.server.state

    def send(
        self, status: int, body: Any = None, headers: list[tuple[str, str]] | None = None
    ) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers or []:
            self.send_header(name, value)
        if body is not None:
            self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def error(self, status: int, message: str) -> None:
        self.send(status, {"message": message, "url": self.state.root_url + "api/swagger"})

    def body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else None

    def who(self) -> str:
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme == "Basic":
            user, _, secret = base64.b64decode(value).decode().partition(":")
            if user == ADMIN and (secret == PASSWORD or self.state.valid_token(secret)):
                return "basic-token" if secret != PASSWORD else "basic"
            return "bad"
        if scheme == "token":
            return "token" if self.state.valid_token(value) else "bad"
        if scheme == "Bearer":
            if value in self.state.registry_tokens:
                return "bearer"
            return "token" if self.state.valid_token(value) else "bad"
        return "none"

    def presented_secret(self) -> str:
        """The token value this request carries (header ``token``, or basic auth's password)."""
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        if scheme == "Basic":
            return base64.b64decode(value).decode().partition(":")[2]
        return value

    def unauthorized(self) -> None:
        self.error(401, "user does not exist [uid: 0, name: ]")

    # -- dispatch ------------------------------------------------------------------------

    def handle_any(self) -> None:
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        auth = self.who()
        with self.state.lock:
            self.state.requests.append(Request(self.command, path, auth))
            status = _take(self.state.failures, self.command, path)
            stall = _take(self.state.stalls, self.command, path)
        if stall:
            time.sleep(stall)
        if status:
            self.error(status, "injected failure")
            return
        if path.startswith("/v2"):
            self.registry(path, auth)
        elif path.startswith("/api/v1/"):
            if auth == "bad":
                self.unauthorized()
                return
            with self.state.lock:
                self.api(path[len("/api/v1") :], query, auth)
        else:
            self.error(404, "not found")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any

    def api(self, path: str, query: dict[str, list[str]], auth: str) -> None:
        state, method = self.state, self.command
        signed_in = auth in ("basic", "basic-token", "token")
        needed = required_scope(method, path)
        by_token = auth in ("token", "basic-token") and "/tokens" not in path
        if (
            by_token
            and needed
            and not scope_granted(state.token_scopes(self.presented_secret()), needed)
        ):
            return self.error(
                403, f"token does not have at least one of required scope(s): [{needed}]"
            )
        if path == "/version" and method == "GET":
            return self.send(200, {"version": state.version})
        if path == "/user" and method == "GET":
            if not signed_in:
                return self.unauthorized()
            return self.send(200, {"id": 1, "login": ADMIN, "is_admin": True})
        if m := re.fullmatch(r"/users/([^/]+)/tokens(?:/([^/]+))?", path):
            if auth != "basic":  # reqBasicOrRevProxyAuth
                return self.error(401, "auth required")
            return self.tokens(method, m.group(2), query)
        if not signed_in:
            return self.unauthorized()
        if re.fullmatch(r"/packages/[^/]+", path) and method == "GET":
            return self.send(200, [])  # the owner's packages (the stub lists none)
        if path == "/orgs" and method == "POST":
            return self.create_org(self.body())
        if (m := re.fullmatch(r"/orgs/([^/]+)", path)) and method == "GET":
            org = state.orgs.get(m.group(1).lower())
            if org is None or state.hide_existing:
                return self.error(404, "")
            return self.send(200, org)
        if (m := re.fullmatch(r"/orgs/([^/]+)/repos", path)) and method == "POST":
            return self.create_repo(m.group(1), self.body())
        if m := re.fullmatch(r"/repos/([^/]+)/([^/]+)(/.*)?", path):
            repo = state.repos.get((m.group(1).lower(), m.group(2).lower()))
            if repo is None:
                return self.error(404, "")
            return self.repo(repo, m.group(3) or "", query)
        return self.error(404, "")

    def tokens(self, method: str, token: str | None, query: dict[str, list[str]]) -> None:
        state = self.state
        if token is None and method == "GET":
            page, limit = int(query.get("page", ["1"])[0]), int(query.get("limit", ["30"])[0])
            items = [
                {
                    "id": i,
                    "name": t["name"],
                    "sha1": "",
                    "token_last_eight": t["sha1"][-8:],
                    "scopes": t["scopes"],
                }
                for i, t in sorted(state.tokens.items())
            ]
            return self.send(200, items[(page - 1) * limit : page * limit])
        if token is None and method == "POST":
            body = self.body()
            if not body or not body.get("name"):
                return self.send(422, [{"fieldNames": ["Name"], "message": "Required"}])
            if any(t["name"] == body["name"] for t in state.tokens.values()):
                return self.error(400, "access token name has been used already")
            scopes = body.get("scopes") or []
            if bad := [s for s in scopes if s not in VALID_SCOPES]:
                return self.error(400, f"invalid access token scope provided: {bad[0]}")
            value = secrets.token_hex(20)
            token_id = state.next_id
            state.next_id += 1
            state.tokens[token_id] = {"name": body["name"], "sha1": value, "scopes": scopes}
            return self.send(
                201,
                {
                    "id": token_id,
                    "name": body["name"],
                    "sha1": value,
                    "token_last_eight": value[-8:],
                    "scopes": scopes,
                },
            )
        if token is not None and method == "DELETE":
            matches = (
                [int(token)]
                if token.isdigit() and int(token) in state.tokens
                else [i for i, t in state.tokens.items() if t["name"] == token]
            )
            if not matches:
                return self.error(404, "")
            del state.tokens[matches[0]]
            return self.send(204)
        return self.error(405, "")

    def create_org(self, body: dict[str, Any]) -> None:
        name = body.get("username", "")
        if name.lower() in self.state.orgs:
            return self.error(422, f"user already exists [name: {name}]")
        org = {
            "id": len(self.state.orgs) + 2,
            "name": name,
            "username": name,
            "full_name": body.get("full_name", ""),
            "description": body.get("description", ""),
            "visibility": body.get("visibility", "public"),
        }
        self.state.orgs[name.lower()] = org
        return self.send(201, org)

    def create_repo(self, owner: str, body: dict[str, Any]) -> None:
        if owner.lower() not in self.state.orgs:
            return self.error(404, "")
        key = (owner.lower(), body["name"].lower())
        if key in self.state.repos:
            return self.error(409, "The repository with the same name already exists.")
        repo = Repo(
            owner,
            body["name"],
            body.get("description", ""),
            bool(body.get("private")),
            body.get("default_branch") or "main",
        )
        if body.get("auto_init"):
            repo.files["README.md"] = f"# {repo.name}\n\n{repo.description}".encode()
            repo.commits.append(secrets.token_hex(20))
        self.state.repos[key] = repo
        return self.send(201, self.repo_json(repo))

    def repo_json(self, repo: Repo) -> dict[str, Any]:
        return {
            "id": 1,
            "name": repo.name,
            "full_name": f"{repo.owner}/{repo.name}",
            "owner": {"login": repo.owner},
            "description": repo.description,
            "private": repo.private,
            "empty": not repo.commits,
            "default_branch": repo.default_branch,
            "clone_url": f"{self.state.root_url}{repo.owner}/{repo.name}.git",
        }

    def repo(self, repo: Repo, rest: str, query: dict[str, list[str]]) -> None:
        method = self.command
        if rest == "" and method == "GET":
            return self.send(200, self.repo_json(repo))
        if m := re.fullmatch(r"/git/trees/(.+)", rest):
            if m.group(1) != repo.default_branch or not repo.commits:
                return self.error(400, f"sha not found [{m.group(1)}]")
            entries = tree_entries(repo.files)
            page = int(query.get("page", ["1"])[0])
            per_page = min(int(query.get("per_page", ["1000"])[0]), 1000)
            if query.get("recursive", ["false"])[0] != "true":
                entries = [e for e in entries if "/" not in e["path"]]
            start = (page - 1) * per_page
            return self.send(
                200,
                {
                    "sha": repo.commits[-1],
                    "url": "http://stub/tree",
                    "tree": entries[start : start + per_page],
                    "truncated": start + per_page < len(entries),
                    "page": page,
                    "total_count": len(entries),
                },
            )
        if rest == "/contents" and method == "POST":
            if _version(self.state.version) < (1, 20):
                return self.error(405, "Method Not Allowed")
            body = self.body()
            if body.get("branch", repo.default_branch) != repo.default_branch:
                return self.error(404, "branch does not exist")
            problem = next((p for f in body["files"] if (p := self.check_change(repo, f))), None)
            if problem:
                return self.error(422, problem)
            for change in body["files"]:
                repo.files[change["path"]] = base64.b64decode(change["content"])
            return self.send(201, self.commit(repo, [f["path"] for f in body["files"]]))
        if (m := re.fullmatch(r"/contents/(.+)", rest)) and method in ("POST", "PUT"):
            body = self.body()
            change = {
                "operation": "create" if method == "POST" else "update",
                "path": m.group(1),
                "content": body["content"],
                "sha": body.get("sha"),
            }
            if problem := self.check_change(repo, change):
                return self.error(422, problem)
            repo.files[m.group(1)] = base64.b64decode(body["content"])
            response = self.commit(repo, [m.group(1)])
            return self.send(
                201 if method == "POST" else 200,
                {**response, "content": response["files"][0], "files": None},
            )
        return self.error(404, "")

    @staticmethod
    def check_change(repo: Repo, change: dict[str, Any]) -> str | None:
        current = repo.files.get(change["path"])
        if change["operation"] == "create" and current is not None:
            return f"repository file already exists [path: {change['path']}]"
        if change["operation"] == "update":
            if current is None:
                return f"repository file does not exist [path: {change['path']}]"
            if change.get("sha") != git_blob_sha(current):
                return f"sha does not match [given: {change.get('sha')}]"
        return None

    def commit(self, repo: Repo, paths: list[str]) -> dict[str, Any]:
        sha = secrets.token_hex(20)
        repo.commits.append(sha)
        contents = [
            {
                "name": p.rsplit("/", 1)[-1],
                "path": p,
                "sha": git_blob_sha(repo.files[p]),
                "type": "file",
                "size": len(repo.files[p]),
            }
            for p in paths
        ]
        return {
            "files": contents,
            "commit": {"sha": sha, "message": "commit", "parents": []},
            "verification": {"verified": False, "reason": "gpg.error.not_signed_commit"},
        }

    # -- registry ------------------------------------------------------------------------

    def challenge(self) -> None:
        self.send(
            401,
            {"errors": [{"code": "UNAUTHORIZED", "message": ""}]},
            [
                (
                    "WWW-Authenticate",
                    f'Bearer realm="{self.state.root_url}v2/token",'
                    'service="container_registry",scope="*"',
                ),
                ("WWW-Authenticate", 'Basic realm="Gitea Package API"'),
                ("Docker-Distribution-Api-Version", "registry/2.0"),
            ],
        )

    def registry(self, path: str, auth: str) -> None:
        state = self.state
        if path == "/v2/token" and self.command == "GET":
            if auth == "bad":
                return self.send(401, {"errors": [{"code": "UNAUTHORIZED", "message": ""}]})
            if auth == "basic-token" and not scope_granted(
                state.token_scopes(self.presented_secret()), "read:package"
            ):
                return self.send(401, {"errors": [{"code": "UNAUTHORIZED", "message": ""}]})
            token = "jwt-" + secrets.token_hex(16)
            with state.lock:
                state.registry_tokens.add(token)
            return self.send(200, {"token": token})
        if auth not in ("bearer", "basic", "basic-token"):
            return self.challenge()
        if path in ("/v2", "/v2/"):
            return self.send(200, {})
        m = re.fullmatch(r"/v2/([a-z0-9._-]+/[a-z0-9._/-]+)/manifests/([^/]+)", path)
        if m and self.command in ("HEAD", "GET"):
            digest = state.manifests.get((m.group(1), m.group(2)))
            if digest is None:
                return self.send(
                    404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
                )
            return self.send(
                200,
                {"schemaVersion": 2},
                [
                    ("Docker-Content-Digest", digest),
                    ("Docker-Distribution-Api-Version", "registry/2.0"),
                    ("ETag", f'"{digest}"'),
                ],
            )
        return self.send(404, {"errors": [{"code": "NAME_UNKNOWN", "message": ""}]})


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


class StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: StubState) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = state

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up on a stalled answer closes the socket: expected


@dataclass
class Gitea:
    url: str
    state: StubState

    def client(self, **kwargs: Any) -> GiteaClient:
        options: dict[str, Any] = {"timeout": 5.0, "sleep": lambda _s: None, **kwargs}
        if "token" not in kwargs and "admin_password" not in kwargs:
            options["admin_password"] = PASSWORD
        password = options.pop("admin_password", None)
        return GiteaClient(self.url, ADMIN, password, **options)


@pytest.fixture
def gitea() -> Iterator[Gitea]:
    state = StubState()
    server = StubServer(state)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    state.root_url = url + "/"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield Gitea(url, state)
    finally:
        server.shutdown()
        server.server_close()


def setup_for(source: Path = APP) -> GiteaSetup:
    return GiteaSetup(org="kubelab", repo="app-backend", source=source)


def test_configure_twice_second_run_sends_no_write(gitea: Gitea) -> None:
    first = configure_gitea(gitea.client(), setup_for())
    assert first.token_created and first.org_created and first.repo_created
    expected = source_files(APP)
    # auto_init gave the branch a first commit with a README, which ours replaces.
    assert first.push.updated == ["README.md"]
    assert sorted(first.push.created + first.push.updated) == sorted(expected)
    repo = gitea.state.repos[("kubelab", "app-backend")]
    assert repo.files == expected
    assert len(repo.commits) == 2  # auto_init + one commit for every file
    writes_after_first = len(gitea.state.writes())
    start = len(gitea.state.requests)

    second = configure_gitea(gitea.client(), setup_for(), stored_token=first.token)
    assert second.changes() == []
    assert second.token == first.token
    assert second.push.unchanged == len(expected)
    assert len(gitea.state.writes()) == writes_after_first  # no create, no commit
    assert len(repo.commits) == 2
    # The second run used the stored token, never the password.
    assert {r.auth for r in gitea.state.requests[start:]} == {"token"}


def test_changed_and_new_files_are_one_commit_with_the_old_sha(
    gitea: Gitea, tmp_path: Path
) -> None:
    source = tmp_path / "app"
    shutil.copytree(APP, source, ignore=shutil.ignore_patterns("__pycache__"))
    first = configure_gitea(gitea.client(), setup_for(source))
    repo = gitea.state.repos[("kubelab", "app-backend")]
    (source / "config.py").write_text("VALUE = 2\n")
    (source / "extra" / "more.txt").parent.mkdir()
    (source / "extra" / "more.txt").write_text("new\n")

    before = len(gitea.state.writes())
    again = configure_gitea(gitea.client(), setup_for(source), stored_token=first.token)
    assert again.push.updated == ["config.py"]
    assert again.push.created == ["extra/more.txt"]
    assert len(gitea.state.writes()) == before + 1  # one change-files commit
    assert repo.files["config.py"] == b"VALUE = 2\n"
    assert repo.files["extra/more.txt"] == b"new\n"


def test_gitea_older_than_1_20_gets_one_file_at_a_time(gitea: Gitea, tmp_path: Path) -> None:
    gitea.state.version = "1.19.4"
    source = tmp_path / "app"
    source.mkdir()
    (source / "Dockerfile").write_text("FROM scratch\n")
    (source / "main.py").write_text("print('hi')\n")
    first = configure_gitea(gitea.client(), setup_for(source))
    assert sorted(first.push.created) == ["Dockerfile", "main.py"]
    file_writes = [r for r in gitea.state.writes() if "/contents/" in r.path]
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in file_writes] == [
        ("POST", "Dockerfile"),
        ("POST", "main.py"),
    ]
    (source / "main.py").write_text("print('bye')\n")
    again = configure_gitea(gitea.client(), setup_for(source), stored_token=first.token)
    assert again.push.updated == ["main.py"]
    assert gitea.state.writes()[-1].method == "PUT"
    third = configure_gitea(gitea.client(), setup_for(source), stored_token=first.token)
    assert third.changes() == []


def test_ensure_token_replaces_a_token_of_the_same_name(gitea: Gitea) -> None:
    client = gitea.client()
    old = client.ensure_token("kubelab")
    new = client.ensure_token("kubelab")
    assert old != new and len(new) == 40
    assert [t["name"] for t in gitea.state.tokens.values()] == ["kubelab"]
    assert gitea.state.tokens[2]["scopes"] == list(DEFAULT_TOKEN_SCOPES)
    assert not client.token_works(old)
    assert client.token_works(new)
    # Tokens are managed with basic auth only, as Gitea requires.
    token_calls = [r for r in gitea.state.requests if "/tokens" in r.path]
    assert {r.auth for r in token_calls} == {"basic"}
    assert [r.method for r in gitea.state.writes()] == ["POST", "DELETE", "POST"]


def test_stored_token_that_stopped_working_is_replaced(gitea: Gitea) -> None:
    result = configure_gitea(gitea.client(), setup_for(), stored_token="0" * 40)
    assert result.token_created and result.token != "0" * 40


def test_bad_password_is_a_clear_setup_error_without_the_secret(
    gitea: Gitea, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng-Secret-Passw0rd"
    client = gitea.client(admin_password=wrong)
    with pytest.raises(SetupError) as info:
        configure_gitea(client, setup_for())
    error = info.value
    assert "rejected the credentials of user 'gitea_admin'" in error.message
    assert "HTTP 401" in error.message
    assert error.hint and "password" in error.hint
    everything = " ".join([error.message, error.hint or "", *error.details, repr(client)])
    assert wrong not in everything and wrong not in caplog.text
    basic = base64.b64encode(f"{ADMIN}:{wrong}".encode()).decode()
    assert basic not in everything and basic not in caplog.text


def test_forbidden_names_the_permission_needed(gitea: Gitea) -> None:
    gitea.state.fail("POST", r"^/api/v1/orgs$", 403)
    client = gitea.client()
    client.ensure_token("kubelab")
    with pytest.raises(SetupError) as info:
        client.ensure_org("kubelab")
    assert "HTTP 403" in info.value.message
    assert "site administrator" in (info.value.hint or "")


def test_server_error_then_success_is_retried(gitea: Gitea) -> None:
    sleeps: list[float] = []
    gitea.state.fail("POST", r"^/api/v1/orgs$", 500)
    gitea.state.fail("GET", r"^/api/v1/version$", 502)
    gitea.state.fail("POST", r"/contents$", 503)
    client = gitea.client(sleep=sleeps.append)
    result = configure_gitea(client, setup_for())
    assert result.org_created and result.push.changed
    org_posts = [r for r in gitea.state.requests if r.method == "POST" and r.path.endswith("/orgs")]
    assert len(org_posts) == 2
    assert sleeps == [0.5, 0.5, 0.5]  # one backoff per failure


def test_a_retried_post_that_had_landed_is_not_an_error(gitea: Gitea) -> None:
    # The race seen by a retry: the org and the repo exist although GET said they did not.
    client = gitea.client()
    configure_gitea(client, setup_for())
    gitea.state.hide_existing = True
    assert client.ensure_org("kubelab") is False  # 422 "already exists"
    gitea.state.hide_existing = False
    gitea.state.repos[("kubelab", "other")] = Repo("kubelab", "other", "", False, "main")
    gitea.state.fail("GET", r"^/api/v1/repos/kubelab/other$", 404)
    assert client.ensure_repo("kubelab", "other") is False  # 409 "already exists"


def test_persistent_server_errors_end_with_the_status_and_a_hint(gitea: Gitea) -> None:
    gitea.state.fail("GET", r"^/api/v1/orgs/kubelab$", 503, times=100)
    sleeps: list[float] = []
    client = gitea.client(token="x" * 40, sleep=sleeps.append, retries=3)
    gitea.state.tokens[1] = {"name": "t", "sha1": "x" * 40, "scopes": []}
    with pytest.raises(SetupError) as info:
        client.ensure_org("kubelab")
    assert "HTTP 503" in info.value.message
    assert sleeps == [0.5, 1.0, 2.0]


def test_deadline_bounds_the_retries(gitea: Gitea) -> None:
    gitea.state.fail("GET", r"^/api/v1/version$", 500, times=100)
    client = gitea.client(deadline=1.0, retries=50)
    with pytest.raises(SetupError):
        client.version()
    # 0.5 + 1.0 > 1.0 s: the second backoff would cross the deadline, so two attempts.
    assert len([r for r in gitea.state.requests if r.path == "/api/v1/version"]) == 2


def test_a_stalled_answer_is_retried_after_the_timeout(gitea: Gitea) -> None:
    gitea.state.stall("GET", r"^/api/v1/version$", 1.0)
    client = gitea.client(timeout=0.3)
    assert client.version() == (1, 22)
    assert len([r for r in gitea.state.requests if r.path == "/api/v1/version"]) == 2


def test_unreachable_gitea_says_so(tmp_path: Path) -> None:
    client = GiteaClient(
        "http://127.0.0.1:9", ADMIN, PASSWORD, timeout=0.5, retries=1, sleep=lambda _s: None
    )
    with pytest.raises(SetupError) as info:
        client.version()
    assert "did not answer GET /api/v1/version" in info.value.message
    assert "reachable" in (info.value.hint or "")


def test_tag_exists_through_the_registry_token_flow(gitea: Gitea) -> None:
    gitea.state.manifests = {("kubelab/app-backend", "v1"): "sha256:" + "a" * 64}
    client = gitea.client()
    client.ensure_token("kubelab")
    assert client.tag_exists("kubelab", "app-backend", "v1") is True
    assert client.tag_exists("KubeLab", "app-backend", "v2") is False
    registry = [r for r in gitea.state.requests if r.path.startswith("/v2")]
    # HEAD without auth -> 401 challenge -> token with basic auth (user + token) -> HEAD.
    assert [(r.method, r.path, r.auth) for r in registry[:3]] == [
        ("HEAD", "/v2/kubelab/app-backend/manifests/v1", "none"),
        ("GET", "/v2/token", "basic-token"),
        ("HEAD", "/v2/kubelab/app-backend/manifests/v1", "bearer"),
    ]
    # The registry token is reused for the same repository.
    assert [(r.method, r.auth) for r in registry[3:]] == [("HEAD", "bearer")]


def test_tag_exists_reaches_the_token_endpoint_when_root_url_is_internal(gitea: Gitea) -> None:
    # ROOT_URL names an in-cluster address; the client asks the server it reaches instead.
    gitea.state.root_url = "http://gitea-http.gitea.svc.cluster.local:3000/"
    gitea.state.manifests = {("kubelab/app-backend", "v1"): "sha256:" + "b" * 64}
    client = gitea.client(timeout=2.0, retries=0)
    assert client.tag_exists("kubelab", "app-backend", "v1") is True


def test_tag_exists_with_wrong_credentials_is_a_setup_error(gitea: Gitea) -> None:
    client = gitea.client(token="f" * 40)
    with pytest.raises(SetupError) as info:
        client.tag_exists("kubelab", "app-backend", "v1")
    assert "registry" in info.value.message and "HTTP 401" in info.value.message
    assert "f" * 40 not in info.value.message


def test_secrets_never_reach_logs_or_errors(gitea: Gitea, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    gitea.state.fail("POST", r"/contents$", 500)
    gitea.state.stall("GET", r"^/api/v1/orgs/kubelab$", 1.0)
    client = gitea.client(timeout=0.3)
    result = configure_gitea(client, setup_for())
    client.tag_exists("kubelab", "app-backend", "v1")
    configure_gitea(gitea.client(), setup_for(), stored_token=result.token)
    # An error whose server message echoes the credentials is masked.
    gitea.state.fail("POST", r"^/api/v1/orgs$", 418)
    gitea.state.hide_existing = True
    with pytest.raises(SetupError) as info:
        client.ensure_org("kubelab")
    assert "HTTP 418" in info.value.message
    echoed = client.mask(f"token {result.token} / {PASSWORD}")
    assert result.token not in echoed and PASSWORD not in echoed
    secrets_seen = [PASSWORD, result.token, *gitea.state.registry_tokens]
    for secret in secrets_seen:
        assert secret not in caplog.text
        assert secret not in info.value.message
    assert "retrying" in caplog.text  # the log does narrate


def test_blob_sha_matches_git(tmp_path: Path) -> None:
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    sample = tmp_path / "sample.py"
    sample.write_bytes(b"print('x')\n\x00binary")
    expected = subprocess.run(
        ["git", "hash-object", str(sample)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert git_blob_sha(sample.read_bytes()) == expected


def test_the_stub_asks_tokens_for_scopes_as_gitea_does(gitea: Gitea) -> None:
    """A read:package token (the class's pull token) is refused on /user (read:user) and
    on writes, accepted where its scope suffices: what a token check must probe."""
    client = gitea.client()
    pull = client.ensure_token("kubelab-pull", ("read:package",))
    assert not client.token_works(pull)  # GET /user: 403, scope read:user missing
    refused = [r for r in gitea.state.requests if r.path == "/api/v1/user"][-1]
    assert refused.auth == "token"
    assert client.token_works(pull, "/packages/kubelab")
    full = client.ensure_token("kubelab")  # the build token's scopes include read:user
    assert client.token_works(full)
    assert required_scope("POST", "/orgs") == "write:organization"
    assert scope_granted({"write:package"}, "read:package")
    assert not scope_granted({"read:package"}, "write:package")
