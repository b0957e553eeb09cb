"""Istio routing objects -> Envoy v3 routes and clusters, for the sandbox's mesh.

The sandbox has no Istio control plane; :mod:`kubelab.sandbox.envoy` runs one real Envoy
that plays every sidecar and the ingress gateway at once. This module is the control plane's
translation step, pure and synchronous: it takes the lesson's Kubernetes objects (Services,
DestinationRules, VirtualServices, Gateways, as plain dicts) plus the pods' endpoints and
returns the RouteConfiguration and Clusters Envoy should serve, named and shaped like the
ones istiod generates (``outbound|80|v1|app-backend.istio.svc.cluster.local``), together with
a warning for everything it could not honour.

Two sandbox-specific additions:

* every weighted destination adds the response headers ``x-kubelab-subset`` and
  ``x-kubelab-service``. They sit on the weighted cluster, so Envoy also adds them to its own
  local replies (504 upstream timeout, 503 no healthy upstream / cluster not found): a check
  client can tell which subset hung.
* a Gateway host ``*`` makes the bound VirtualService answer any Host (a catch-all virtual
  host), so ``curl http://127.0.0.1:<port>/`` reaches the app through "the gateway".
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ROUTE_CONFIG_NAME = "kubelab"
SUBSET_HEADER = "x-kubelab-subset"
SERVICE_HEADER = "x-kubelab-service"
CLUSTER_DOMAIN = "svc.cluster.local"
FAULT_FILTER = "envoy.filters.http.fault"
VIRTUAL_CLUSTER_NAME = "all"
VIRTUAL_CLUSTER = {
    "name": VIRTUAL_CLUSTER_NAME,
    "headers": [{"name": ":path", "string_match": {"prefix": "/"}}],
}
GATEWAY_VHOST = "gateway|*"

ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSIONS = frozenset({"v1", "v1beta1", "v1alpha3"})
# Istio's sidecars effectively have no circuit breaking unless a DestinationRule asks for it
# (istiod sets the thresholds to the uint32 maximum). Envoy's defaults (1024) would turn a pile
# of requests hanging on the buggy v1 into 503 overflows that Istio would not produce.
_UNLIMITED = 4294967295
# Loopback endpoints connect or refuse at once; Istio's 10 s default would only slow failures.
_CONNECT_TIMEOUT = "1s"
_LB_POLICIES = {
    "ROUND_ROBIN": "ROUND_ROBIN",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",
    "RANDOM": "RANDOM",
}
_REDIRECT_CODES = {
    301: "MOVED_PERMANENTLY",
    302: "FOUND",
    303: "SEE_OTHER",
    307: "TEMPORARY_REDIRECT",
    308: "PERMANENT_REDIRECT",
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class Endpoint:
    """One pod of the sandbox: an app process listening on ``host:port``."""

    namespace: str
    labels: dict[str, str]
    host: str
    port: int
    ready: bool


@dataclass(frozen=True)
class EnvoyConfig:
    """What Envoy should serve: one RouteConfiguration (RDS) and the Clusters (CDS).

    The listener is not part of it: its port and access log belong to the running process
    (:class:`kubelab.sandbox.envoy.EnvoyProcess`), and keeping it static means a routing change
    swaps the route table in place instead of draining connections of a replaced listener.
    """

    route_config: JsonDict
    clusters: list[JsonDict]
    warnings: list[str] = field(default_factory=list)

    @property
    def routes_version(self) -> str:
        """Content hash of the route configuration (the RDS ``version_info``)."""
        return content_version(self.route_config)

    @property
    def clusters_version(self) -> str:
        """Content hash of the clusters (the CDS ``version_info``)."""
        return content_version(self.clusters)

    def cluster_names(self) -> list[str]:
        return [c["name"] for c in self.clusters]


def build_config(
    objects: Iterable[Mapping[str, Any]], endpoints: Iterable[Endpoint]
) -> EnvoyConfig:
    """Envoy routes and clusters equivalent to what Istio would program for ``objects``.

    ``objects`` are raw Kubernetes objects; Services (v1) and networking.istio.io
    DestinationRules, VirtualServices and Gateways (v1, v1beta1, v1alpha3) are read, anything
    else is ignored. Only ready ``endpoints`` receive traffic.
    """
    return _Builder(list(objects), list(endpoints)).build()


def cluster_name(port: int, subset: str, fqdn: str) -> str:
    """Istio's name for the outbound cluster of a (service port, subset)."""
    return f"outbound|{port}|{subset}|{fqdn}"


