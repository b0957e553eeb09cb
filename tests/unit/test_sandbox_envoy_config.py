"""``build_config``: the lesson's Istio objects as Envoy routes and clusters, no Envoy needed.

The objects are the ones the app-backend chart renders (Service, DestinationRule with
subsets v1/v2, VirtualService 90/10, optional Gateway), written out by hand so these tests
run without helm; tests/integration/test_sandbox_envoy.py runs the same shapes through a
real Envoy.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from kubelab.sandbox.envoy import (
    SERVICE_HEADER,
    SUBSET_HEADER,
    Endpoint,
    EnvoyConfig,
    build_config,
    cluster_name,
    host_forms,
)
from kubelab.sandbox.envoy_config import envoy_duration, parse_duration

NS = "istio"
FQDN = "app-backend.istio.svc.cluster.local"
V1 = cluster_name(80, "v1", FQDN)
V2 = cluster_name(80, "v2", FQDN)
PLAIN = cluster_name(80, "", FQDN)


def service(name: str = "app-backend", namespace: str = NS, port: int = 80) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": name},
            "ports": [{"name": "http", "port": port, "targetPort": 8080, "protocol": "TCP"}],
        },
    }


def destination_rule(subsets: tuple[str, ...] = ("v1", "v2"), **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "app-backend", "namespace": NS},
        "spec": {
            "host": "app-backend",
            "subsets": [{"name": s, "labels": {"version": s}} for s in subsets],
            **spec,
        },
    }


def virtual_service(
    weights: dict[str, int | None] | None = None,
    *,
    name: str = "app-backend",
    hosts: list[str] | None = None,
    gateways: list[str] | None = None,
    api: str = "networking.istio.io/v1",
    **http: Any,
) -> dict[str, Any]:
    weights = {"v1": 90, "v2": 10} if weights is None else weights
    route = []
    for subset, weight in weights.items():
        entry: dict[str, Any] = {"destination": {"host": "app-backend", "subset": subset}}
        if weight is not None:
            entry["weight"] = weight
        route.append(entry)
    spec: dict[str, Any] = {
        "hosts": hosts or ["app-backend"],
        "http": [{"name": "split", "route": route, **http}],
    }
    if gateways:
        spec["gateways"] = gateways
    return {
        "apiVersion": api,
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def gateway(hosts: list[str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "app-backend-gateway", "namespace": NS},
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [
                {
                    "port": {"number": 80, "name": "http", "protocol": "HTTP"},
                    "hosts": hosts or ["*"],
                }
            ],
        },
    }


def endpoint(version: str, port: int, ready: bool = True, namespace: str = NS) -> Endpoint:
    labels = {"app": "app-backend", "version": version, "pod-template-hash": "abc"}
    return Endpoint(namespace, labels, "127.0.0.1", port, ready)


ENDPOINTS = [endpoint("v1", 9001), endpoint("v2", 9002)]


def lesson(*extra: dict[str, Any], weights: dict[str, int | None] | None = None) -> EnvoyConfig:
    objects = [service(), destination_rule(), virtual_service(weights), *extra]
    return build_config(objects, ENDPOINTS)


def vhost(config: EnvoyConfig, name: str) -> dict[str, Any]:
    hosts = config.route_config["virtual_hosts"]
    found: dict[str, Any] = next(v for v in hosts if v["name"] == name)
    return found


def split(config: EnvoyConfig, vhost_name: str = f"vs|{NS}/app-backend") -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = vhost(config, vhost_name)["routes"][0]["route"][
        "weighted_clusters"
    ]["clusters"]
    return entries


def cluster(config: EnvoyConfig, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in config.clusters if c["name"] == name)
    return found


def ports_of(found: dict[str, Any]) -> list[int]:
    return [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for group in found["load_assignment"]["endpoints"]
        for e in group["lb_endpoints"]
    ]


def headers_of(entry: dict[str, Any]) -> dict[str, str]:
    return {h["header"]["key"]: h["header"]["value"] for h in entry["response_headers_to_add"]}


def assert_envoy_valid_shape(config: EnvoyConfig) -> None:
    """What Envoy would reject outright: a domain twice, or more than one ``*``."""
    json.dumps(config.route_config)
    json.dumps(config.clusters)
    domains = [d for v in config.route_config["virtual_hosts"] for d in v["domains"]]
    assert len(domains) == len(set(domains)), domains
    names = config.cluster_names()
    assert len(names) == len(set(names))


# --- hosts ---------------------------------------------------------------------------------


def test_every_host_form_a_client_uses_reaches_the_virtual_service() -> None:
    config = lesson()
    domains = vhost(config, f"vs|{NS}/app-backend")["domains"]
    for form in host_forms("app-backend", NS):
        assert form in domains
        assert f"{form}:80" in domains
    assert "app-backend.istio.svc.cluster.local" in host_forms("app-backend", NS)
    assert config.warnings == []
    assert_envoy_valid_shape(config)


@pytest.mark.parametrize(
    "host", ["app-backend", "app-backend.istio", "app-backend.istio.svc", FQDN]
)
def test_virtual_service_host_may_be_written_in_any_form(host: str) -> None:
    config = build_config([service(), destination_rule(), virtual_service(hosts=[host])], ENDPOINTS)
    assert "app-backend:80" in vhost(config, f"vs|{NS}/app-backend")["domains"]
    assert_envoy_valid_shape(config)


def test_service_domains_use_its_own_port() -> None:
    config = build_config([service(port=8000)], ENDPOINTS)
    domains = vhost(config, f"svc|{FQDN}")["domains"]
    assert "app-backend:8000" in domains and "app-backend:80" not in domains
    assert cluster_name(8000, "", FQDN) in config.cluster_names()


# --- clusters ------------------------------------------------------------------------------


def test_clusters_are_named_like_istio_and_hold_the_matching_ready_endpoints() -> None:
    endpoints = [
        endpoint("v1", 9001),
        endpoint("v1", 9011, ready=False),
        endpoint("v2", 9002),
        endpoint("v1", 9021, namespace="other"),
        Endpoint(NS, {"app": "something-else", "version": "v1"}, "127.0.0.1", 9031, True),
    ]
    config = build_config([service(), destination_rule(), virtual_service()], endpoints)
    assert config.cluster_names() == sorted([PLAIN, V1, V2])
    assert ports_of(cluster(config, V1)) == [9001]
    assert ports_of(cluster(config, V2)) == [9002]
    assert ports_of(cluster(config, PLAIN)) == [9001, 9002]
    assert cluster(config, V1)["type"] == "STATIC"
    assert cluster(config, V1)["lb_policy"] == "ROUND_ROBIN"


def test_subset_without_ready_endpoints_keeps_an_empty_cluster() -> None:
    config = build_config(
        [service(), destination_rule(), virtual_service()], [endpoint("v1", 9001)]
    )
    assert ports_of(cluster(config, V2)) == []
    assert config.warnings == []


def test_service_without_selector_has_an_empty_cluster() -> None:
    svc = service()
    del svc["spec"]["selector"]
    config = build_config([svc], ENDPOINTS)
    assert ports_of(cluster(config, PLAIN)) == []


def test_destination_rule_load_balancer_is_applied_and_the_rest_warned() -> None:
    rule = destination_rule(
        trafficPolicy={"loadBalancer": {"simple": "RANDOM"}, "connectionPool": {"tcp": {}}}
    )
    config = build_config([service(), rule, virtual_service()], ENDPOINTS)
    assert cluster(config, V1)["lb_policy"] == "RANDOM"
    assert any("trafficPolicy.connectionPool" in w for w in config.warnings)


# --- weights -------------------------------------------------------------------------------


def test_weights_become_weighted_clusters_with_attribution_headers() -> None:
    config = lesson()
    entries = split(config)
    assert [(e["name"], e["weight"]) for e in entries] == [(V1, 90), (V2, 10)]
    assert headers_of(entries[0]) == {SUBSET_HEADER: "v1", SERVICE_HEADER: "app-backend.istio"}
    assert headers_of(entries[1])[SUBSET_HEADER] == "v2"
    assert all(
        h["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD"
        for e in entries
        for h in e["response_headers_to_add"]
    )


def test_route_has_no_timeout_unless_the_virtual_service_sets_one() -> None:
    route = vhost(lesson(), f"vs|{NS}/app-backend")["routes"][0]["route"]
    assert route["timeout"] == "0s"
    config = build_config(
        [service(), destination_rule(), virtual_service(timeout="1.5s")], ENDPOINTS
    )
    assert vhost(config, f"vs|{NS}/app-backend")["routes"][0]["route"]["timeout"] == "1.5s"


def test_zero_weight_destination_keeps_its_cluster() -> None:
    config = lesson(weights={"v1": 0, "v2": 100})
    assert [(e["name"], e["weight"]) for e in split(config)] == [(V1, 0), (V2, 100)]
    assert V1 in config.cluster_names()
    assert config.warnings == []


def test_all_weights_zero_answers_503() -> None:
    config = lesson(weights={"v1": 0, "v2": 0})
    route = vhost(config, f"vs|{NS}/app-backend")["routes"][0]
    assert route["direct_response"]["status"] == 503
    assert any("weight 0" in w for w in config.warnings)


def test_weights_not_summing_to_100_are_relative_and_warned() -> None:
    config = lesson(weights={"v1": 1, "v2": 3})
    assert [e["weight"] for e in split(config)] == [1, 3]
    assert any("sum to 4" in w for w in config.warnings)


def test_single_destination_takes_all_traffic() -> None:
    config = lesson(weights={"v2": None})
    assert [(e["name"], e["weight"]) for e in split(config)] == [(V2, 100)]


def test_three_destinations() -> None:
    objects = [
        service(),
        destination_rule(("v1", "v2", "v3")),
        virtual_service({"v1": 20, "v2": 30, "v3": 50}),
    ]
    config = build_config(objects, [*ENDPOINTS, endpoint("v3", 9003)])
    v3 = cluster_name(80, "v3", FQDN)
    assert [(e["name"], e["weight"]) for e in split(config)] == [(V1, 20), (V2, 30), (v3, 50)]
    assert ports_of(cluster(config, v3)) == [9003]
    assert config.warnings == []


def test_subset_missing_from_destination_rule_is_warned_and_has_no_cluster() -> None:
    config = lesson(weights={"v1": 50, "v3": 50})
    v3 = cluster_name(80, "v3", FQDN)
    assert [e["name"] for e in split(config)] == [V1, v3]
    assert v3 not in config.cluster_names()  # Envoy answers 503 (cluster not found)
    assert config.route_config["validate_clusters"] is False
    assert any(
        "'v3' is not defined in DestinationRule istio/app-backend" in w for w in config.warnings
    )


def test_subset_without_any_destination_rule_is_warned() -> None:
    config = build_config([service(), virtual_service()], ENDPOINTS)
    assert config.cluster_names() == [PLAIN]
    assert any("needs a DestinationRule" in w for w in config.warnings)


def test_destination_that_is_not_a_service_is_warned() -> None:
    vs = virtual_service()
    vs["spec"]["http"][0]["route"][1]["destination"]["host"] = "nowhere"
    config = build_config([service(), destination_rule(), vs], ENDPOINTS)
    assert any("'nowhere' is not a Service" in w for w in config.warnings)


# --- services, gateways, several virtual services ------------------------------------------


def test_service_without_virtual_service_round_robins_over_its_endpoints() -> None:
    config = build_config([service(), destination_rule()], ENDPOINTS)
    default = vhost(config, f"svc|{FQDN}")
    assert "app-backend" in default["domains"]
    assert [e["name"] for e in default["routes"][0]["route"]["weighted_clusters"]["clusters"]] == [
        PLAIN
    ]
    assert cluster(config, PLAIN)["lb_policy"] == "ROUND_ROBIN"
    assert config.warnings == []


def test_virtual_service_takes_the_service_hosts_without_a_warning() -> None:
    config = lesson()
    assert not any(v["name"].startswith("svc|") for v in config.route_config["virtual_hosts"])
    assert config.warnings == []


def test_gateway_star_makes_the_bound_virtual_service_answer_any_host() -> None:
    vs = virtual_service(gateways=["app-backend-gateway", "mesh"])
    config = build_config([service(), destination_rule(), gateway(), vs], ENDPOINTS)
    catch_all = vhost(config, "gateway|*")
    assert catch_all["domains"] == ["*"]
    assert catch_all["routes"] == vhost(config, f"vs|{NS}/app-backend")["routes"]
    assert config.warnings == []
    assert_envoy_valid_shape(config)


def test_no_catch_all_without_a_star_gateway() -> None:
    assert all(v["domains"] != ["*"] for v in lesson().route_config["virtual_hosts"])
    vs = virtual_service(hosts=["app-backend", "app.example.com"], gateways=["app-backend-gateway"])
    config = build_config(
        [service(), destination_rule(), gateway(["app.example.com"]), vs], ENDPOINTS
    )
    assert all(v["domains"] != ["*"] for v in config.route_config["virtual_hosts"])
    domains = vhost(config, f"vs|{NS}/app-backend")["domains"]
    assert "app.example.com" in domains and "app.example.com:80" in domains


def test_missing_gateway_is_warned() -> None:
    vs = virtual_service(gateways=["istio-system/nope"])
    config = build_config([service(), destination_rule(), vs], ENDPOINTS)
    assert any("Gateway istio-system/nope does not exist" in w for w in config.warnings)


def test_second_virtual_service_for_the_same_host_is_ignored_with_a_warning() -> None:
    first = virtual_service({"v1": 100, "v2": 0})
    second = virtual_service({"v1": 0, "v2": 100}, name="later")
    config = build_config([service(), destination_rule(), first, second], ENDPOINTS)
    assert [e["weight"] for e in split(config)] == [100, 0]
    assert any("already routed by VirtualService istio/app-backend" in w for w in config.warnings)
    assert_envoy_valid_shape(config)


@pytest.mark.parametrize("api", ["v1", "v1beta1", "v1alpha3"])
def test_istio_api_versions_are_read(api: str) -> None:
    objects = [
        service(),
        {**destination_rule(), "apiVersion": f"networking.istio.io/{api}"},
        virtual_service(api=f"networking.istio.io/{api}"),
    ]
    assert [e["weight"] for e in split(build_config(objects, ENDPOINTS))] == [90, 10]


def test_other_objects_are_ignored() -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}
    foreign = virtual_service(api="example.com/v1")
    config = build_config([service(), deployment, foreign], ENDPOINTS)
    assert [v["name"] for v in config.route_config["virtual_hosts"]] == [f"svc|{FQDN}"]


# --- http route features -------------------------------------------------------------------


def test_matches_become_one_route_each_in_order() -> None:
    vs = virtual_service()
    vs["spec"]["http"].insert(
        0,
        {
            "name": "canary",
            "match": [
                {"uri": {"prefix": "/api"}, "headers": {"X-User": {"exact": "ana"}}},
                {"uri": {"exact": "/health"}, "headers": {"x-debug": {"prefix": "1"}}},
                {"uri": {"regex": "/v[0-9]+/.*"}, "headers": {"x-id": {"regex": "[a-f]+"}}},
            ],
            "route": [{"destination": {"host": "app-backend", "subset": "v2"}}],
        },
    )
    config = build_config([service(), destination_rule(), vs], ENDPOINTS)
    routes = vhost(config, f"vs|{NS}/app-backend")["routes"]
    assert [r["match"] for r in routes] == [
        {"prefix": "/api", "headers": [{"name": "x-user", "string_match": {"exact": "ana"}}]},
        {"path": "/health", "headers": [{"name": "x-debug", "string_match": {"prefix": "1"}}]},
        {
            "safe_regex": {"regex": "/v[0-9]+/.*"},
            "headers": [{"name": "x-id", "string_match": {"safe_regex": {"regex": "[a-f]+"}}}],
        },
        {"prefix": "/"},
    ]
    assert [r["name"] for r in routes][:2] == ["canary/match[0]", "canary/match[1]"]


def test_mirror_becomes_a_request_mirror_policy() -> None:
    vs = virtual_service(
        mirror={"host": "app-backend", "subset": "v2"}, mirrorPercentage={"value": 25.5}
    )
    config = build_config([service(), destination_rule(), vs], ENDPOINTS)
    route = vhost(config, f"vs|{NS}/app-backend")["routes"][0]["route"]
    assert route["request_mirror_policies"] == [
        {
            "cluster": V2,
            "runtime_fraction": {"default_value": {"numerator": 255000, "denominator": "MILLION"}},
        }
    ]


def test_retries_are_translated() -> None:
    vs = virtual_service(
        retries={"attempts": 3, "perTryTimeout": "500ms", "retryOn": "gateway-error,503"}
    )
    config = build_config([service(), destination_rule(), vs], ENDPOINTS)
    policy = vhost(config, f"vs|{NS}/app-backend")["routes"][0]["route"]["retry_policy"]
    assert policy == {
        "retry_on": "gateway-error,retriable-status-codes",
        "num_retries": 3,
        "retriable_status_codes": [503],
        "per_try_timeout": "0.5s",
    }


def test_fault_and_headers_are_translated() -> None:
    vs = virtual_service(
        fault={"abort": {"httpStatus": 500, "percentage": {"value": 10}}},
        headers={"response": {"set": {"x-lesson": "1"}, "remove": ["x-drop"]}},
    )
    config = build_config([service(), destination_rule(), vs], ENDPOINTS)
    route = vhost(config, f"vs|{NS}/app-backend")["routes"][0]
    fault = route["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault["abort"] == {
        "http_status": 500,
        "percentage": {"numerator": 100000, "denominator": "MILLION"},
    }
    assert route["response_headers_to_add"][0]["header"] == {"key": "x-lesson", "value": "1"}
    assert route["response_headers_to_remove"] == ["x-drop"]


def test_unsupported_parts_are_warned() -> None:
    vs = virtual_service()
    vs["spec"]["tcp"] = [{"route": []}]
    vs["spec"]["http"][0]["match"] = [{"sourceLabels": {"app": "x"}}]
    config = build_config([service(), destination_rule(), vs], ENDPOINTS)
    assert any("tcp routes are not supported" in w for w in config.warnings)
    assert any("match.sourceLabels" in w for w in config.warnings)


# --- determinism and helpers ---------------------------------------------------------------


def test_same_input_same_config_and_versions() -> None:
    objects = [service(), destination_rule(), virtual_service()]
    first = build_config(copy.deepcopy(objects), ENDPOINTS)
    second = build_config(list(reversed(copy.deepcopy(objects))), list(reversed(ENDPOINTS)))
    assert first == second
    assert first.routes_version == second.routes_version
    changed = lesson(weights={"v1": 50, "v2": 50})
    assert changed.routes_version != first.routes_version
    assert changed.clusters_version == first.clusters_version  # a split change is RDS only


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1.5s", 1.5), ("500ms", 0.5), ("1m30s", 90.0), ("2h", 7200.0), ("0.25s", 0.25)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1.5", "5 s", "-1s"])
def test_parse_duration_rejects(text: str) -> None:
    assert parse_duration(text) is None


def test_envoy_duration() -> None:
    assert envoy_duration(1.5) == "1.5s"
    assert envoy_duration(2) == "2s"
    assert envoy_duration(0.0015) == "0.002s"


def test_destination_rule_may_come_before_its_service_and_use_a_dotted_host() -> None:
    rule = destination_rule()
    rule["spec"]["host"] = "app-backend.istio"
    config = build_config([rule, virtual_service(), service()], ENDPOINTS)
    assert {V1, V2} <= set(config.cluster_names())
    assert config.warnings == []
