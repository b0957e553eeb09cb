"""GkeCluster against a local HTTP stub speaking the GKE v1 REST API (real response shapes).

The real ``google-cloud-container`` client (REST transport) talks to the stub through
``KUBELAB_GKE_ENDPOINT=http://127.0.0.1:PORT``; credentials are a google-auth ``Credentials``
whose token is a recognisable fake, which must never show up in output, logs or errors.
"""

from __future__ import annotations

import json
import logging
import re
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml
from google.auth.credentials import Credentials

from kubelab.errors import KubelabError, SetupError
from kubelab.providers.gke import LEFTOVER_NOTE, GkeCluster, GkeProvider
from kubelab.state import StateStore

FAKE_TOKEN = "ya29.FAKE-kubelab-secret-token-0123456789"
PROJECT = "kubelab-test"
ZONE = "europe-west1-b"
CA = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUZBS0UKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="


class FakeCredentials(Credentials):  # type: ignore[misc]
    def refresh(self, request: Any) -> None:
        self.token = FAKE_TOKEN


class GkeStub:
    """In-memory GKE: clusters, operations going RUNNING -> DONE after ``polls_to_done``."""

    def __init__(self, polls_to_done: int = 3) -> None:
        self.polls_to_done = polls_to_done
        self.clusters: dict[tuple[str, str], dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.op_polls: dict[str, int] = {}
        self.failures: list[tuple[str, str, int, dict[str, Any]]] = []  # method, path re, ...
        self.requests: list[tuple[str, str]] = []
        self.auth_headers: set[str] = set()
        self.op_error: str | None = None  # make the next operation end DONE with this error
        self._n = 0
        self.lock = threading.Lock()

    def fail(self, method: str, path: str, code: int, body: dict[str, Any], times: int = 1) -> None:
        for _ in range(times):
            self.failures.append((method, path, code, body))

    def _operation(self, kind: str, location: str, cluster: str) -> dict[str, Any]:
        self._n += 1
        op_id = f"operation-1700000000{self._n:03d}-5f2a1b3c"
        base = f"https://container.googleapis.com/v1/projects/123456789/zones/{location}"
        op = {
            "name": op_id,
            "zone": location,
            "operationType": kind,
            "status": "RUNNING",
            "selfLink": f"{base}/operations/{op_id}",
            "targetLink": f"{base}/clusters/{cluster}",
            "startTime": "2025-01-15T10:00:00.000000000Z",
            "_cluster": (location, cluster),
            "_error": self.op_error,
        }
        self.op_error = None
        self.operations[op_id] = op
        self.op_polls[op_id] = 0
        return op

    def handle(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append((method, path))
            for i, (m, pattern, code, err) in enumerate(self.failures):
                if m == method and re.search(pattern, path):
                    del self.failures[i]
                    return code, err
            m = re.fullmatch(r"/v1/projects/([^/]+)/locations/([^/]+)/clusters(?:/([^/]+))?", path)
            if m:
                _project, location, name = m.groups()
                return self._clusters(method, location, name, body)
            m = re.fullmatch(r"/v1/projects/([^/]+)/locations/([^/]+)/operations/([^/]+)", path)
            if m and method == "GET":
                return self._poll(m.group(3))
            return 404, _error(404, "NOT_FOUND", f"no route {method} {path}")

    def _clusters(
        self, method: str, location: str, name: str | None, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if method == "POST" and name is None:
            spec = body["cluster"]
            key = (location, spec["name"])
            if key in self.clusters:
                return 409, _error(409, "ALREADY_EXISTS", f"Already exists: {spec['name']}.")
            self.clusters[key] = {
                **spec,
                "location": location,
                "zone": location,
                "status": "PROVISIONING",
                "selfLink": f"https://container.googleapis.com/v1/projects/{PROJECT}/zones/"
                f"{location}/clusters/{spec['name']}",
                "currentNodeCount": sum(p["initialNodeCount"] for p in spec["nodePools"]),
                "currentMasterVersion": "1.31.5-gke.1023000",
            }
            return 200, _public(self._operation("CREATE_CLUSTER", location, spec["name"]))
        if method == "GET" and name is None:
            clusters = [c for (loc, _), c in self.clusters.items() if location in ("-", loc)]
            return 200, {"clusters": clusters} if clusters else {}
        key = (location, str(name))
        if key not in self.clusters:
            return 404, _error(
                404,
                "NOT_FOUND",
                f"Not found: projects/{PROJECT}/locations/{location}/clusters/{name}.",
            )
        if method == "GET":
            return 200, self.clusters[key]
        if method == "DELETE":
            self.clusters[key]["status"] = "STOPPING"
            return 200, _public(self._operation("DELETE_CLUSTER", location, str(name)))
        return 405, _error(405, "UNIMPLEMENTED", "method not allowed")

    def _poll(self, op_id: str) -> tuple[int, dict[str, Any]]:
        op = self.operations.get(op_id)
        if op is None:
            return 404, _error(404, "NOT_FOUND", f"Not found: operation {op_id}.")
        self.op_polls[op_id] += 1
        if op["status"] != "DONE" and self.op_polls[op_id] >= self.polls_to_done:
            op["status"] = "DONE"
            op["endTime"] = "2025-01-15T10:05:00.000000000Z"
            key = op["_cluster"]
            if op["_error"]:
                op["error"] = {"code": 8, "message": op["_error"]}
                op["statusMessage"] = op["_error"]
                if key in self.clusters:
                    self.clusters[key]["status"] = "ERROR"
            elif op["operationType"] == "CREATE_CLUSTER":
                self.clusters[key].update(
                    status="RUNNING",
                    endpoint="34.76.10.20",
                    masterAuth={"clusterCaCertificate": CA},
                )
            else:
                self.clusters.pop(key, None)
        return 200, _public(op)


def _public(op: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in op.items() if not k.startswith("_")}


def _error(
    code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, "details": details or []}}


SERVICE_DISABLED = _error(
    403,
    "PERMISSION_DENIED",
    "Kubernetes Engine API has not been used in project 123456789 before or it is disabled. "
    "Enable it by visiting https://console.developers.google.com/apis/api/container.googleapis"
    ".com/overview?project=123456789 then retry. If you enabled this API recently, wait a few "
    "minutes for the action to propagate to our systems and retry.",
    [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "SERVICE_DISABLED",
            "domain": "googleapis.com",
            "metadata": {
                "service": "container.googleapis.com",
                "consumer": "projects/123456789",
                "serviceTitle": "Kubernetes Engine API",
                "activationUrl": "https://console.developers.google.com/apis/api/"
                "container.googleapis.com/overview?project=123456789",
            },
        },
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [
                {
                    "description": "Google developers console API activation",
                    "url": "https://console.developers.google.com/apis/api/"
                    "container.googleapis.com/overview?project=123456789",
                }
            ],
        },
    ],
)
PERMISSION_DENIED = _error(
    403,
    "PERMISSION_DENIED",
    f'Required "container.clusters.create" permission(s) for "projects/{PROJECT}".',
    [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "IAM_PERMISSION_DENIED",
            "domain": "container.googleapis.com",
            "metadata": {"permission": "container.clusters.create"},
        }
    ],
)
RATE_LIMITED = _error(
    429,
    "RESOURCE_EXHAUSTED",
    "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute' "
    "of service 'container.googleapis.com'.",
    [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "RATE_LIMIT_EXCEEDED",
            "domain": "googleapis.com",
            "metadata": {"service": "container.googleapis.com"},
        }
    ],
)
UNAVAILABLE = _error(503, "UNAVAILABLE", "The service is currently unavailable.")