def host_forms(name: str, namespace: str) -> list[str]:
    """Every name a client in the namespace can use for a Service, shortest first."""
    return [
        name,
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.{CLUSTER_DOMAIN}",
    ]


def parse_duration(value: object) -> float | None:
    """Seconds of an Istio duration ("1.5s", "500ms", "1m30s"); None when it is not one."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    total, pos = 0.0, 0
    for part in _DURATION_PART.finditer(text):
        if part.start() != pos:
            return None
        total += float(part.group(1)) * _DURATION_UNITS[part.group(2)]
        pos = part.end()
    return total if pos == len(text) else None


def envoy_duration(seconds: float) -> str:
    """A protobuf JSON duration Envoy accepts ("1.5s"), to the millisecond."""
    whole, millis = divmod(round(seconds * 1000), 1000)
    return f"{whole}.{millis:03d}".rstrip("0") + "s" if millis else f"{whole}s"


def content_version(data: object) -> str:
    """A short content hash, used as the xDS ``version_info`` of a resource list."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _meta(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("name") or ""), str(meta.get("namespace") or "default")


def _dict(value: object) -> JsonDict:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _fraction(percent: object, default: float = 100.0) -> JsonDict:
    """Envoy FractionalPercent for an Istio percentage (a number of percent)."""
    value = default
    if isinstance(percent, int | float | str) and not isinstance(percent, bool):
        try:
            value = float(percent)
        except ValueError:
            value = default
    value = min(max(value, 0.0), 100.0)
    return {"numerator": round(value * 10_000), "denominator": "MILLION"}


@dataclass
class _Service:
    name: str
    namespace: str
    selector: dict[str, str] | None
    ports: list[int]

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.{CLUSTER_DOMAIN}"

    @property
    def short(self) -> str:
        return f"{self.name}.{self.namespace}"


@dataclass
class _DestinationRule:
    ref: str
    namespace: str
    host: str
    subsets: dict[str, dict[str, str]]
    lb_policy: str
    subset_lb: dict[str, str]


@dataclass
class _Gateway:
    hosts: list[str]
    ports: list[int]


@dataclass
class _VirtualHost:
    name: str
    domains: list[str] = field(default_factory=list)
    routes: list[JsonDict] = field(default_factory=list)


