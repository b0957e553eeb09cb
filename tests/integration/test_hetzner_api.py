"""The Hetzner provider against a local HTTP stub of the Hetzner Cloud API.

The stub answers on 127.0.0.1 with the API's response shapes (objects wrapped in their
kind, ``meta.pagination`` on lists, ``{"error": {"code", "message"}}`` with the real
status codes, actions that stay ``running`` for a few polls) and filters lists by
``label_selector``; the real ``hcloud`` library talks to it through ``api_endpoint``.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from kubelab.errors import SetupError, UsageError
from kubelab.providers.hetzner import (
    HetznerCluster,
    HetznerProvider,
    NodeInfo,
    iter_plan_lines,
)
from kubelab.state import StateStore

TOKEN = "hcloud-FAKE-TOKEN-0123456789"
ALLOWED_IP = "203.0.113.7"
KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: default
  cluster:
    certificate-authority-data: Q0EtREFUQQ==
    server: https://127.0.0.1:6443
contexts:
- name: default
  context: {cluster: default, user: default}
current-context: default
users:
- name: default
  user: {client-certificate-data: U0VDUkVULUNFUlQ=, client-key-data: U0VDUkVULUtFWQ==}
"""


def _price_entry(location: str, hourly: str, monthly: str) -> dict[str, Any]:
    return {
        "location": location,
        "price_hourly": {"net": hourly, "gross": hourly},
        "price_monthly": {"net": monthly, "gross": monthly},
        "included_traffic": 21990232555520,
        "price_per_tb_traffic": {"net": "1.0000", "gross": "1.1900"},
    }


PRICING = {
    "pricing": {
        "currency": "EUR",
        "vat_rate": "19.00",
        "image": {"price_per_gb_month": {"net": "0.0110", "gross": "0.0131"}},
        "floating_ip": {"price_monthly": {"net": "3.0000", "gross": "3.5700"}},
        "floating_ips": [],
        "primary_ips": [
            {
                "type": "ipv4",
                "prices": [
                    {
                        "location": "nbg1",
                        "price_hourly": {"net": "0.0008", "gross": "0.0010"},
                        "price_monthly": {"net": "0.5000", "gross": "0.6000"},
                    }
                ],
            }
        ],
        "server_backup": {"percentage": "20.00"},
        "server_types": [
            {"id": 108, "name": "cx33", "prices": [_price_entry("nbg1", "0.0096", "5.9900")]}
        ],
        "load_balancer_types": [
            {"id": 1, "name": "lb11", "prices": [_price_entry("nbg1", "0.0104", "6.4100")]}
        ],
        "volume": {"price_per_gb_month": {"net": "0.0440", "gross": "0.0524"}},
    }
}

LOCATION = {
    "id": 2,
    "name": "nbg1",
    "description": "Nuremberg DC Park 1",
    "country": "DE",
    "city": "Nuremberg",
    "latitude": 49.452102,
    "longitude": 11.076665,
    "network_zone": "eu-central",
}
SERVER_TYPE = {
    "id": 108,
    "name": "cx33",
    "description": "CX33",
    "category": "cost_optimized",
    "cores": 4,
    "memory": 8.0,
    "disk": 80,
    "deprecated": False,
    "deprecation": None,
    "prices": PRICING["pricing"]["server_types"][0]["prices"],  # type: ignore[index]
    "storage_type": "local",
    "cpu_type": "shared",
    "architecture": "x86",
    "locations": [
        {"id": 2, "name": "nbg1", "deprecation": None, "available": True, "recommended": True}
    ],
}
IMAGE = {
    "id": 161547269,
    "type": "system",
    "status": "available",
    "name": "ubuntu-24.04",
    "description": "Ubuntu 24.04",
    "os_flavor": "ubuntu",
    "os_version": "24.04",
    "architecture": "x86",
    "labels": {},
}


