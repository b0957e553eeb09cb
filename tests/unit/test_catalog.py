"""The component catalog: exact pins, a release DAG, and values that wire the pieces together.

No network and no cluster: these tests read the catalog and the values kubelab would install
with. The charts themselves were rendered with these values when the pins were chosen (see
docs/components.md); here we check the wiring a render cannot show at a glance (Kiali and
Flagger read the VictoriaMetrics service the checks query, VictoriaMetrics scrapes Envoy and
istiod, no secret sits in the values) and that the extra objects pass kubelab's validation.
"""

from __future__ import annotations

import copy
import graphlib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from support import ROOT, SHARED

from kubelab.components import catalog, values
from kubelab.components.catalog import (
    CATALOG,
    RELEASE_COMPONENT,
    RELEASES,
    Component,
    install_order,
    release_order,
)
from kubelab.components.values import (
    InstallSettings,
    component_names,
    extra_manifests,
    metrics_url,
    values_for,
)
from kubelab.errors import UsageError
from kubelab.validation.manifests import validate_object

SETTINGS = {
    "default": InstallSettings(),
    "kind": InstallSettings(
        gateway_service_type="NodePort",
        gateway_http_node_port=30080,
        gateway_https_node_port=30443,
        storage_class="standard",
        registry_host="localhost:30300",
        gitea_node_port=30300,
    ),
    "domain": InstallSettings(domain="lab.example.org"),
    "tls": InstallSettings(domain="lab.example.org", tls=True, email="teacher@example.org"),
    "exposed": InstallSettings(
        domain="lab.example.org", tls=True, email="teacher@example.org", expose_dashboards=True
    ),
    "no-jaeger": InstallSettings(components=frozenset({"istio", "victoria-metrics", "kiali"})),
}
ALL_SETTINGS = list(SETTINGS.values())
SETTING_IDS = list(SETTINGS)
EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+$")
# Keys whose value would be a credential if it were a literal ...
SECRET_KEY = re.compile(r"(password|passwd|token|secret|api_?key|private_?key|signing_key)$", re.I)
# ... except keys that only name where a credential lives.
REFERENCE_KEY = re.compile(r"(existingsecret|secretname|secretref|credentialname)$", re.I)