@pytest.fixture
def stub() -> Iterator[tuple[GkeStub, str]]:
    state = GkeStub()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            auth = self.headers.get("Authorization")
            if auth:
                state.auth_headers.add(auth)
            body = json.loads(raw) if raw else {}
            code, doc = state.handle(self.command, self.path.split("?")[0], body)
            data = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def make(endpoint: str, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> GkeCluster:
    monkeypatch.setenv("KUBELAB_GKE_ENDPOINT", endpoint)
    return GkeCluster(
        PROJECT,
        credentials=FakeCredentials(),
        poll_interval=0,
        retry_initial=0.01,
        retry_deadline=kw.pop("retry_deadline", 5.0),
        **kw,
    )


def test_create_and_delete(
    stub: tuple[GkeStub, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    state, endpoint = stub
    caplog.set_level(logging.DEBUG)
    gke = make(endpoint, monkeypatch)
    info = gke.create("class-a", nodes=2, machine_type="e2-standard-2", location=ZONE)

    # the create request: parent path, labels, node pool
    assert ("POST", f"/v1/projects/{PROJECT}/locations/{ZONE}/clusters") in state.requests
    spec = state.clusters[(ZONE, "class-a")]
    assert spec["resourceLabels"] == {"kubelab": "true", "kubelab-cluster": "class-a"}
    pool = spec["nodePools"][0]
    assert pool["initialNodeCount"] == 2 and pool["config"]["machineType"] == "e2-standard-2"
    # operation polled by its full path until DONE (3 polls)
    assert gke.polls == 3
    op_polls = [p for m, p in state.requests if "/operations/" in p]
    assert len(op_polls) == 3
    assert op_polls[0].startswith(f"/v1/projects/{PROJECT}/locations/{ZONE}/operations/operation-")
    assert state.auth_headers == {f"Bearer {FAKE_TOKEN}"}

    # kubeconfig: endpoint, CA, exec entry, 0600, no token
    path = info.kubeconfig
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = yaml.safe_load(path.read_text())
    assert doc["clusters"][0]["cluster"] == {
        "server": "https://34.76.10.20",
        "certificate-authority-data": CA,
    }
    exec_ = doc["users"][0]["user"]["exec"]
    assert exec_["apiVersion"] == "client.authentication.k8s.io/v1"
    assert exec_["args"] == ["-m", "kubelab", "gke-token"]
    assert exec_["interactiveMode"] == "Never"
    assert FAKE_TOKEN not in path.read_text()
    record = StateStore().load().clusters["class-a"]
    assert record.provider == "gke" and record.kubeconfig == str(path)
    assert record.details["status"] == "running"

    assert [c.name for c in gke.leftovers("class-a")] == ["class-a"]
    # The stub's cluster has no Kubernetes API: its disks cannot be released from inside, so
    # the delete stops (they would stay billed) and the cluster is still there...
    with pytest.raises(SetupError, match="is not deleted: its load balancers and disks") as err:
        gke.delete("class-a")
    assert "--force" in (err.value.hint or "")
    assert [c.name for c in gke.leftovers("class-a")] == ["class-a"]
    # ...until the instructor says --force, and is told what to check.
    lines = gke.delete("class-a", force=True)
    assert lines[0].startswith("could not release in-cluster load balancers and disks first")
    assert "deleted anyway (--force)" in lines[0]
    assert lines[1] == f"deleted GKE cluster class-a in {ZONE}"
    assert not path.exists()
    assert "class-a" not in StateStore().load().clusters
    assert gke.leftovers() == []
    # idempotent: NOT_FOUND is "already gone"
    assert gke.delete("class-a", ZONE) == [f"GKE cluster class-a in {ZONE}: already gone"]
    assert FAKE_TOKEN not in caplog.text


def test_429_and_503_are_retried(
    stub: tuple[GkeStub, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, endpoint = stub
    state.fail("POST", r"/clusters$", 429, RATE_LIMITED)
    state.fail("POST", r"/clusters$", 503, UNAVAILABLE)
    state.fail("GET", r"/operations/", 503, UNAVAILABLE, times=2)
    state.fail("GET", r"/operations/", 429, RATE_LIMITED)
    gke = make(endpoint, monkeypatch)
    gke.create("retry", nodes=1, machine_type="e2-medium", location=ZONE)
    assert state.failures == []
    posts = [r for r in state.requests if r[0] == "POST"]
    assert len(posts) == 3
    assert state.clusters[(ZONE, "retry")]["status"] == "RUNNING"


def test_persistent_503_gives_up_under_the_deadline(
    stub: tuple[GkeStub, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, endpoint = stub
    state.fail("POST", r"/clusters$", 503, UNAVAILABLE, times=10_000)
    gke = make(endpoint, monkeypatch, retry_deadline=0.5)
    with pytest.raises(SetupError, match="kept failing") as err:
        gke.create("down", nodes=1, machine_type="e2-medium", location=ZONE)
    assert "currently unavailable" in err.value.message


def test_service_disabled_message(
    stub: tuple[GkeStub, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, endpoint = stub
    state.fail("POST", r"/clusters$", 403, SERVICE_DISABLED)
    gke = make(endpoint, monkeypatch)
    with pytest.raises(SetupError) as err:
        gke.create("x", nodes=1, machine_type="e2-medium", location=ZONE)
    assert "not enabled" in err.value.message
    assert err.value.hint is not None
    assert f"gcloud services enable container.googleapis.com --project {PROJECT}" in err.value.hint
    assert (
        "activationUrl" not in err.value.hint and "console.developers.google.com" in err.value.hint
    )


def test_permission_denied_message(
    stub: tuple[GkeStub, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, endpoint = stub
    state.fail("POST", r"/clusters$", 403, PERMISSION_DENIED)
    gke = make(endpoint, monkeypatch)
    with pytest.raises(SetupError) as err:
        gke.create("x", nodes=1, machine_type="e2-medium", location=ZONE)
    assert err.value.message.startswith(f"permission denied in project {PROJECT}")
    assert "container.clusters.create" in err.value.message
    assert err.value.hint and "roles/container.admin" in err.value.hint


def test_quota_and_machine_type_messages(
    stub: tuple[GkeStub, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, endpoint = stub
    state.fail(
        "POST",
        r"/clusters$",
        403,
        _error(
            403,
            "PERMISSION_DENIED",
            'Insufficient regional quota to satisfy request: resource "CPUS": request '
            "requires '8.0' and is short '4.0'. project has a quota of '4.0' with '4.0' "
            "available.",
        ),
    )
    state.fail(
        "POST",
        r"/clusters$",
        400,
        _error(
            400,
            "INVALID_ARGUMENT",
            f'Machine type "e2-standard-4" is not available in zone "{ZONE}".',
        ),
    )
    gke = make(endpoint, monkeypatch)
    with pytest.raises(SetupError, match="quota exceeded") as err:
        gke.create("x", nodes=1, machine_type="e2-medium", location=ZONE)
    assert err.value.hint and "--nodes 1" in err.value.hint
    with pytest.raises(SetupError, match="machine type not available") as err:
        gke.create("x", nodes=1, machine_type="e2-medium", location=ZONE)
    assert err.value.hint and "machine-types list" in err.value.hint


def test_failure_after_cluster_exists_then_delete_leaves_nothing(
    stub: tuple[GkeStub, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, endpoint = stub
    state.op_error = 'Insufficient regional quota to satisfy request: resource "IN_USE_ADDRESSES".'
    gke = make(endpoint, monkeypatch)
    with pytest.raises(SetupError, match="quota"):
        gke.create("half", nodes=2, machine_type="e2-standard-2", location=ZONE)
    # the cluster exists (ERROR) and the state knows where
    assert state.clusters[(ZONE, "half")]["status"] == "ERROR"
    assert [c.name for c in gke.leftovers()] == ["half"]
    record = StateStore().load().clusters["half"]
    assert record.details["location"] == ZONE

    # a fresh process (no location given) deletes from the state
    again = make(endpoint, monkeypatch)
    assert again.delete("half") == [f"deleted GKE cluster half in {ZONE}"]
    assert again.leftovers() == []
    assert "half" not in StateStore().load().clusters


def test_leftovers_only_kubelab_clusters(
    stub: tuple[GkeStub, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, endpoint = stub
    state.clusters[("us-central1-a", "someone-else")] = {
        "name": "someone-else",
        "location": "us-central1-a",
        "status": "RUNNING",
        "resourceLabels": {"team": "x"},
    }
    gke = make(endpoint, monkeypatch)
    gke.create("mine", nodes=1, machine_type="e2-standard-4", location=ZONE)
    found = gke.leftovers()
    assert [(c.name, c.status) for c in found] == [("mine", "RUNNING")]
    assert found[0].hourly is not None and "USD" in found[0].line()
    assert gke.leftovers("other") == []
    assert "gcloud compute forwarding-rules list" in LEFTOVER_NOTE


def test_provider_reuses_cluster_and_tears_down(
    stub: tuple[GkeStub, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, endpoint = stub
    gke = make(endpoint, monkeypatch)
    provider = GkeProvider("lab", location=ZONE, nodes=1, machine_type="e2-medium", cluster=gke)
    assert provider.owns_cluster
    info = provider.ensure_cluster("istio")
    posts = len([r for r in state.requests if r[0] == "POST"])
    again = provider.ensure_cluster("istio")
    assert again.kubeconfig == info.kubeconfig
    assert len([r for r in state.requests if r[0] == "POST"]) == posts == 1
    assert provider.teardown(info.details) == []
    # The stub's cluster has no Kubernetes API; the release from inside is the real one's
    # job (tests/realk8s): here it says what it released, and the cluster goes after it.
    monkeypatch.setattr(
        "kubelab.providers.incluster.release_cloud_resources",
        lambda kube, **kw: ["volume of claim gitea/gitea-data"],
    )
    removed = provider.teardown(info.details, everything=True)
    assert removed[0] == "released volume of claim gitea/gitea-data"
    assert any(line.startswith("deleted GKE cluster") for line in removed[1:])
    assert gke.leftovers() == []


def test_create_adopts_existing_kubelab_cluster(
    stub: tuple[GkeStub, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _state, endpoint = stub
    gke = make(endpoint, monkeypatch)
    gke.create("again", nodes=1, machine_type="e2-medium", location=ZONE)
    info = gke.create("again", nodes=1, machine_type="e2-medium", location=ZONE)  # 409 -> adopt
    assert info.kubeconfig.is_file()


def test_fake_token_never_printed(
    stub: tuple[GkeStub, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    state, endpoint = stub
    caplog.set_level(logging.DEBUG)
    gke = make(endpoint, monkeypatch)
    texts: list[str] = []
    info = gke.create("tok", nodes=1, machine_type="e2-medium", location=ZONE)
    texts.append(info.kubeconfig.read_text())
    texts.extend(gke.delete("tok", force=True))
    for body in (SERVICE_DISABLED, PERMISSION_DENIED):
        state.fail("POST", r"/clusters$", 403, body)
        with pytest.raises(KubelabError) as err:
            gke.create("tok", nodes=1, machine_type="e2-medium", location=ZONE)
        texts += [str(err.value), err.value.message, err.value.hint or "", repr(err.value)]
        assert err.value.__cause__ is None
    state.fail("POST", r"/clusters$", 503, UNAVAILABLE, times=10_000)
    gke.retry_deadline = 0.3
    with pytest.raises(KubelabError) as err:
        gke.create("tok", nodes=1, machine_type="e2-medium", location=ZONE)
    texts += [str(err.value), err.value.hint or ""]
    texts.append(StateStore().path.read_text())
    out = capsys.readouterr()
    texts += [out.out, out.err, caplog.text]
    assert state.auth_headers == {f"Bearer {FAKE_TOKEN}"}  # the token was really used
    for text in texts:
        assert FAKE_TOKEN not in text