def _match(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        if "=" in term:
            key, _, value = term.partition("=")
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    return True


class StubAPI:
    """In-memory Hetzner Cloud project behind an HTTP server."""

    KINDS = ("ssh_keys", "networks", "firewalls", "servers", "load_balancers", "volumes")

    def __init__(self, token: str = TOKEN, action_polls: int = 2) -> None:
        self.token = token
        self.read_only = False
        self.action_polls = action_polls
        self.store: dict[str, dict[int, dict[str, Any]]] = {k: {} for k in self.KINDS}
        self.actions: dict[int, dict[str, Any]] = {}
        self.action_gets = 0
        self.ids = itertools.count(1000)
        # (method, path regex) -> [(status, code), ...] answered before the real handler
        self.faults: list[tuple[str, str, int, str]] = []
        # (method, path regex): the request is carried out, then answered with a 503
        self.lost: list[tuple[str, str]] = []
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> StubAPI:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail(self, method: str, path: str, status: int, code: str, times: int = 1) -> None:
        for _ in range(times):
            self.faults.append((method, path, status, code))

    def lose_answer(self, method: str, path: str) -> None:
        self.lost.append((method, path))

    def empty(self) -> bool:
        return not any(self.store.values())

    # ------------------------------------------------------------------ shapes

    def action(self, command: str, resources: list[tuple[str, int]]) -> dict[str, Any]:
        action_id = next(self.ids)
        action = {
            "id": action_id,
            "command": command,
            "status": "running",
            "progress": 0,
            "started": "2025-01-01T00:00:00+00:00",
            "finished": None,
            "resources": [{"id": i, "type": t} for t, i in resources],
            "error": None,
            "_polls": self.action_polls,
        }
        self.actions[action_id] = action
        return self.public(action)

    @staticmethod
    def public(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    def new_server(self, body: dict[str, Any]) -> dict[str, Any]:
        server_id = next(self.ids)
        n = len(self.store["servers"]) + 1
        network_ids = body.get("networks", [])
        server = {
            "id": server_id,
            "name": body["name"],
            "status": "initializing",
            "created": "2025-01-01T00:00:00+00:00",
            "public_net": {
                "ipv4": {
                    "id": next(self.ids),
                    "ip": f"198.51.100.{n}",
                    "blocked": False,
                    "dns_ptr": "static.example",
                },
                "ipv6": {
                    "id": next(self.ids),
                    "ip": "2001:db8::/64",
                    "blocked": False,
                    "dns_ptr": [],
                },
                "floating_ips": [],
                "firewalls": [
                    {"id": f["firewall"], "status": "applied"} for f in body.get("firewalls", [])
                ],
            },
            "private_net": [
                {"network": nid, "ip": f"10.0.1.{n + 1}", "alias_ips": [], "mac_address": "86:00"}
                for nid in network_ids
            ],
            "server_type": SERVER_TYPE,
            "datacenter": {
                "id": 2,
                "name": "nbg1-dc3",
                "description": "Nuremberg 1 virtual DC 3",
                "location": LOCATION,
                "server_types": {"supported": [], "available": [], "available_for_migration": []},
            },
            "location": LOCATION,
            "image": IMAGE,
            "iso": None,
            "rescue_enabled": False,
            "locked": False,
            "backup_window": None,
            "outgoing_traffic": 0,
            "ingoing_traffic": 0,
            "included_traffic": 21990232555520,
            "protection": {"delete": False, "rebuild": False},
            "labels": body.get("labels", {}),
            "volumes": [],
            "load_balancers": [],
            "primary_disk_size": 80,
            "placement_group": None,
        }
        return server

    # ------------------------------------------------------------------ HTTP

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any] | None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, code: str, message: str | None = None) -> None:
                self._send(
                    status, {"error": {"code": code, "message": message or code, "details": {}}}
                )

            def _dispatch(self, method: str) -> None:
                parsed = urlparse(self.path)
                path = parsed.path.removeprefix("/v1")
                query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                with stub.lock:
                    stub.requests.append((method, path))
                    if self.headers.get("Authorization") != f"Bearer {stub.token}":
                        return self._error(401, "unauthorized", "unable to authenticate")
                    for fault in list(stub.faults):
                        if fault[0] == method and re.fullmatch(fault[1], path):
                            stub.faults.remove(fault)
                            return self._error(fault[2], fault[3])
                    if stub.read_only and method != "GET":
                        return self._error(403, "forbidden", "insufficient permissions")
                    status, answer = stub.route(method, path, query, body)
                    for lost in list(stub.lost):
                        if lost[0] == method and re.fullmatch(lost[1], path):
                            stub.lost.remove(lost)
                            return self._error(503, "unavailable")
                if status >= 400:
                    return self._error(status, str(answer))
                self._send(status, answer)

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def do_DELETE(self) -> None:
                self._dispatch("DELETE")

            def do_PUT(self) -> None:
                self._dispatch("PUT")

        return Handler

    def _list(self, kind: str, query: dict[str, str]) -> dict[str, Any]:
        items = [
            o
            for o in self.store[kind].values()
            if ("name" not in query or o["name"] == query["name"])
            and _match(o.get("labels", {}), query.get("label_selector", ""))
        ]
        return {kind: items, "meta": self._meta(len(items))}

    @staticmethod
    def _meta(total: int) -> dict[str, Any]:
        return {
            "pagination": {
                "page": 1,
                "per_page": 50,
                "previous_page": None,
                "next_page": None,
                "last_page": 1,
                "total_entries": total,
            }
        }

    def route(
        self, method: str, path: str, query: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        kind = parts[0]
        if method == "GET" and path == "/pricing":
            return 200, PRICING
        if method == "GET" and kind == "locations":
            found = [LOCATION] if query.get("name", "nbg1") == "nbg1" else []
            return 200, {"locations": found, "meta": self._meta(len(found))}
        if method == "GET" and kind == "server_types":
            found = [SERVER_TYPE] if query.get("name", "cx33") == "cx33" else []
            return 200, {"server_types": found, "meta": self._meta(len(found))}
        if method == "GET" and kind == "actions" and len(parts) == 2:
            action = self.actions.get(int(parts[1]))
            if action is None:
                return 404, "not_found"
            self.action_gets += 1
            action["_polls"] -= 1
            if action["_polls"] <= 0:
                action.update(status="success", progress=100, finished="2025-01-01T00:01:00+00:00")
            return 200, {"action": self.public(action)}
        if kind not in self.KINDS:
            return 404, "not_found"
        singular = kind[:-1]
        if len(parts) == 1 and method == "GET":
            return 200, self._list(kind, query)
        if len(parts) == 1 and method == "POST":
            if any(o["name"] == body["name"] for o in self.store[kind].values()):
                return 409, "uniqueness_error"
            return self._create(kind, body)
        obj_id = int(parts[1])
        obj = self.store[kind].get(obj_id)
        if obj is None:
            return 404, "not_found"
        if len(parts) == 2 and method == "GET":
            return 200, {singular: obj}
        if len(parts) == 2 and method == "DELETE":
            return self._delete(kind, obj)
        if parts[2:] == ["actions", "set_rules"] and kind == "firewalls":
            # POST /firewalls/{id}/actions/set_rules: the rules are replaced as a whole.
            obj["rules"] = [_rule(r) for r in body["rules"]]
            return 201, {"actions": [self.action("set_firewall_rules", [("firewall", obj_id)])]}
        if parts[2:] == ["actions", "detach"] and kind == "volumes":
            obj["server"] = None
            return 201, {"action": self.action("detach_volume", [("volume", obj_id)])}
        return 404, "not_found"

    def _create(self, kind: str, body: dict[str, Any]) -> tuple[int, Any]:
        if kind == "ssh_keys":
            key = {
                "id": next(self.ids),
                "name": body["name"],
                "fingerprint": "b7:2f:30:a0",
                "public_key": body["public_key"],
                "labels": body.get("labels", {}),
                "created": "2025-01-01T00:00:00+00:00",
            }
            self.store[kind][key["id"]] = key
            return 201, {"ssh_key": key}
        if kind == "networks":
            net = {
                "id": next(self.ids),
                "name": body["name"],
                "ip_range": body["ip_range"],
                "subnets": [
                    {**s, "gateway": "10.0.0.1", "vswitch_id": None} for s in body["subnets"]
                ],
                "routes": [],
                "servers": [],
                "load_balancers": [],
                "protection": {"delete": False},
                "labels": body.get("labels", {}),
                "created": "2025-01-01T00:00:00+00:00",
                "expose_routes_to_vswitch": False,
            }
            self.store[kind][net["id"]] = net
            return 201, {"network": net}
        if kind == "firewalls":
            fw = {
                "id": next(self.ids),
                "name": body["name"],
                "labels": body.get("labels", {}),
                "created": "2025-01-01T00:00:00+00:00",
                "rules": [_rule(r) for r in body.get("rules", [])],
                "applied_to": [],
            }
            self.store[kind][fw["id"]] = fw
            return 201, {
                "firewall": fw,
                "actions": [self.action("set_firewall_rules", [("firewall", fw["id"])])],
            }
        if kind == "servers":
            for net_id in body.get("networks", []):
                if net_id not in self.store["networks"]:
                    return 404, "not_found"
            server = self.new_server(body)
            self.store[kind][server["id"]] = server
            return 201, {
                "server": server,
                "action": self.action("create_server", [("server", server["id"])]),
                "next_actions": [self.action("start_server", [("server", server["id"])])],
                "root_password": None,
            }
        return 404, "not_found"

    def _delete(self, kind: str, obj: dict[str, Any]) -> tuple[int, Any]:
        if kind in ("firewalls", "networks"):
            key = "firewalls" if kind == "firewalls" else "private_net"
            for server in self.store["servers"].values():
                refs = (
                    [f["id"] for f in server["public_net"]["firewalls"]]
                    if key == "firewalls"
                    else [n["network"] for n in server["private_net"]]
                )
                if obj["id"] in refs:
                    return 422, "resource_in_use"
        if kind == "volumes" and obj.get("server"):
            return 423, "locked"
        del self.store[kind][obj["id"]]
        if kind == "servers":
            return 200, {"action": self.action("delete_server", [("server", obj["id"])])}
        if kind == "load_balancers":
            return 200, {"action": self.action("delete_load_balancer", [("lb", obj["id"])])}
        return 204, None

    # ---------------------------------------------------------- what the cluster makes

    def add_ccm_load_balancer(self, server_id: int, network_id: int | None) -> int:
        """A load balancer as hcloud-cloud-controller-manager makes it for a Service."""
        lb_id = next(self.ids)
        self.store["load_balancers"][lb_id] = {
            "id": lb_id,
            "name": "a9f8e7d6c5b4a39281706f5e4d3c2b1a",
            "labels": {"hcloud-ccm/service-uid": "9f8e7d6c-5b4a-3928-1706-f5e4d3c2b1a0"},
            "created": "2025-01-01T00:00:00+00:00",
            "public_net": {
                "enabled": True,
                "ipv4": {"ip": "198.51.100.200", "dns_ptr": "lb.example"},
                "ipv6": {"ip": "2001:db8::1", "dns_ptr": "lb.example"},
            },
            "private_net": (
                [{"network": network_id, "ip": "10.0.1.100"}] if network_id is not None else []
            ),
            "location": LOCATION,
            "load_balancer_type": {
                "id": 1,
                "name": "lb11",
                "description": "LB11",
                "max_connections": 10000,
                "max_services": 5,
                "max_targets": 25,
                "max_assigned_certificates": 10,
                "prices": PRICING["pricing"]["load_balancer_types"][0]["prices"],  # type: ignore[index]
            },
            "protection": {"delete": False},
            "services": [],
            "targets": [
                {
                    "type": "server",
                    "server": {"id": server_id},
                    "use_private_ip": True,
                    "health_status": [{"listen_port": 80, "status": "healthy"}],
                }
            ],
            "algorithm": {"type": "round_robin"},
            "outgoing_traffic": 0,
            "ingoing_traffic": 0,
            "included_traffic": 21990232555520,
        }
        return lb_id

    def add_csi_volume(self, server_id: int | None, labels: dict[str, str] | None = None) -> int:
        """A volume as the Hetzner CSI driver makes it for a PVC (attached to a node)."""
        vol_id = next(self.ids)
        self.store["volumes"][vol_id] = {
            "id": vol_id,
            "name": "pvc-1a2b3c4d-0000-4000-8000-000000000001",
            "server": server_id,
            "location": LOCATION,
            "size": 10,
            "linux_device": f"/dev/disk/by-id/scsi-0HC_Volume_{vol_id}",
            "protection": {"delete": False},
            "labels": labels
            or {"managed-by": "csi-driver", "pvc-name": "gitea", "pvc-namespace": "gitea"},
            "status": "available",
            "created": "2025-01-01T00:00:00+00:00",
            "format": "ext4",
        }
        return vol_id


#: The waits hcloud's own retry made (it retries rate limits, 502/504 and timeouts itself,
#: with time.sleep and no public option; kubelab retries only the rest).
HCLOUD_SLEEPS: list[float] = []


@pytest.fixture(autouse=True)
def _hcloud_waits_for_nothing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import types

    import hcloud._client

    HCLOUD_SLEEPS.clear()
    monkeypatch.setattr(hcloud._client, "time", types.SimpleNamespace(sleep=HCLOUD_SLEEPS.append))
    yield


@pytest.fixture
def stub() -> Iterator[StubAPI]:
    api = StubAPI().start()
    yield api
    api.stop()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KUBELAB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HCLOUD_TOKEN", raising=False)
    return tmp_path / "home"


class FakeInstaller:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[tuple[list[NodeInfo], Path]] = []

    def __call__(self, servers: list[NodeInfo], ssh_key_path: Path) -> str:
        self.calls.append((servers, ssh_key_path))
        if self.fail:
            raise SetupError("cannot reach 198.51.100.1:22 over SSH")
        return KUBECONFIG


def _rule(r: dict[str, Any]) -> dict[str, Any]:
    """A firewall rule as the API stores and returns it (absent fields null or empty)."""
    return {
        "direction": r["direction"],
        "protocol": r["protocol"],
        "port": r.get("port"),
        "source_ips": r.get("source_ips", []),
        "destination_ips": r.get("destination_ips", []),
        "description": r.get("description"),
    }


def make(stub: StubAPI, home: Path, installer: FakeInstaller | None = None) -> HetznerCluster:
    return HetznerCluster(
        TOKEN,
        endpoint=stub.url,
        poll_interval=0,
        action_timeout=10,
        retry_deadline=5,
        sleep=lambda s: None,
        public_ip=lambda: ALLOWED_IP,
        installer=installer or FakeInstaller(),
        state=StateStore(home / "state.json"),
    )


def test_plan_prices_every_billed_resource(stub: StubAPI, home: Path) -> None:
    plan = make(stub, home).plan("demo", nodes=1)
    servers = [p for p in plan if p.kind == "server"]
    assert [s.name for s in servers] == ["kubelab-demo-cp", "kubelab-demo-w1"]
    assert str(servers[0].monthly) == "5.9900" and str(servers[0].hourly) == "0.0096"
    assert any(p.kind == "primary_ip" and str(p.monthly) == "0.6000" for p in plan)
    assert any(p.kind == "load_balancer" and str(p.monthly) == "6.4100" for p in plan)
    # Gitea's and VictoriaMetrics' claims: two volumes of Hetzner's minimum, 10 GB each.
    volumes = [p for p in plan if p.kind == "volume"]
    assert [v.name for v in volumes] == ["(Gitea data)", "(VictoriaMetrics data)"]
    assert {str(v.monthly) for v in volumes} == {"0.5240"}
    lines = list(iter_plan_lines(plan))
    assert "total" in lines[-1] and "EUR/month" in lines[-1]
    # 2 x (5.99 + 0.60) + 6.41 + 2 x 10 x 0.0524
    assert "20.64" in lines[-1]


def test_plan_refuses_type_not_sold_in_location(stub: StubAPI, home: Path) -> None:
    with pytest.raises(SetupError, match="no price in fsn1"):
        make(stub, home).plan("demo", location="fsn1")


def test_create_then_delete_leaves_nothing(stub: StubAPI, home: Path) -> None:
    installer = FakeInstaller()
    cluster = make(stub, home, installer)
    created = cluster.create("demo", nodes=2)

    # every resource labelled, firewall rules as promised
    for kind in ("ssh_keys", "networks", "firewalls", "servers"):
        assert stub.store[kind], kind
        for obj in stub.store[kind].values():
            assert obj["labels"]["kubelab"] == "true"
            assert obj["labels"]["kubelab-cluster"] == "demo"
    (firewall,) = stub.store["firewalls"].values()
    rules = {r["port"]: r["source_ips"] for r in firewall["rules"] if r["port"]}
    assert rules["22"] == rules["6443"] == [f"{ALLOWED_IP}/32"]
    assert rules["80"] == rules["443"] == ["0.0.0.0/0", "::/0"]
    servers = list(stub.store["servers"].values())
    assert len(servers) == 3
    assert all(s["image"]["name"] == "ubuntu-24.04" and s["private_net"] for s in servers)

    # action polling happened: 2 polls for each server's 2 actions + the firewall action
    assert cluster.poll_count >= 3 * 2 * 2
    assert stub.action_gets == cluster.poll_count

    # installer got the nodes and the 0600 key; kubeconfig stored 0600, pointed at the CP
    nodes, key_path = installer.calls[0]
    assert [n.role for n in nodes] == ["control-plane", "worker", "worker"]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert stat.S_IMODE(created.kubeconfig.stat().st_mode) == 0o600
    assert f"https://{created.control_plane_ip}:6443" in created.kubeconfig.read_text()
    (ssh_key,) = stub.store["ssh_keys"].values()
    assert ssh_key["public_key"].startswith("ssh-ed25519 ")

    state = StateStore(home / "state.json").load()
    record = state.clusters["demo"]
    assert record.provider == "hetzner" and record.kubeconfig == str(created.kubeconfig)
    kinds = sorted(r.kind for r in record.resources)
    assert kinds == ["firewall", "network", "server", "server", "server", "ssh_key"]

    # the cluster itself made a load balancer and a volume (CCM / CSI labels only)
    server_id = servers[1]["id"]
    network_id = next(iter(stub.store["networks"]))
    stub.add_ccm_load_balancer(server_id, network_id)
    stub.add_csi_volume(server_id)
    left = cluster.leftovers("demo")
    assert {item.kind for item in left} == {
        "server",
        "load_balancer",
        "volume",
        "firewall",
        "network",
        "ssh_key",
    }
    lb = next(item for item in left if item.kind == "load_balancer")
    assert str(lb.monthly_cost) == "6.4100"

    lines = cluster.delete("demo")
    assert stub.empty(), stub.store
    assert any("load balancer" in line for line in lines)
    assert cluster.leftovers("demo") == []
    assert "demo" not in StateStore(home / "state.json").load().clusters
    assert not (home / "hetzner-demo").exists()
    # idempotent
    assert cluster.delete("demo") == []


def test_429_and_5xx_are_retried(stub: StubAPI, home: Path) -> None:
    stub.fail("POST", "/networks", 429, "rate_limit_exceeded", times=2)
    stub.fail("POST", "/servers", 503, "unavailable")
    stub.fail("GET", r"/actions/\d+", 502, "bad_gateway")
    stub.fail("POST", "/ssh_keys", 500, "server_error")
    make(stub, home).create("demo", nodes=0)
    assert not stub.faults
    assert len(stub.store["servers"]) == 1
    posts = [p for m, p in stub.requests if m == "POST"]
    assert posts.count("/networks") == 3 and posts.count("/servers") == 2
    assert posts.count("/ssh_keys") == 2
    # One retry policy per failure, never two stacked: hcloud retried the rate limit and
    # the 502 (three waits of its own), kubelab the 503 and the 500.
    assert len(HCLOUD_SLEEPS) == 3, HCLOUD_SLEEPS


def test_lost_answers_are_adopted_not_duplicated(stub: StubAPI, home: Path) -> None:
    # the API made the resource but its answer was a 503: the retry gets uniqueness_error
    for path in ("/ssh_keys", "/networks", "/firewalls", "/servers"):
        stub.lose_answer("POST", path)
    created = make(stub, home).create("demo", nodes=1)
    assert not stub.lost
    assert {k: len(v) for k, v in stub.store.items() if v} == {
        "ssh_keys": 1,
        "networks": 1,
        "firewalls": 1,
        "servers": 2,
    }
    recorded = StateStore(home / "state.json").load().clusters["demo"].resources
    assert sorted(r.kind for r in recorded) == [
        "firewall",
        "network",
        "server",
        "server",
        "ssh_key",
    ]
    assert [n.role for n in created.nodes] == ["control-plane", "worker"]


def test_name_taken_by_someone_else_is_not_adopted(stub: StubAPI, home: Path) -> None:
    cluster = make(stub, home)
    original = cluster.client.networks.create

    def someone_else_first(**kwargs: Any) -> Any:  # another tool takes the name meanwhile
        original(**{**kwargs, "labels": {"owner": "someone"}})
        return original(**kwargs)

    cluster.client.networks.create = someone_else_first  # type: ignore[method-assign]
    with pytest.raises(SetupError, match="uniqueness_error"):
        cluster.create("demo", nodes=0, keep_on_failure=True)
    assert [n["labels"] for n in stub.store["networks"].values()] == [{"owner": "someone"}]


def test_rate_limit_that_does_not_stop_gives_clear_message(stub: StubAPI, home: Path) -> None:
    stub.fail("GET", "/pricing", 429, "rate_limit_exceeded", times=10_000)
    cluster = make(stub, home)
    with pytest.raises(SetupError, match="rate limit") as info:
        cluster.plan("demo")
    assert "wait a few minutes" in (info.value.hint or "")
    # hcloud's five retries, then the answer: kubelab does not start them over.
    assert len(HCLOUD_SLEEPS) == 5
    assert [p for m, p in stub.requests if m == "GET"].count("/pricing") == 6


def test_failure_after_servers_exist_then_delete_leaves_nothing(stub: StubAPI, home: Path) -> None:
    cluster = make(stub, home, FakeInstaller(fail=True))
    with pytest.raises(SetupError, match="SSH"):
        cluster.create("demo", nodes=1, keep_on_failure=True)
    assert len(stub.store["servers"]) == 2
    record = StateStore(home / "state.json").load().clusters["demo"]
    assert len(record.resources) == 5
    assert len(cluster.leftovers("demo")) == 5
    cluster.delete("demo")
    assert cluster.leftovers("demo") == []
    assert stub.empty()


def test_failed_create_rolls_back(stub: StubAPI, home: Path) -> None:
    cluster = make(stub, home, FakeInstaller(fail=True))
    with pytest.raises(SetupError, match="SSH"):
        cluster.create("demo", nodes=1)
    assert stub.empty()
    assert cluster.leftovers() == []


def test_delete_from_state_when_labels_were_lost(stub: StubAPI, home: Path) -> None:
    cluster = make(stub, home)
    cluster.create("demo", nodes=0)
    for server in stub.store["servers"].values():
        server["labels"] = {}
    cluster.delete("demo")
    assert stub.empty()


def test_bad_token_gives_clear_message(stub: StubAPI, home: Path) -> None:
    stub.token = "another-token"
    with pytest.raises(SetupError, match="HCLOUD_TOKEN is not valid") as info:
        make(stub, home).create("demo")
    assert "Read & Write" in (info.value.hint or "")


def test_read_only_token_gives_clear_message(stub: StubAPI, home: Path) -> None:
    stub.read_only = True
    with pytest.raises(SetupError, match="read-only: create a Read & Write token"):
        make(stub, home).create("demo", keep_on_failure=True)


def test_quota_and_unavailable_type_messages(stub: StubAPI, home: Path) -> None:
    stub.fail("POST", "/servers", 403, "resource_limit_exceeded")
    with pytest.raises(SetupError, match="quota exceeded") as info:
        make(stub, home).create("demo", nodes=0)
    assert "leftovers" in (info.value.hint or "")
    assert stub.empty()
    stub.fail("POST", "/servers", 412, "resource_unavailable")
    with pytest.raises(SetupError, match="cx33 in nbg1 is not available"):
        make(stub, home).create("demo", nodes=0)
    assert stub.empty()


def test_token_never_appears_in_output_logs_or_errors(
    stub: StubAPI,
    home: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    cluster = make(stub, home)
    texts.append(repr(cluster))
    stub.fail("POST", "/networks", 429, "rate_limit_exceeded")
    created = cluster.create("demo", nodes=1)
    texts.extend(iter_plan_lines(cluster.plan("demo")))
    texts.extend(str(item) for item in cluster.leftovers("demo"))
    texts.extend(cluster.delete("demo"))
    stub.token = "rotated"
    for call in (lambda: cluster.create("demo2"), lambda: cluster.plan("demo2")):
        with pytest.raises(SetupError) as info:
            call()
        texts += [str(info.value), info.value.hint or "", repr(info.value.__cause__)]
    out, err = capsys.readouterr()
    texts += [out, err, caplog.text]
    texts += [p.read_text(errors="replace") for p in home.rglob("*") if p.is_file()]
    blob = "\n".join(texts)
    assert TOKEN not in blob
    assert "SECRET-CERT" not in blob and "U0VDUkVULUtFWQ" not in caplog.text
    assert "PRIVATE KEY" not in caplog.text + out + err
    assert created.kubeconfig.name == "kubeconfig"


def test_provider_reuses_existing_cluster(stub: StubAPI, home: Path) -> None:
    cluster = make(stub, home)
    provider = HetznerProvider("demo", workers=0, cluster=cluster)
    first = provider.ensure_cluster("lesson")
    posts = len([r for r in stub.requests if r[0] == "POST"])
    second = provider.ensure_cluster("lesson")
    assert first.kubeconfig == second.kubeconfig
    assert len([r for r in stub.requests if r[0] == "POST"]) == posts
    assert provider.owns_cluster
    assert provider.teardown(second.details) == []
    assert stub.store["servers"]
    lines = provider.teardown(second.details, everything=True)
    assert lines and stub.empty()


def test_cli_plan_confirm_delete_and_leftovers_never_print_the_token(
    stub: StubAPI, home: Path
) -> None:
    """`kubelab cluster ...` in a real process against the stub, with a fake token."""
    from support import run_cli

    env = {"KUBELAB_HOME": str(home), "HCLOUD_TOKEN": TOKEN, "HCLOUD_ENDPOINT": stub.url}
    # Not a terminal and no --yes: the plan and its cost are shown, nothing is created.
    proc = run_cli("cluster", "create", "--provider", "hetzner", "--nodes", "1", env=env)
    assert proc.returncode == 2, proc.stderr
    assert "EUR/month" in proc.stdout and "needs a confirmation" in proc.stderr
    assert stub.empty()
    # A cluster made through the library (no SSH here), then removed through the CLI.
    make(stub, home).create("kubelab", 1)
    left = run_cli("cluster", "leftovers", "--provider", "hetzner", "-o", "json", env=env)
    assert left.returncode == 1 and json.loads(left.stdout)
    gone = run_cli("cluster", "delete", "--provider", "hetzner", "-o", "json", env=env)
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout)["leftovers"] == [] and stub.empty()
    after = run_cli("cluster", "leftovers", "--provider", "hetzner", env=env)
    assert after.returncode == 0 and "Nothing is left" in after.stdout
    for output in (proc, left, gone, after):
        assert TOKEN not in output.stdout + output.stderr


def test_a_class_network_is_admitted_to_the_api_only(stub: StubAPI, home: Path) -> None:
    """Students' kubeconfigs point at the control plane's public IP: `class create
    --allow-from` opens 6443 (not SSH) to their network, and a later call adds to it."""
    cluster = make(stub, home)
    cluster.create("demo", nodes=0)
    sources = cluster.allow_api_from("demo", ["198.51.100.0/24"])
    assert sources == [f"{ALLOWED_IP}/32", "198.51.100.0/24"]
    (firewall,) = stub.store["firewalls"].values()
    rules = {r["port"]: r["source_ips"] for r in firewall["rules"] if r["port"]}
    assert rules["6443"] == [f"{ALLOWED_IP}/32", "198.51.100.0/24"]
    assert rules["22"] == [f"{ALLOWED_IP}/32"]  # SSH stays the instructor's
    assert rules["80"] == ["0.0.0.0/0", "::/0"]
    again = cluster.allow_api_from("demo", ["203.0.113.7", "198.51.100.0/24"])
    assert again == [f"{ALLOWED_IP}/32", "198.51.100.0/24", "203.0.113.7/32"]
    assert StateStore(home / "state.json").load().clusters["demo"].details["api_from"] == [
        "198.51.100.0/24",
        "203.0.113.7/32",
    ]
    with pytest.raises(UsageError, match="not an IP address"):
        cluster.allow_api_from("demo", ["students"])