def _walk(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every ``(dotted path, leaf)`` of a values tree."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _walk(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _walk(v, f"{path}[{i}]")]
    return [(path, value)]


def _objects(component: Component, settings: InstallSettings, *kinds: str) -> list[Any]:
    return [o for o in extra_manifests(component, settings) if o["kind"] in kinds]


def _get(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


def _job(scrape: dict[str, Any], name: str) -> dict[str, Any]:
    jobs = {j["job_name"]: j for j in scrape["scrape_configs"]}
    return jobs[name]


def _kept(job: dict[str, Any], label: str) -> list[str]:
    """Regexes of the ``keep`` rules on ``label`` (alone or as part of a joined rule)."""
    out = []
    for rule in job.get("relabel_configs", []):
        if rule.get("action") == "keep" and label in rule["source_labels"]:
            parts = rule["regex"].split(rule.get("separator", ";"))
            out.append(parts[rule["source_labels"].index(label)] if len(parts) > 1 else parts[0])
    return out


# ----------------------------------------------------------------------------- the catalog


def test_every_chart_version_is_exact():
    for release in RELEASES.values():
        assert EXACT_VERSION.match(release.version), (release.name, release.version)
        assert release.repo.startswith("https://"), release.name
        assert release.timeout > 0


def test_release_names_are_unique_across_the_catalog():
    names = [r.name for c in CATALOG.values() for r in c.releases]
    assert len(names) == len(set(names)) == len(RELEASES)


def test_every_component_is_installed_by_releases():
    for component in CATALOG.values():
        assert component.releases, component.name
        assert {RELEASE_COMPONENT[r.name] for r in component.releases} == {component.name}


def test_release_dependencies_exist_and_form_a_dag():
    graph = {r.name: set(r.depends_on) for r in RELEASES.values()}
    for name, deps in graph.items():
        assert deps <= set(RELEASES), (name, deps - set(RELEASES))
        assert name not in deps
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises on a cycle
    assert sorted(order) == sorted(RELEASES)


def test_component_dependencies_exist_form_a_dag_and_cover_release_dependencies():
    graph = {c.name: set(c.depends_on) for c in CATALOG.values()}
    for deps in graph.values():
        assert deps <= set(CATALOG)
    list(graphlib.TopologicalSorter(graph).static_order())
    for component in CATALOG.values():
        needed = {c.name for c in install_order([component.name])}
        for release in component.releases:
            for dep in release.depends_on:
                assert RELEASE_COMPONENT[dep] in needed, (release.name, dep)


def test_install_order_puts_dependencies_first_and_includes_them():
    for name in CATALOG:
        ordered = [c.name for c in install_order([name])]
        assert ordered[-1] == name
        for i, component in enumerate(ordered):
            assert set(CATALOG[component].depends_on) <= set(ordered[:i])
    lesson = ["istio", "victoria-metrics", "kiali", "jaeger", "gitea"]
    assert [c.name for c in install_order(["kiali"])] == ["istio", "victoria-metrics", "kiali"]
    assert sorted(c.name for c in install_order(lesson)) == sorted(lesson)


def test_release_order_puts_dependencies_first():
    ordered = release_order(install_order(list(CATALOG)))
    assert sorted(r.name for r in ordered) == sorted(RELEASES)
    position = {r.name: i for i, r in enumerate(ordered)}
    for release in ordered:
        for dep in release.depends_on:
            assert position[dep] < position[release.name], (dep, release.name)
    names = [r.name for r in release_order(install_order(["kiali"]))]
    assert names.index("istio-base") < names.index("istiod") < names.index("kiali")
    assert names.index("victoria-metrics") < names.index("kiali")


def test_every_lesson_component_is_in_the_catalog():
    for lesson in (ROOT / "labs").glob("*/lesson.yaml"):
        data = yaml.safe_load(lesson.read_text(encoding="utf-8"))
        assert set(data.get("components") or []) <= set(CATALOG), lesson


def test_api_endpoints_are_namespace_service_port():
    for component in CATALOG.values():
        for endpoint in (component.api, component.ui):
            if endpoint is None:
                continue
            namespace, service, port = endpoint
            assert re.match(r"^[a-z0-9-]+$", namespace) and re.match(r"^[a-z0-9-]+$", service)
            assert 0 < port < 65536
    assert CATALOG["victoria-metrics"].api == ("monitoring", "victoria-metrics", 8428)
    assert CATALOG["jaeger"].api == ("istio-system", "jaeger", 16686)
    assert CATALOG["kiali"].api == ("istio-system", "kiali", 20001)
    assert CATALOG["gitea"].api == ("gitea", "gitea-http", 3000)


# ----------------------------------------------------------------------------- values


def test_every_release_has_values():
    for release in RELEASES.values():
        assert isinstance(values_for(release, InstallSettings()), dict)


@pytest.mark.parametrize("settings", ALL_SETTINGS, ids=SETTING_IDS)
def test_values_are_deterministic_and_json_serialisable(settings):
    for release in RELEASES.values():
        first = values_for(release, settings)
        again = values_for(release, copy.deepcopy(settings))
        assert first == again
        assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)
        assert json.loads(json.dumps(first)) == first  # only JSON types
        # A fresh dict each time: a caller mutating one cannot change the next.
        first["mutated"] = True
        assert "mutated" not in values_for(release, settings)


def _literal_secrets(tree: dict[str, Any]) -> list[str]:
    """Paths of credential-like keys holding a value (not just naming a Secret)."""
    found = []
    for path, leaf in _walk(tree):
        key = re.sub(r"\[\d+\]$", "", path).rsplit(".", 1)[-1]
        if SECRET_KEY.search(key) and not REFERENCE_KEY.search(key) and leaf not in (None, ""):
            found.append(path)
    return found


def test_the_secret_scan_finds_planted_literals():
    planted = {"gitea": {"admin": {"password": "hunter2", "existingSecret": "gitea-admin"}}}
    assert _literal_secrets(planted) == ["gitea.admin.password"]
    assert _literal_secrets({"metrics": {"token": "abc"}, "passwordMode": "keepUpdated"}) == [
        "metrics.token"
    ]


@pytest.mark.parametrize("settings", ALL_SETTINGS, ids=SETTING_IDS)
def test_no_secret_literal_in_any_values(settings):
    for release in RELEASES.values():
        tree = values_for(release, settings)
        for path in release.secret_paths:
            leaf = _get(tree, path)
            assert not leaf or REFERENCE_KEY.search(path.rsplit(".", 1)[-1]), (release.name, path)
        assert _literal_secrets(tree) == [], release.name


def test_gitea_admin_account_comes_from_the_existing_secret():
    tree = values_for(RELEASES["gitea"], InstallSettings(gitea_admin_secret="class-admin"))
    admin = tree["gitea"]["admin"]
    assert admin["existingSecret"] == "class-admin"
    assert "password" not in admin and "username" not in admin


def test_gitea_is_single_sqlite_with_registry_and_no_database_subcharts():
    tree = values_for(RELEASES["gitea"], InstallSettings())
    for subchart in ("postgresql", "postgresql-ha", "valkey", "valkey-cluster"):
        assert tree[subchart] == {"enabled": False}
    config = tree["gitea"]["config"]
    assert config["database"]["DB_TYPE"] == "sqlite3"
    assert config["packages"]["ENABLED"] is True
    assert tree["replicaCount"] == 1 and tree["strategy"]["type"] == "Recreate"
    assert tree["persistence"]["size"] == "1Gi"
    assert tree["service"]["http"]["port"] == catalog.GITEA_PORT == CATALOG["gitea"].api[2]


@pytest.mark.parametrize(
    ("settings", "root_url", "domain"),
    [
        (InstallSettings(), "http://gitea-http.gitea.svc.cluster.local:3000/", None),
        (InstallSettings(domain="lab.example.org"), "http://gitea.lab.example.org/", None),
        (SETTINGS["tls"], "https://gitea.lab.example.org/", "gitea.lab.example.org"),
        (SETTINGS["kind"], "http://localhost:30300/", "localhost"),
    ],
)
def test_gitea_root_url_follows_the_settings(settings, root_url, domain):
    server = values_for(RELEASES["gitea"], settings)["gitea"]["config"]["server"]
    assert server["ROOT_URL"] == root_url
    assert server["DOMAIN"] == (domain or root_url.split("://")[1].split(":")[0].rstrip("/"))


def test_gitea_service_is_cluster_ip_or_a_fixed_node_port():
    default = values_for(RELEASES["gitea"], InstallSettings())["service"]["http"]
    assert default == {"type": "ClusterIP", "port": 3000, "clusterIP": ""}
    kind = values_for(RELEASES["gitea"], SETTINGS["kind"])["service"]["http"]
    assert kind["type"] == "NodePort" and kind["nodePort"] == 30300


def test_storage_class_reaches_both_volumes():
    vm = values_for(RELEASES["victoria-metrics"], SETTINGS["kind"])
    gitea = values_for(RELEASES["gitea"], SETTINGS["kind"])
    assert vm["server"]["persistentVolume"]["storageClassName"] == "standard"
    assert gitea["persistence"]["storageClass"] == "standard"


def test_victoria_metrics_scrapes_envoy_sidecars_and_istiod():
    server = values_for(RELEASES["victoria-metrics"], InstallSettings())["server"]
    assert server["scrape"]["enabled"] is True
    assert server["fullnameOverride"] == CATALOG["victoria-metrics"].api[1]
    scrape = server["scrape"]["config"]
    envoy = _job(scrape, "envoy-stats")
    assert envoy["metrics_path"] == "/stats/prometheus"
    assert _kept(envoy, "__meta_kubernetes_pod_container_port_number") == ["15090"]
    istiod = _job(scrape, "istiod")
    assert istiod.get("metrics_path", "/metrics") == "/metrics"
    assert _kept(istiod, "__meta_kubernetes_pod_container_port_number") == ["15014"]
    assert _kept(istiod, "__meta_kubernetes_pod_label_app") == ["istiod"]
    # Annotated pods are scraped too, but not the Istio agent's merged port (no duplicates).
    pods = _job(scrape, "kubernetes-pods")
    drops = [r for r in pods["relabel_configs"] if r.get("action") == "drop"]
    assert any(r["regex"] == "15020" for r in drops)


def test_istio_does_not_merge_app_metrics_and_keeps_prometheus_metrics():
    mesh = values_for(RELEASES["istiod"], InstallSettings())["meshConfig"]
    assert mesh["enablePrometheusMerge"] is False
    assert mesh["defaultProviders"]["metrics"] == ["prometheus"]


def test_sidecars_rely_on_istio_cni_installed_before_istiod():
    """With the CNI node agent, istiod injects istio-validation (no capabilities) instead of
    istio-init (NET_ADMIN, NET_RAW): what lets student namespaces enforce baseline."""
    assert values_for(RELEASES["istiod"], InstallSettings())["cni"] == {"enabled": True}
    assert "istio-cni" in RELEASES["istiod"].depends_on
    assert RELEASES["istio-cni"].chart == "cni"
    assert RELEASES["istio-cni"].namespace == "istio-system"
    names = [r.name for r in release_order(install_order(["istio"]))]
    assert names.index("istio-cni") < names.index("istiod") < names.index("istio-ingressgateway")


@pytest.mark.parametrize(
    ("platform", "cni_values"),
    [
        ("", {}),  # kind, kubeadm: /opt/cni/bin and /etc/cni/net.d, the chart's defaults
        ("k3s", {"global": {"platform": "k3s"}}),  # the chart's profile-platform-k3s.yaml
        # The gke profile relies on detecting "-gke" in the server version; the same two
        # settings are explicit instead (a profile would override them).
        ("gke", {"cniBinDir": "/home/kubernetes/bin", "resourceQuotas": {"enabled": True}}),
        (None, {}),  # not known yet (a dry-run of the existing provider)
    ],
)
def test_the_cni_node_agent_is_set_up_for_the_platform(platform, cni_values):
    settings = InstallSettings(mesh_platform=platform)
    assert values_for(RELEASES["istio-cni"], settings) == cni_values
    istiod = values_for(RELEASES["istiod"], settings)
    assert istiod.get("global") == ({"platform": platform} if platform else None)


def test_each_provider_names_its_mesh_platform(tmp_path, monkeypatch):
    from kubelab.cluster.facts import ClusterFacts, platform_of
    from kubelab.providers import get_provider

    monkeypatch.setenv("KUBELAB_HOME", str(tmp_path))
    expected = {"kind": "", "hetzner": "k3s", "gke": "gke", "existing": None, "sandbox": ""}
    for name, platform in expected.items():
        facts = get_provider(name).facts()
        assert facts.mesh_platform == platform, name
        assert ClusterFacts.from_state(facts.to_state()) == facts
    # A record from before the field existed reads as the usual layout.
    assert ClusterFacts.from_state({"registry": None}).mesh_platform == ""
    assert platform_of("v1.35.5+k3s1") == "k3s"
    assert platform_of("v1.33.5-gke.1080000") == "gke"
    assert platform_of("v1.31.4") == platform_of("v1.34.1-eks-113cf36") == ""


def test_kiali_and_flagger_read_the_metrics_service_the_checks_query():
    namespace, service, port = CATALOG["victoria-metrics"].api  # type: ignore[misc]
    url = f"http://{service}.{namespace}.svc.cluster.local:{port}"
    assert metrics_url() == url
    for settings in ALL_SETTINGS:
        kiali = values_for(RELEASES["kiali"], settings)
        prometheus = kiali["external_services"]["prometheus"]
        assert prometheus["url"] == url
        assert prometheus["health_check_url"] == f"{url}/-/healthy"
        assert prometheus["thanos_proxy"]["scrape_interval"] == values.SCRAPE_INTERVAL
        flagger = values_for(RELEASES["flagger"], settings)
        assert flagger == {"meshProvider": "istio", "metricsServer": url}
    vm = values_for(RELEASES["victoria-metrics"], InstallSettings())["server"]
    assert vm["scrape"]["config"]["global"]["scrape_interval"] == values.SCRAPE_INTERVAL
    assert vm["retentionPeriod"] == values.RETENTION


@pytest.mark.parametrize("settings", ALL_SETTINGS, ids=SETTING_IDS)
def test_kiali_asks_for_a_token_and_is_view_only_whoever_reaches_it(settings):
    # A pod of the cluster reaches Kiali's Service as well as a visitor of its hostname:
    # neither gets in without a token, and nothing can be changed through it.
    kiali = values_for(RELEASES["kiali"], settings)
    assert kiali["auth"] == {"strategy": "token"}
    assert kiali["deployment"]["view_only_mode"] is True
    # Jaeger has no login: Kiali never links to a public Jaeger.
    assert kiali["external_services"].get("tracing", {}).get("external_url", "") == ""
    sa, binding = values.dashboard_viewer_manifests()
    assert [
        o for o in extra_manifests(CATALOG["kiali"], settings) if o["kind"] != "VirtualService"
    ] == [sa, binding]
    assert binding["roleRef"]["name"] == values.KIALI_VIEWER_ROLE
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "istio-system"}
    ]


