"""Providers: kind's cluster config and CLI calls (with a fake kind), existing's checks."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from kubelab.errors import SetupError
from kubelab.providers import get_provider
from kubelab.providers.existing import ExistingProvider
from kubelab.providers.kind import (
    GITEA_NODE_PORT,
    HTTP_NODE_PORT,
    KindProvider,
    kind_config,
    registry_host,
    registry_hosts_toml,
)


def _fake_kind(tmp_path, clusters=""):
    log = tmp_path / "kind.log"
    script = tmp_path / "bin" / "kind"
    script.parent.mkdir()
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {log}\n'
        'case "$1 $2" in\n'
        f'  "get clusters") printf "{clusters}" ;;\n'
        '  "get kubeconfig") echo "apiVersion: v1" ; echo "kind: Config" ;;\n'
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script.parent, log


def test_kind_config_maps_gateway_and_registry(tmp_path):
    config = kind_config("kubelab", tmp_path)
    node = config["nodes"][0]
    ports = {(p["containerPort"], p["hostPort"]) for p in node["extraPortMappings"]}
    assert (HTTP_NODE_PORT, 80) in ports and (GITEA_NODE_PORT, GITEA_NODE_PORT) in ports
    assert node["extraMounts"][0]["containerPath"] == "/etc/containerd/certs.d"
    assert 'config_path = "/etc/containerd/certs.d"' in config["containerdConfigPatches"][0]
    toml = registry_hosts_toml()
    assert f'server = "http://{registry_host()}"' in toml and '"pull", "resolve"' in toml


def test_kind_creates_once_and_writes_a_private_kubeconfig(tmp_path, monkeypatch):
    bin_dir, log = _fake_kind(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    info = KindProvider("kubelab").ensure_cluster("istio")
    calls = log.read_text().splitlines()
    assert calls[0] == "get clusters"
    assert calls[1].startswith("create cluster --name kubelab --config ")
    config = json.loads(Path(calls[1].split("--config ")[1].split()[0]).read_text())
    assert config["name"] == "kubelab"
    assert oct(info.kubeconfig.stat().st_mode & 0o777) == "0o600"
    assert "registry_host" not in info.details  # a typed fact now, not a details key
    facts = KindProvider("kubelab").facts()
    assert facts.registry is not None and facts.registry.host == registry_host()
    assert not facts.registry.push_via_forward  # the host port mapping serves the push
    assert (facts.gateway_http_node_port, facts.gateway_https_node_port) == (30080, 30443)
    mirror = Path(config["nodes"][0]["extraMounts"][0]["hostPath"]) / registry_host()
    assert (mirror / "hosts.toml").read_text() == registry_hosts_toml()


def test_kind_reuses_an_existing_cluster(tmp_path, monkeypatch):
    bin_dir, log = _fake_kind(tmp_path, clusters="kubelab\\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    KindProvider("kubelab").ensure_cluster("istio")
    assert not any(c.startswith("create") for c in log.read_text().splitlines())


def test_existing_without_kubeconfig_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(SetupError) as info:
        ExistingProvider().ensure_cluster("istio")
    assert "KUBECONFIG" in (info.value.hint or "")


def test_get_provider_knows_every_provider():
    assert get_provider("sandbox").name == "sandbox"
    assert get_provider("kind").name == "kind"
    assert get_provider("existing").name == "existing"


def test_kind_down_all_deletes_the_cluster(tmp_path, monkeypatch):
    bin_dir, log = _fake_kind(tmp_path, clusters="kubelab\\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    provider = KindProvider("kubelab")
    assert provider.teardown({}) == []
    assert provider.teardown({}, everything=True) == ["deleted kind cluster kubelab"]
    assert "delete cluster --name kubelab" in log.read_text()


def test_wildcard_domain_from_the_gateway_ip(monkeypatch):
    from kubelab.lessons.loader import find_lesson
    from kubelab.lessons.runner import LessonRunner
    from kubelab.state import StateStore

    class FakeKube:
        def __init__(self, address):
            self.address = address

        def get(self, api_version, kind, name, namespace=None):
            return {
                "spec": {"type": "LoadBalancer"},
                "status": {"loadBalancer": {"ingress": [self.address]}},
            }

    store = StateStore()
    lines = []
    runner = LessonRunner(
        find_lesson("istio-traffic-splitting"),
        KindProvider(),
        store,
        lambda step, msg: lines.append(msg),
    )
    runner._kube = FakeKube({"ip": "203.0.113.7"})
    assert runner._wildcard_domain() is True
    details = store.load().lesson("istio-traffic-splitting").details
    assert details["domain"] == "203-0-113-7.sslip.io"
    assert details["gateway_url"] == "http://203.0.113.7"
    assert runner.settings().domain == "203-0-113-7.sslip.io"
    # A hostname (some clouds) cannot be turned into a wildcard name: port-forward instead.
    other = LessonRunner(
        find_lesson("istio-traffic-splitting"),
        KindProvider(),
        StateStore(store.path.with_name("other.json")),
        lambda step, msg: lines.append(msg),
    )
    other._kube = FakeKube({"hostname": "lb.example.com"})
    assert other._wildcard_domain() is False
    assert "kubelab open kiali" in lines[-1]


def test_checks_on_a_real_cluster_reach_metrics_and_traces(tmp_path):
    from kubelab.components.catalog import CATALOG
    from kubelab.lessons.runner import check_context
    from kubelab.providers.sandbox import SandboxProvider
    from kubelab.state import LessonRecord

    record = LessonRecord(
        lesson="istio-traffic-splitting", details={"kubeconfig": str(tmp_path / "kc")}
    )
    ctx = check_context(ExistingProvider(), record)
    assert ctx.services["victoria-metrics"] == CATALOG["victoria-metrics"].api
    assert ctx.services["jaeger"] == CATALOG["jaeger"].api
    # The sandbox answers at the same addresses (its span receiver always, its Prometheus
    # when installed), through its API's service proxy.
    sandbox = check_context(SandboxProvider(), record).services
    assert sandbox["jaeger"] == CATALOG["jaeger"].api
    assert "kiali" not in sandbox and "gitea" not in sandbox


def test_the_sandbox_has_metrics_only_with_prometheus(tmp_path, monkeypatch):
    from kubelab.providers.sandbox import SandboxProvider

    components = ["istio", "victoria-metrics", "kiali", "jaeger", "gitea"]
    fake = tmp_path / "prometheus"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("KUBELAB_PROMETHEUS", str(fake))
    assert SandboxProvider().available_components(components) == {"jaeger", "victoria-metrics"}
    monkeypatch.setenv("KUBELAB_PROMETHEUS", "")
    assert SandboxProvider().available_components(components) == {"jaeger"}
    hint = SandboxProvider().missing_component_hint("victoria-metrics")
    assert "apt install prometheus" in hint
    # A lesson without them gets none of them.
    assert SandboxProvider().available_components(["argo-rollouts"]) == set()


def test_hetzner_facts_name_the_clusters_own_location(tmp_path):
    """The load balancer is made where the cluster is: its recorded location, else the
    provider's (the hcloud CCM makes none without one)."""
    from kubelab.providers.hetzner import LB_LOCATION_ANNOTATION, HetznerProvider
    from kubelab.state import ClusterRecord, StateStore

    store = StateStore(tmp_path / "state.json")
    fresh = HetznerProvider("lab", location="fsn1", state=store).facts()
    assert dict(fresh.gateway_annotations) == {LB_LOCATION_ANNOTATION: "fsn1"}
    with store.transaction() as state:
        state.clusters["lab"] = ClusterRecord(
            name="lab", provider="hetzner", details={"location": "hel1"}
        )
    adopted = HetznerProvider("lab", state=store).facts()
    assert dict(adopted.gateway_annotations) == {LB_LOCATION_ANNOTATION: "hel1"}
    assert adopted.registry is not None and adopted.registry.host == "localhost:30300"


def test_mesh_running_reads_the_envoy_pid_of_runtime_json(tmp_path):
    import json
    import subprocess

    from kubelab.providers.sandbox import mesh_running

    assert mesh_running(tmp_path) is False  # no runtime.json
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "runtime.json").write_text(json.dumps({"envoy_pid": dead.pid}))
    assert mesh_running(tmp_path) is False
    # A live process that is not Envoy (a recycled PID) is not the mesh either.
    (tmp_path / "runtime.json").write_text(json.dumps({"envoy_pid": os.getpid()}))
    assert mesh_running(tmp_path) is False