class _Builder:
    def __init__(self, objects: list[Mapping[str, Any]], endpoints: list[Endpoint]) -> None:
        self.endpoints = [e for e in endpoints if e.ready]
        self.warnings: list[str] = []
        self.services: dict[str, _Service] = {}
        self.rules: list[_DestinationRule] = []
        self.gateways: dict[tuple[str, str], _Gateway] = {}
        self.virtual_services: list[Mapping[str, Any]] = []
        self.clusters: dict[str, JsonDict] = {}
        rules: list[Mapping[str, Any]] = []
        for obj in objects:
            if self._read(obj) == "DestinationRule":
                rules.append(obj)
        # After every Service is known: a rule's host "name.ns" resolves through them.
        for rule in rules:
            self._read_destination_rule(rule)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    # --- reading objects -----------------------------------------------------------------

    def _read(self, obj: Mapping[str, Any]) -> str | None:
        """Record a Service, VirtualService or Gateway; the kind of anything routing-related."""
        kind, api = obj.get("kind"), str(obj.get("apiVersion") or "")
        if kind == "Service" and api == "v1":
            self._read_service(obj)
            return "Service"
        group, _, version = api.partition("/")
        if group != ISTIO_GROUP or version not in ISTIO_VERSIONS:
            return None
        if kind == "VirtualService":
            self.virtual_services.append(obj)
        elif kind == "Gateway":
            name, namespace = _meta(obj)
            spec = _dict(obj.get("spec"))
            hosts: list[str] = []
            ports: list[int] = []
            for server in _list(spec.get("servers")):
                server = _dict(server)
                # Gateway hosts may be "namespace/host"; the namespace part only limits which
                # VirtualServices may bind, which the sandbox does not enforce.
                hosts += [str(h).rsplit("/", 1)[-1].lower() for h in _list(server.get("hosts"))]
                number = _dict(server.get("port")).get("number")
                if isinstance(number, int):
                    ports.append(number)
                if server.get("tls"):
                    self.warn(f"Gateway {namespace}/{name}: TLS servers are served as plain HTTP")
            self.gateways[(namespace, name)] = _Gateway(hosts, ports or [80])
        return str(kind)

    def _read_service(self, obj: Mapping[str, Any]) -> None:
        name, namespace = _meta(obj)
        spec = _dict(obj.get("spec"))
        if spec.get("type") == "ExternalName":
            self.warn(f"Service {namespace}/{name}: ExternalName services are not routed")
            return
        selector = spec.get("selector")
        ports = [
            p["port"] for p in _list(spec.get("ports")) if isinstance(_dict(p).get("port"), int)
        ]
        service = _Service(
            name=name,
            namespace=namespace,
            selector={str(k): str(v) for k, v in selector.items()}
            if isinstance(selector, dict) and selector
            else None,
            ports=ports or [80],
        )
        self.services[service.fqdn] = service

    def _read_destination_rule(self, obj: Mapping[str, Any]) -> None:
        name, namespace = _meta(obj)
        ref = f"DestinationRule {namespace}/{name}"
        spec = _dict(obj.get("spec"))
        policy = self._lb_policy(ref, _dict(spec.get("trafficPolicy")))
        subsets: dict[str, dict[str, str]] = {}
        subset_lb: dict[str, str] = {}
        for subset in _list(spec.get("subsets")):
            subset = _dict(subset)
            subset_name = str(subset.get("name") or "")
            if not subset_name:
                continue
            labels = _dict(subset.get("labels"))
            subsets[subset_name] = {str(k): str(v) for k, v in labels.items()}
            if subset.get("trafficPolicy"):
                subset_ref = f"{ref} subset {subset_name}"
                subset_lb[subset_name] = self._lb_policy(
                    subset_ref, _dict(subset.get("trafficPolicy")), policy
                )
        host = str(spec.get("host") or "")
        self.rules.append(
            _DestinationRule(
                ref, namespace, self.resolve(host, namespace), subsets, policy, subset_lb
            )
        )

    def _lb_policy(self, ref: str, policy: JsonDict, default: str = "ROUND_ROBIN") -> str:
        for key in sorted(set(policy) - {"loadBalancer"}):
            self.warn(f"{ref}: trafficPolicy.{key} is not applied in the sandbox")
        lb = _dict(policy.get("loadBalancer"))
        simple = lb.get("simple")
        if simple is None:
            if lb:
                self.warn(f"{ref}: only loadBalancer.simple is applied; using {default}")
            return default
        if simple not in _LB_POLICIES:
            self.warn(f"{ref}: loadBalancer.simple {simple} is not supported; using {default}")
            return default
        return _LB_POLICIES[simple]

    # --- names ---------------------------------------------------------------------------

    def resolve(self, host: str, namespace: str) -> str:
        """Istio's reading of a host relative to a namespace: short names are Services there."""
        host = host.strip().lower()
        if not host or host.startswith("*"):
            return host
        if "." not in host:
            return f"{host}.{namespace}.{CLUSTER_DOMAIN}"
        # "name.ns" and "name.ns.svc" are not expanded by Istio itself, but every client in
        # the cluster can use them (DNS search path), so accept them when they name a Service.
        for service in self.services.values():
            if host in (service.short, f"{service.short}.svc"):
                return service.fqdn
        return host

    def rule_for(self, fqdn: str) -> _DestinationRule | None:
        matches = [r for r in self.rules if r.host == fqdn]
        if not matches:
            matches = [
                r for r in self.rules if r.host.startswith("*") and fqdn.endswith(r.host[1:])
            ]
        if len(matches) > 1:
            self.warn(
                f"several DestinationRules for {fqdn} ({', '.join(r.ref for r in matches)}); "
                f"using {matches[0].ref}"
            )
        return matches[0] if matches else None

    # --- clusters ------------------------------------------------------------------------

    def _add_cluster(
        self, name: str, labels: dict[str, str] | None, namespace: str, lb: str
    ) -> None:
        """A STATIC cluster of the ready endpoints in ``namespace`` carrying ``labels``
        (``None``: a Service without selector, whose endpoints nothing manages)."""
        members = sorted(
            (e.host, e.port)
            for e in self.endpoints
            if labels is not None
            and e.namespace == namespace
            and all(e.labels.get(k) == v for k, v in labels.items())
        )
        lb_endpoints = [
            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
            for host, port in members
        ]
        self.clusters[name] = {
            "name": name,
            "type": "STATIC",
            "connect_timeout": _CONNECT_TIMEOUT,
            "lb_policy": lb,
            "circuit_breakers": {
                "thresholds": [
                    {
                        "max_connections": _UNLIMITED,
                        "max_pending_requests": _UNLIMITED,
                        "max_requests": _UNLIMITED,
                        "max_retries": _UNLIMITED,
                    }
                ]
            },
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [{"lb_endpoints": lb_endpoints}] if lb_endpoints else [],
            },
        }

    def _build_clusters(self) -> None:
        # Like istiod: one cluster per service port and one per (port, subset) of its
        # DestinationRule, whether or not a route uses it. A VirtualService change then only
        # touches the route table, and a weight-0 destination keeps its cluster.
        for fqdn, service in sorted(self.services.items()):
            rule = self.rule_for(fqdn)
            lb = rule.lb_policy if rule else "ROUND_ROBIN"
            selector = service.selector
            for port in service.ports:
                self._add_cluster(cluster_name(port, "", fqdn), selector, service.namespace, lb)
                for subset, labels in sorted((rule.subsets if rule else {}).items()):
                    self._add_cluster(
                        cluster_name(port, subset, fqdn),
                        None if selector is None else {**selector, **labels},
                        service.namespace,
                        rule.subset_lb.get(subset, lb) if rule else lb,
                    )

    def destination(self, ref: str, dest: JsonDict, namespace: str) -> tuple[str, str, str]:
        """(cluster, subset, service label) of an Istio Destination; warns when it cannot
        exist, in which case the cluster name is one Envoy does not know (503, like Istio)."""
        host = str(dest.get("host") or "")
        subset = str(dest.get("subset") or "")
        fqdn = self.resolve(host, namespace)
        number = _dict(dest.get("port")).get("number")
        service = self.services.get(fqdn)
        label = service.short if service else host
        if service is None:
            self.warn(f"{ref}: destination host {host!r} is not a Service of the lesson; 503")
            return (
                cluster_name(number if isinstance(number, int) else 80, subset, fqdn),
                subset,
                label,
            )
        if isinstance(number, int):
            port = number
            if port not in service.ports:
                self.warn(f"{ref}: Service {service.short} has no port {port}; 503")
        else:
            port = service.ports[0]
            if len(service.ports) > 1:
                self.warn(
                    f"{ref}: destination {host} has several ports and none chosen; using {port}"
                )
        if subset:
            rule = self.rule_for(fqdn)
            if rule is None:
                self.warn(
                    f"{ref}: subset {subset!r} of {service.short} needs a DestinationRule and "
                    "there is none; its share answers 503"
                )
            elif subset not in rule.subsets:
                self.warn(
                    f"{ref}: subset {subset!r} is not defined in {rule.ref}; its share answers 503"
                )
        return cluster_name(port, subset, fqdn), subset, label

    # --- routes --------------------------------------------------------------------------

    def build(self) -> EnvoyConfig:
        self._build_clusters()
        vhosts: list[_VirtualHost] = []
        claimed: dict[str, str] = {}
        catch_all = _VirtualHost(GATEWAY_VHOST, ["*"])

        def claim(vhost: _VirtualHost, domains: list[str], owner: str, quiet: bool = False) -> None:
            # Envoy rejects a route table naming a domain twice: first claim wins (Istio, too,
            # uses the oldest VirtualService for a host).
            for domain in domains:
                holder = claimed.get(domain)
                if holder is None:
                    claimed[domain] = owner
                    vhost.domains.append(domain)
                elif holder != owner and not quiet:
                    self.warn(f"{owner}: host {domain} is already routed by {holder}; ignored")

        for vs in self.virtual_services:
            name, namespace = _meta(vs)
            ref = f"VirtualService {namespace}/{name}"
            spec = _dict(vs.get("spec"))
            gateway_ports, any_host = self._bound_gateways(ref, spec, namespace)
            routes = self._routes(ref, spec, namespace)
            hosts = [str(h).lower() for h in _list(spec.get("hosts"))]
            vhost = _VirtualHost(f"vs|{namespace}/{name}", routes=routes)
            for host in hosts:
                if host == "*":
                    any_host = True
                    continue
                claim(vhost, self._domains(host, namespace, gateway_ports), ref)
            if vhost.domains:
                vhosts.append(vhost)
            if any_host:
                if catch_all.routes:
                    self.warn(f"{ref}: merged into the catch-all (*) gateway routes after others")
                catch_all.routes.extend(routes)
            for key in ("tcp", "tls"):
                if spec.get(key):
                    self.warn(f"{ref}: {key} routes are not supported in the sandbox")

        # A Service without a VirtualService still answers: round robin over its endpoints.
        for fqdn, service in sorted(self.services.items()):
            ref = f"Service {service.short}"
            vhost = _VirtualHost(f"svc|{fqdn}")
            # Hosts a VirtualService routes are not the Service's default route: no warning.
            claim(vhost, self._domains(fqdn, service.namespace, []), ref, quiet=True)
            if vhost.domains:
                target = {"host": fqdn, "port": {"number": service.ports[0]}}
                action = self._weighted(ref, [{"destination": target}], namespace=service.namespace)
                vhost.routes.append({"name": "default", "match": {"prefix": "/"}, **action})
                vhosts.append(vhost)

        if catch_all.routes:
            vhosts.append(catch_all)
        route_config = {
            "name": ROUTE_CONFIG_NAME,
            # Routes may name clusters that do not exist (a subset missing from the
            # DestinationRule): those answer 503 instead of the whole table being rejected.
            "validate_clusters": False,
            "virtual_hosts": [
                {
                    "name": v.name,
                    "domains": v.domains,
                    "routes": v.routes,
                    # One virtual cluster per host: its stats (vhost.<name>.vcluster.all.*)
                    # count requests by who sent them (the gateway, or a client in the
                    # mesh), which the sandbox's telemetry reports as Istio's source side.
                    "virtual_clusters": [VIRTUAL_CLUSTER],
                }
                for v in vhosts
            ],
        }
        clusters = [self.clusters[n] for n in sorted(self.clusters)]
        return EnvoyConfig(route_config, clusters, self.warnings)

    def _bound_gateways(self, ref: str, spec: JsonDict, namespace: str) -> tuple[list[int], bool]:
        """Server ports of the Gateways the VirtualService binds, and whether one serves *."""
        ports: list[int] = []
        any_host = False
        for entry in _list(spec.get("gateways")):
            entry = str(entry)
            if entry == "mesh":
                continue
            gw_ns, _, gw_name = entry.rpartition("/")
            gateway = self.gateways.get((gw_ns or namespace, gw_name))
            if gateway is None:
                self.warn(f"{ref}: Gateway {gw_ns or namespace}/{gw_name} does not exist")
                continue
            ports += [p for p in gateway.ports if p not in ports]
            any_host = any_host or "*" in gateway.hosts
        return ports, any_host

    def _domains(self, host: str, namespace: str, gateway_ports: list[int]) -> list[str]:
        fqdn = self.resolve(host, namespace)
        service = self.services.get(fqdn)
        if service is not None:
            names, ports = host_forms(service.name, service.namespace), service.ports
        elif fqdn.endswith("." + CLUSTER_DOMAIN) and fqdn.count(".") == 4:
            svc_name, svc_ns = fqdn.split(".")[:2]
            names, ports = host_forms(svc_name, svc_ns), [80]
        else:
            names, ports = [fqdn], [80]
        ports = ports + [p for p in gateway_ports if p not in ports]
        domains: list[str] = []
        for name in names:
            domains.append(name)
            domains += [f"{name}:{p}" for p in ports]
        return domains

    def _routes(self, ref: str, spec: JsonDict, namespace: str) -> list[JsonDict]:
        routes: list[JsonDict] = []
        for index, rule in enumerate(_list(spec.get("http"))):
            rule = _dict(rule)
            rule_ref = f"{ref} http[{index}]"
            action = self._action(rule_ref, rule, namespace)
            if action is None:
                continue
            if rule.get("corsPolicy"):
                self.warn(f"{rule_ref}: corsPolicy is not applied in the sandbox")
            matches = _list(rule.get("match")) or [{}]
            for number, match in enumerate(matches):
                route: JsonDict = {
                    "name": str(rule.get("name") or f"http[{index}]")
                    + (f"/match[{number}]" if len(matches) > 1 else ""),
                    "match": self._match(rule_ref, _dict(match)),
                    **action,
                }
                routes.append(route)
        return routes

    def _action(self, ref: str, rule: JsonDict, namespace: str) -> JsonDict | None:
        """The Envoy route action (route / redirect / direct_response) and its decorations."""
        if rule.get("delegate"):
            self.warn(f"{ref}: delegate VirtualServices are not supported; rule skipped")
            return None
        action: JsonDict
        if rule.get("redirect"):
            action = {"redirect": self._redirect(ref, _dict(rule["redirect"]))}
        elif rule.get("directResponse"):
            direct = _dict(rule["directResponse"])
            body = _dict(direct.get("body"))
            action = {"direct_response": {"status": int(direct.get("status") or 200)}}
            if "string" in body:
                action["direct_response"]["body"] = {"inline_string": str(body["string"])}
        elif rule.get("route"):
            action = self._weighted(ref, _list(rule["route"]), rule, namespace)
        else:
            self.warn(f"{ref}: no route, redirect or directResponse; rule skipped")
            return None
        headers = _dict(rule.get("headers"))
        action.update(_header_ops(headers))
        fault = _dict(rule.get("fault"))
        if fault:
            config = self._fault(ref, fault)
            if config:
                action["typed_per_filter_config"] = {FAULT_FILTER: config}
        return action

    def _weighted(
        self,
        ref: str,
        destinations: list[Any],
        rule: JsonDict | None = None,
        namespace: str = "default",
    ) -> JsonDict:
        rule = rule or {}
        raw = [_dict(d).get("weight") for d in destinations]
        if len(raw) == 1:
            # Like istiod: a single destination takes all traffic whatever its weight says.
            weights = [100]
        elif all(w is None for w in raw):
            self.warn(f"{ref}: no destination has a weight; splitting evenly")
            weights = [1] * len(raw)
        else:
            weights = [int(w) if isinstance(w, int | float) and w > 0 else 0 for w in raw]
        total = sum(weights)
        entries: list[JsonDict] = []
        for dest, weight in zip(destinations, weights, strict=True):
            dest = _dict(dest)
            name, subset, label = self.destination(ref, _dict(dest.get("destination")), namespace)
            entry: JsonDict = {"name": name, "weight": weight}
            # On the weighted cluster (not the route) so Envoy also adds them to its local
            # replies for this pick: 504 upstream timeout, 503 no healthy upstream.
            attribution = [{"key": SERVICE_HEADER, "value": label}]
            if subset:
                attribution.append({"key": SUBSET_HEADER, "value": subset})
            ops = _header_ops(_dict(dest.get("headers")))
            entry["response_headers_to_add"] = [
                {"header": h, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"} for h in attribution
            ] + ops.pop("response_headers_to_add", [])
            entry.update(ops)
            entries.append(entry)
        action: JsonDict
        if total == 0:
            self.warn(f"{ref}: every destination has weight 0; requests answer 503")
            action = {
                "direct_response": {"status": 503, "body": {"inline_string": "no healthy upstream"}}
            }
            return action
        if total != 100 and len(entries) > 1:
            self.warn(f"{ref}: weights sum to {total}, not 100; used as relative weights")
        route: JsonDict = {"weighted_clusters": {"clusters": entries}}
        timeout = rule.get("timeout")
        seconds = parse_duration(timeout) if timeout is not None else None
        if timeout is not None and seconds is None:
            self.warn(f"{ref}: timeout {timeout!r} is not a duration; no timeout")
        # Istio's default is no route timeout; Envoy's would be 15 s.
        route["timeout"] = envoy_duration(seconds) if seconds else "0s"
        retry = self._retry(ref, _dict(rule.get("retries")))
        if retry:
            route["retry_policy"] = retry
        mirrors = self._mirrors(ref, rule, namespace)
        if mirrors:
            route["request_mirror_policies"] = mirrors
        rewrite = _dict(rule.get("rewrite"))
        if rewrite.get("uri") is not None:
            route["prefix_rewrite"] = str(rewrite["uri"])
        if rewrite.get("authority"):
            route["host_rewrite_literal"] = str(rewrite["authority"])
        regex_rewrite = _dict(rewrite.get("uriRegexRewrite"))
        if regex_rewrite:
            route["regex_rewrite"] = {
                "pattern": {"regex": str(regex_rewrite.get("match") or "")},
                "substitution": str(regex_rewrite.get("rewrite") or ""),
            }
        return {"route": route}

    def _retry(self, ref: str, retries: JsonDict) -> JsonDict | None:
        if not retries:
            return None
        attempts = retries.get("attempts")
        if not isinstance(attempts, int) or attempts <= 0:
            return None
        retry_on = [t.strip() for t in str(retries.get("retryOn") or "").split(",") if t.strip()]
        if not retry_on:
            # istiod's default retry conditions.
            retry_on = ["connect-failure", "refused-stream", "unavailable", "cancelled", "503"]
        codes = [int(t) for t in retry_on if t.isdigit()]
        conditions = [t for t in retry_on if not t.isdigit()]
        if codes and "retriable-status-codes" not in conditions:
            conditions.append("retriable-status-codes")
        policy: JsonDict = {"retry_on": ",".join(conditions), "num_retries": attempts}
        if codes:
            policy["retriable_status_codes"] = codes
        per_try = parse_duration(retries.get("perTryTimeout"))
        if per_try:
            policy["per_try_timeout"] = envoy_duration(per_try)
        if retries.get("retryRemoteLocalities"):
            self.warn(f"{ref}: retries.retryRemoteLocalities has no meaning in the sandbox")
        return policy

    def _mirrors(self, ref: str, rule: JsonDict, namespace: str) -> list[JsonDict]:
        pairs: list[tuple[JsonDict, object]] = []
        if rule.get("mirror"):
            percent = _dict(rule.get("mirrorPercentage")).get("value", rule.get("mirrorPercent"))
            pairs.append((_dict(rule["mirror"]), percent))
        for mirror in _list(rule.get("mirrors")):
            mirror = _dict(mirror)
            pairs.append(
                (_dict(mirror.get("destination")), _dict(mirror.get("percentage")).get("value"))
            )
        policies = []
        for dest, percent in pairs:
            name, _, _ = self.destination(f"{ref} mirror", dest, namespace)
            policies.append(
                {"cluster": name, "runtime_fraction": {"default_value": _fraction(percent)}}
            )
        return policies

    def _redirect(self, ref: str, redirect: JsonDict) -> JsonDict:
        out: JsonDict = {}
        if redirect.get("uri"):
            out["path_redirect"] = str(redirect["uri"])
        if redirect.get("authority"):
            out["host_redirect"] = str(redirect["authority"])
        if redirect.get("scheme"):
            out["scheme_redirect"] = str(redirect["scheme"])
        if isinstance(redirect.get("port"), int):
            out["port_redirect"] = redirect["port"]
        code = redirect.get("redirectCode", 301)
        if code not in _REDIRECT_CODES:
            self.warn(f"{ref}: redirectCode {code} is not supported; using 301")
            code = 301
        out["response_code"] = _REDIRECT_CODES[code]
        return out

    def _fault(self, ref: str, fault: JsonDict) -> JsonDict | None:
        config: JsonDict = {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
        }
        delay = _dict(fault.get("delay"))
        if delay:
            seconds = parse_duration(delay.get("fixedDelay"))
            if seconds is None:
                self.warn(f"{ref}: fault.delay needs fixedDelay; delay not applied")
            else:
                percent = _dict(delay.get("percentage")).get("value", delay.get("percent"))
                config["delay"] = {
                    "fixed_delay": envoy_duration(seconds),
                    "percentage": _fraction(percent),
                }
        abort = _dict(fault.get("abort"))
        if abort:
            status = abort.get("httpStatus")
            if not isinstance(status, int):
                self.warn(f"{ref}: only fault.abort.httpStatus is supported; abort not applied")
            else:
                percent = _dict(abort.get("percentage")).get("value", abort.get("percent"))
                config["abort"] = {"http_status": status, "percentage": _fraction(percent)}
        return config if len(config) > 1 else None

    def _match(self, ref: str, match: JsonDict) -> JsonDict:
        out: JsonDict = {}
        uri = _dict(match.get("uri"))
        if "exact" in uri:
            out["path"] = str(uri["exact"])
        elif "prefix" in uri:
            out["prefix"] = str(uri["prefix"])
        elif "regex" in uri:
            out["safe_regex"] = {"regex": str(uri["regex"])}
        else:
            if uri:
                self.warn(f"{ref}: unsupported uri match {sorted(uri)}; matching every path")
            out["prefix"] = "/"
        if match.get("ignoreUriCase"):
            out["case_sensitive"] = False
        headers: list[JsonDict] = []
        for pseudo, key in (
            (":method", "method"),
            (":authority", "authority"),
            (":scheme", "scheme"),
        ):
            if key in match:
                headers.append(self._header_matcher(ref, pseudo, match[key]))
        for name, spec in sorted(_dict(match.get("headers")).items()):
            headers.append(self._header_matcher(ref, str(name).lower(), spec))
        for name, spec in sorted(_dict(match.get("withoutHeaders")).items()):
            headers.append(
                {**self._header_matcher(ref, str(name).lower(), spec), "invert_match": True}
            )
        if headers:
            out["headers"] = headers
        params = []
        for name, spec in sorted(_dict(match.get("queryParams")).items()):
            matcher = self._string_match(ref, spec)
            params.append(
                {"name": str(name), "string_match": matcher}
                if matcher
                else {"name": str(name), "present_match": True}
            )
        if params:
            out["query_parameters"] = params
        for key in ("port", "sourceLabels", "sourceNamespace", "gateways", "statPrefix"):
            if key in match:
                self.warn(f"{ref}: match.{key} is not applied in the sandbox")
        return out

    def _header_matcher(self, ref: str, name: str, spec: object) -> JsonDict:
        matcher = self._string_match(ref, spec)
        if matcher is None:
            return {"name": name, "present_match": True}
        return {"name": name, "string_match": matcher}

    def _string_match(self, ref: str, spec: object) -> JsonDict | None:
        spec = _dict(spec)
        if "exact" in spec:
            return {"exact": str(spec["exact"])}
        if "prefix" in spec:
            return {"prefix": str(spec["prefix"])}
        if "regex" in spec:
            return {"safe_regex": {"regex": str(spec["regex"])}}
        if spec:
            self.warn(f"{ref}: unsupported string match {sorted(spec)}; treated as presence")
        return None


def _header_ops(headers: JsonDict) -> JsonDict:
    """Istio ``headers.request/response.set/add/remove`` as Envoy header mutations."""
    out: JsonDict = {}
    for side in ("request", "response"):
        ops = _dict(headers.get(side))
        add = [
            {
                "header": {"key": str(k), "value": str(v)},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
            for k, v in _dict(ops.get("set")).items()
        ] + [
            {"header": {"key": str(k), "value": str(v)}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
            for k, v in _dict(ops.get("add")).items()
        ]
        if add:
            out[f"{side}_headers_to_add"] = add
        remove = [str(h) for h in _list(ops.get("remove"))]
        if remove:
            out[f"{side}_headers_to_remove"] = remove
    return out