def test_kiali_reads_jaeger_at_its_query_service():
    kiali = values_for(RELEASES["kiali"], InstallSettings())
    assert kiali["server"]["port"] == CATALOG["kiali"].api[2]
    tracing = kiali["external_services"]["tracing"]
    namespace, service, port = CATALOG["jaeger"].api  # type: ignore[misc]
    assert tracing["internal_url"] == f"http://{service}.{namespace}.svc.cluster.local:{port}"
    assert tracing["enabled"] is True and tracing["use_grpc"] is False


def test_istio_traces_to_the_jaeger_collector():
    mesh = values_for(RELEASES["istiod"], InstallSettings())["meshConfig"]
    assert mesh["enableTracing"] is True
    assert mesh["defaultProviders"]["tracing"] == [values.TRACING_PROVIDER]
    (provider,) = mesh["extensionProviders"]
    namespace, service, _ = CATALOG["jaeger"].api  # type: ignore[misc]
    assert provider["name"] == values.TRACING_PROVIDER
    assert provider["opentelemetry"] == {
        "service": f"{service}.{namespace}.svc.cluster.local",
        "port": catalog.JAEGER_OTLP_GRPC_PORT,
    }


def test_without_jaeger_nothing_points_at_it():
    settings = SETTINGS["no-jaeger"]
    mesh = values_for(RELEASES["istiod"], settings)["meshConfig"]
    assert "tracing" not in mesh["defaultProviders"] and "extensionProviders" not in mesh
    kiali = values_for(RELEASES["kiali"], settings)
    assert kiali["external_services"]["tracing"] == {"enabled": False}
    assert extra_manifests(CATALOG["istio"], settings) == []


@pytest.mark.parametrize("service_type", ["LoadBalancer", "NodePort", "ClusterIP"])
def test_gateway_pods_are_the_ingressgateway_and_service_type_is_a_parameter(service_type):
    tree = values_for(
        RELEASES[catalog.GATEWAY_RELEASE], InstallSettings(gateway_service_type=service_type)
    )
    assert tree["labels"]["istio"] == "ingressgateway"
    assert tree["service"] == {"type": service_type}
    assert RELEASES[catalog.GATEWAY_RELEASE].namespace == "istio-system"


def test_gateway_node_ports_keep_the_charts_ports():
    ports = values_for(RELEASES[catalog.GATEWAY_RELEASE], SETTINGS["kind"])["service"]["ports"]
    assert [(p["name"], p["port"], p.get("nodePort")) for p in ports] == [
        ("status-port", 15021, None),
        ("http2", 80, 30080),
        ("https", 443, 30443),
    ]


def test_other_charts_get_what_the_lessons_need():
    assert values_for(RELEASES["argo-rollouts"], InstallSettings())["dashboard"]["enabled"]
    assert values_for(RELEASES["cert-manager"], InstallSettings())["crds"]["enabled"] is True
    assert values_for(RELEASES["jaeger"], InstallSettings())["fullnameOverride"] == "jaeger"


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tls": True},
        {"tls": True, "domain": "lab.example.org"},
        {"tls": True, "email": "t@example.org"},
        {"gateway_service_type": "Ingress"},
        {"domain": "*.lab.example.org"},
        {"gateway_http_node_port": 80},
        {"registry_host": "http://gitea"},
        {"trace_sampling": 101.0},
        {"mesh_platform": "eks"},
    ],
)
def test_bad_settings_are_usage_errors(kwargs):
    with pytest.raises(UsageError):
        InstallSettings(**kwargs)


def test_tls_adds_cert_manager():
    lesson = ["istio", "gitea"]
    assert component_names(lesson, InstallSettings()) == lesson
    assert component_names(lesson, SETTINGS["tls"]) == [*lesson, "cert-manager"]


# ----------------------------------------------------------------------------- manifests


def _shared_schema(kind: str, version: str) -> dict[str, Any] | None:
    path = SHARED / "schemas" / "crds" / "istio-crds.yaml"
    if not path.is_file():
        return None
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if doc and doc["spec"]["names"]["kind"] == kind:
            for v in doc["spec"]["versions"]:
                if v["name"] == version:
                    schema: dict[str, Any] = v["schema"]["openAPIV3Schema"]
                    return schema
    return None


def test_telemetry_sends_every_trace_to_jaeger_and_matches_the_istio_crd():
    objects = extra_manifests(CATALOG["istio"], InstallSettings())
    (telemetry,) = [o for o in objects if o["kind"] == "Telemetry"]
    assert telemetry["apiVersion"] == "telemetry.istio.io/v1"
    assert telemetry["metadata"]["name"] == "mesh-default"
    assert telemetry["metadata"]["namespace"] == "istio-system"
    (tracing,) = telemetry["spec"]["tracing"]
    assert tracing["providers"] == [{"name": values.TRACING_PROVIDER}]
    assert tracing["randomSamplingPercentage"] == 100.0
    assert validate_object(telemetry, "telemetry") == []
    schema = _shared_schema("Telemetry", "v1")
    if schema is None:
        pytest.skip("../shared/schemas/crds/istio-crds.yaml is not there")
    assert [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(telemetry)] == []


@pytest.mark.parametrize("settings", ALL_SETTINGS, ids=SETTING_IDS)
def test_every_extra_manifest_validates(settings):
    for component in CATALOG.values():
        for obj in extra_manifests(component, settings):
            problems = validate_object(obj, f"{component.name} extra manifest")
            if obj["apiVersion"].startswith("cert-manager.io/"):
                # kubelab keeps no cert-manager CRD schema (yet): "no schema" is all it may say.
                assert all("no schema" in p.message for p in problems), problems
            else:
                assert problems == [], [str(p) for p in problems]


def test_extra_manifests_are_deterministic():
    for settings in ALL_SETTINGS:
        for component in CATALOG.values():
            assert extra_manifests(component, settings) == extra_manifests(component, settings)


def test_a_domain_serves_only_what_has_a_login_and_dashboards_only_over_tls():
    settings = SETTINGS["domain"]
    (gateway,) = [o for o in extra_manifests(CATALOG["istio"], settings) if o["kind"] == "Gateway"]
    assert gateway["spec"]["selector"] == {"istio": "ingressgateway"}
    (server,) = gateway["spec"]["servers"]
    assert server["port"]["number"] == 80
    # Gitea has accounts of its own; no dashboard is served over plain HTTP.
    assert server["hosts"] == ["*/gitea.lab.example.org"]
    for name in ("kiali", "jaeger", "victoria-metrics", "argo-rollouts"):
        assert values.public_host(name, settings) is None, name
        assert [
            o for o in extra_manifests(CATALOG[name], settings) if o["kind"] == "VirtualService"
        ] == []
    with pytest.raises(UsageError, match="--expose-dashboards needs --domain and --tls"):
        InstallSettings(domain="lab.example.org", expose_dashboards=True)

    settings = SETTINGS["exposed"]
    (gateway,) = [o for o in extra_manifests(CATALOG["istio"], settings) if o["kind"] == "Gateway"]
    (server,) = gateway["spec"]["servers"]
    assert server["port"]["number"] == 443
    assert sorted(server["hosts"]) == ["*/gitea.lab.example.org", "*/kiali.lab.example.org"]
    (route,) = [
        o for o in extra_manifests(CATALOG["kiali"], settings) if o["kind"] == "VirtualService"
    ]
    assert route["spec"]["hosts"] == ["kiali.lab.example.org"]
    # Jaeger has no login of its own: never exposed, even when asked to expose dashboards.
    assert values.public_host("jaeger", settings) is None
    destination = route["spec"]["http"][0]["route"][0]["destination"]
    assert destination == {
        "host": "kiali.istio-system.svc.cluster.local",
        "port": {"number": 20001},
    }
    # VictoriaMetrics has no login: never exposed.
    assert extra_manifests(CATALOG["victoria-metrics"], settings) == []
    assert extra_manifests(CATALOG["istio"], InstallSettings())[1:] == []


def test_tls_gets_a_lets_encrypt_certificate_through_the_gateway():
    settings = SETTINGS["tls"]
    objects = {o["kind"]: o for o in extra_manifests(CATALOG["cert-manager"], settings)}
    assert set(objects) == {"IngressClass", "ClusterIssuer", "Certificate"}
    acme = objects["ClusterIssuer"]["spec"]["acme"]
    assert acme["email"] == "teacher@example.org"
    assert acme["server"] == values.LETSENCRYPT_PRODUCTION
    assert acme["solvers"] == [{"http01": {"ingress": {"ingressClassName": "istio"}}}]
    assert objects["IngressClass"]["spec"]["controller"] == "istio.io/ingress-controller"
    certificate = objects["Certificate"]
    assert certificate["metadata"]["namespace"] == "istio-system"
    assert sorted(certificate["spec"]["dnsNames"]) == [
        "app.lab.example.org",  # the lesson's app shares the certificate
        "gitea.lab.example.org",
    ]
    (gateway,) = [o for o in extra_manifests(CATALOG["istio"], settings) if o["kind"] == "Gateway"]
    (server,) = gateway["spec"]["servers"]
    assert server["port"]["number"] == 443
    assert server["tls"]["credentialName"] == certificate["spec"]["secretName"]
    assert extra_manifests(CATALOG["cert-manager"], InstallSettings()) == []


def test_docs_table_lists_every_release_at_its_pinned_version():
    text = Path(ROOT / "docs" / "components.md").read_text(encoding="utf-8")
    for release in RELEASES.values():
        row = next((line for line in text.splitlines() if f"| `{release.name}` |" in line), None)
        assert row is not None, release.name
        assert f"`{release.version}`" in row and f"`{release.chart}`" in row, row
