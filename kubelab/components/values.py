"""The Helm values every catalog release is installed with, and the objects applied beside them.

``kubelab.components.catalog`` pins the charts; this module says how each one is configured
for a class cluster. The installer calls :func:`values_for` for each release (it hashes the
result to skip releases whose values did not change, so the same settings always give the
same dict) and applies :func:`extra_manifests` of a component once its releases are ready.
Nothing here talks to a cluster or holds a secret: the Gitea admin password lives in a Secret
the installer creates before installing Gitea (keys ``username`` and ``password``), and the
values only name that Secret.

How the pieces fit together:

- istiod sends every span to Jaeger through an OpenTelemetry extension provider (OTLP gRPC on
  Jaeger's port 4317), selected mesh-wide by ``meshConfig.defaultProviders.tracing`` and by the
  ``mesh-default`` Telemetry object, sampling 100% (a class generates little traffic).
- VictoriaMetrics scrapes the Envoy sidecars (container port 15090 ``/stats/prometheus``),
  istiod (15014 ``/metrics``) and annotated pods. Istio's metrics merging is off, so an app's
  ``prometheus.io/*`` annotations keep pointing at the app and no series is scraped twice.
- Kiali reads VictoriaMetrics and Jaeger at their in-cluster URLs; Flagger reads
  VictoriaMetrics too.
- Kiali asks for a login (its ``token`` strategy) and is view-only, whoever reaches it: a
  pod of the cluster as well as a visitor. ``kubelab open kiali`` writes a token of the
  ``kubelab-dashboard-viewer`` ServiceAccount, bound to the chart's ``kiali-viewer``
  ClusterRole, for the instructor to log in with.
- With a ``domain``, Gitea (which has its own accounts, and no sign-up) and the lesson's app
  get hostnames ``<name>.<domain>`` on the Istio ingress gateway; Kiali too with
  ``expose_dashboards``, which needs ``tls`` (a token is never sent over plain HTTP). Jaeger,
  VictoriaMetrics and the Argo Rollouts dashboard have no login of their own and are never
  exposed: ``kubelab open`` reaches them through a port-forward. With ``tls`` cert-manager
  gets the hostnames a Let's Encrypt certificate (HTTP-01 through that gateway).

Where each key was read and rendered is in ``docs/components.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kubelab.cluster.facts import MESH_PLATFORMS, ClusterFacts
from kubelab.components import catalog
from kubelab.components.catalog import Component, Release
from kubelab.errors import UsageError

LETSENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"

#: Name of the Istio extension provider (meshConfig) that sends traces to Jaeger.
TRACING_PROVIDER = "jaeger"
#: VictoriaMetrics' scrape interval, also told to Kiali (it sizes its rate() windows on it).
SCRAPE_INTERVAL = "15s"
#: How long VictoriaMetrics keeps samples (also told to Kiali).
RETENTION = "7d"
#: The Istio Gateway holding the dashboards' hostnames, in the istio-system namespace.
DASHBOARD_GATEWAY = "kubelab-dashboards"
#: The Secret (istio-system) cert-manager writes the dashboards' certificate into.
DASHBOARD_TLS_SECRET = "kubelab-dashboards-tls"
#: The ClusterIssuer created with ``tls``.
CLUSTER_ISSUER = "letsencrypt"
#: UIs with accounts of their own, served under ``domain`` (Gitea: no sign-up, admin only).
PUBLIC_WITH_LOGIN = frozenset({"gitea"})
#: Dashboards with a login (Kiali's token strategy), served under ``domain`` only with
#: ``expose_dashboards`` (and TLS). Every other UI (Jaeger, Argo Rollouts, VictoriaMetrics)
#: has no authentication of its own and is reached with ``kubelab open`` only.
LOGIN_DASHBOARDS = frozenset({"kiali"})
#: The ServiceAccount (istio-system) whose token logs in to Kiali, view-only.
DASHBOARD_VIEWER = "kubelab-dashboard-viewer"
#: The chart's read-only ClusterRole (kiali-server templates/role-viewer.yaml).
KIALI_VIEWER_ROLE = "kiali-viewer"

_SERVICE_TYPES = ("LoadBalancer", "NodePort", "ClusterIP")
_HOSTNAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$")


@dataclass(frozen=True)
class InstallSettings:
    """What varies between clusters; everything else about a release is fixed here."""

    # Wildcard DNS name whose subdomains point at the ingress gateway (e.g. "lab.example.org"
    # gives gitea.lab.example.org); None: the UIs are reached with `kubelab open` only.
    domain: str | None = None
    # Let's Encrypt certificates for those hostnames (needs domain and email).
    tls: bool = False
    email: str | None = None
    acme_server: str = LETSENCRYPT_PRODUCTION
    # Service type of the ingress gateway: LoadBalancer on clouds, NodePort on kind.
    gateway_service_type: str = "LoadBalancer"
    # Fixed node ports for the gateway's http/https ports (kind's extraPortMappings need them).
    gateway_http_node_port: int | None = None
    gateway_https_node_port: int | None = None
    # Annotations of the gateway Service, as (name, value) pairs (a cloud load balancer's
    # settings, e.g. Hetzner's location).
    gateway_annotations: tuple[tuple[str, str], ...] = ()
    # Fixed node port of Gitea's http Service (NodePort instead of ClusterIP), for clusters
    # whose nodes pull images from Gitea's registry on localhost:<port> (kind).
    gitea_node_port: int | None = None
    # StorageClass of the VictoriaMetrics and Gitea volumes; None: the cluster's default.
    storage_class: str | None = None
    # Secret (namespace gitea, keys username/password) holding the Gitea admin account.
    gitea_admin_secret: str = "gitea-admin"
    # host[:port] under which nodes and the image builder reach Gitea's registry; it becomes
    # Gitea's ROOT_URL (the registry's token realm) and wins over gitea.<domain>.
    registry_host: str | None = None
    # The components being installed (their names); None means every component. Kiali and
    # Istio only point at Jaeger when it is installed, and only installed UIs get hostnames.
    components: frozenset[str] | None = None
    # Serve the dashboards that have a login (Kiali) under domain too; needs tls.
    expose_dashboards: bool = False
    # Percentage of requests traced.
    trace_sampling: float = 100.0
    # Istio's platform profile for its CNI node agent (kubelab.cluster.facts.MESH_PLATFORMS);
    # None: read from the cluster's version at `up`, the usual layout until then.
    mesh_platform: str | None = ""

    def __post_init__(self) -> None:
        if self.gateway_service_type not in _SERVICE_TYPES:
            raise UsageError(
                f"gateway service type {self.gateway_service_type!r} is not one of "
                f"{', '.join(_SERVICE_TYPES)}"
            )
        if self.domain is not None and not _HOSTNAME.match(self.domain):
            raise UsageError(
                f"domain {self.domain!r} is not a DNS name",
                hint="Give the wildcard DNS name without '*.' (for example lab.example.org).",
            )
        if self.tls and (not self.domain or not self.email):
            raise UsageError(
                "TLS needs a domain and an email address",
                hint="Pass --domain and --email with --tls (Let's Encrypt needs both).",
            )
        check_exposure(self.domain, self.tls, self.expose_dashboards)
        if self.mesh_platform is not None and self.mesh_platform not in MESH_PLATFORMS:
            raise UsageError(
                f"mesh platform {self.mesh_platform!r} is not one of "
                f"{', '.join(p or '(usual)' for p in MESH_PLATFORMS)}"
            )
        if self.registry_host is not None and not _HOST_PORT.match(self.registry_host):
            raise UsageError(f"registry host {self.registry_host!r} is not host[:port]")
        for port in (
            self.gateway_http_node_port,
            self.gateway_https_node_port,
            self.gitea_node_port,
        ):
            if port is not None and not 30000 <= port <= 32767:
                raise UsageError(f"node port {port} is outside 30000-32767")
        if not 0.0 <= self.trace_sampling <= 100.0:
            raise UsageError(f"trace sampling {self.trace_sampling} is not a percentage")

    @classmethod
    def for_cluster(
        cls,
        facts: ClusterFacts,
        *,
        domain: str | None = None,
        tls: bool = False,
        email: str | None = None,
        expose_dashboards: bool = False,
    ) -> InstallSettings:
        """The settings of a cluster with ``facts`` and the instructor's choices: what
        ``up`` installs and ``up --dry-run`` shows, from one place."""
        registry = facts.registry
        return cls(
            domain=domain,
            tls=tls,
            email=email,
            expose_dashboards=expose_dashboards,
            gateway_service_type=facts.gateway_service_type,
            gateway_http_node_port=facts.gateway_http_node_port,
            gateway_https_node_port=facts.gateway_https_node_port,
            gateway_annotations=tuple(sorted(facts.gateway_annotations.items())),
            gitea_node_port=registry.node_port if registry else None,
            registry_host=registry.host if registry else None,
            mesh_platform=facts.mesh_platform,
        )

    def installs(self, component: str) -> bool:
        """Whether ``component`` is part of this installation."""
        return self.components is None or component in self.components


def check_exposure(domain: str | None, tls: bool | None, expose_dashboards: bool) -> None:
    """Dashboards are exposed only over TLS: their login tokens never cross plain HTTP."""
    if expose_dashboards and not (domain and tls):
        raise UsageError(
            "--expose-dashboards needs --domain and --tls",
            hint="A dashboard login over plain HTTP would send its token in clear: add "
            "--domain, --tls and --email, or reach the dashboards with `kubelab open`.",
        )


# ----------------------------------------------------------------------------- addresses


def service_url(endpoint: catalog.Endpoint, path: str = "") -> str:
    """In-cluster URL of ``(namespace, service, port)``."""
    namespace, service, port = endpoint
    return f"http://{service}.{namespace}.svc.cluster.local:{port}{path}"


def _api(component: str) -> catalog.Endpoint:
    endpoint = catalog.CATALOG[component].api
    assert endpoint is not None, component
    return endpoint


def metrics_url() -> str:
    """The Prometheus-compatible query URL of VictoriaMetrics (Kiali, Flagger, analyses)."""
    return service_url(_api("victoria-metrics"))


def tracing_query_url() -> str:
    """Jaeger's HTTP query API (``/api/traces``), as Kiali reads it."""
    return service_url(_api("jaeger"))


def public_host(component: str, settings: InstallSettings) -> str | None:
    """The hostname ``component``'s UI gets on the ingress gateway, if any."""
    if settings.domain is None:
        return None
    if component not in PUBLIC_WITH_LOGIN and not (
        settings.expose_dashboards and component in LOGIN_DASHBOARDS
    ):
        return None
    if not settings.installs(component) or catalog.CATALOG[component].ui is None:
        return None
    return f"{component}.{settings.domain}"


def public_url(component: str, settings: InstallSettings) -> str | None:
    """``https://`` (with tls) or ``http://`` URL of ``component``'s public hostname."""
    host = public_host(component, settings)
    if host is None:
        return None
    return f"{'https' if settings.tls else 'http'}://{host}/"


def gitea_root_url(settings: InstallSettings) -> str:
    """Gitea's ROOT_URL: the registry host, else its public hostname, else the in-cluster URL."""
    if settings.registry_host:
        return f"http://{settings.registry_host}/"
    return public_url("gitea", settings) or service_url(_api("gitea"), "/")


# ----------------------------------------------------------------------------- values


def _istio_base(settings: InstallSettings) -> dict[str, Any]:
    # base/values.yaml: the CRDs and the default revision's validating webhook.
    return {"defaultRevision": "default"}


def _platform(settings: InstallSettings) -> dict[str, Any]:
    """``global.platform``: the chart's own profile for the cluster's platform
    (files/profile-platform-<name>.yaml), merged under kubelab's values."""
    return {"global": {"platform": settings.mesh_platform}} if settings.mesh_platform else {}


def _istio_cni(settings: InstallSettings) -> dict[str, Any]:
    # istio-cni/values.yaml (chart "cni"): a node agent (DaemonSet) that sets up each injected
    # pod's traffic redirection from the node, so sidecars need no istio-init container with
    # NET_ADMIN and NET_RAW, and student namespaces can enforce Pod Security baseline.
    if settings.mesh_platform == "gke":
        # The gke profile leaves cniBinDir empty for templates/daemonset.yaml to detect
        # /home/kubernetes/bin from a "-gke" server version, and a profile's keys win over
        # these values; so its two settings are given here instead, visible in the plan.
        return {"cniBinDir": "/home/kubernetes/bin", "resourceQuotas": {"enabled": True}}
    return _platform(settings)


def _istiod(settings: InstallSettings) -> dict[str, Any]:
    # istio-control/istio-discovery/values.yaml: meshConfig is merged over the chart's mesh
    # (templates/configmap.yaml, mergeOverwrite) into the `istio` ConfigMap.
    default_providers: dict[str, Any] = {
        # Setting defaultProviders switches off the chart's own default (metrics:
        # [prometheus], templates/_helpers.tpl "default-prometheus"); without it Envoy
        # would emit no istio_* metrics (pilot/pkg/model/telemetry.go mergeMetrics).
        "metrics": ["prometheus"],
    }
    mesh: dict[str, Any] = {
        # Envoy stats are scraped on 15090 directly; apps keep their own annotations.
        "enablePrometheusMerge": False,
        "enableTracing": settings.installs("jaeger"),
        "defaultProviders": default_providers,
    }
    if settings.installs("jaeger"):
        default_providers["tracing"] = [TRACING_PROVIDER]
        namespace, service, _ = _api("jaeger")
        mesh["extensionProviders"] = [
            {
                "name": TRACING_PROVIDER,
                "opentelemetry": {
                    "service": f"{service}.{namespace}.svc.cluster.local",
                    "port": catalog.JAEGER_OTLP_GRPC_PORT,
                },
            }
        ]
    return {
        "meshConfig": mesh,
        # PILOT_TRACE_SAMPLING: the sampling percentage when a Telemetry object sets none.
        "traceSampling": settings.trace_sampling,
        # The chart asks for 500m/2Gi; a class cluster's istiod needs far less.
        "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}},
        # Sidecars rely on the istio-cni node agent: the injected init container is
        # istio-validation (no capabilities, user 1337) instead of istio-init
        # (files/injection-template.yaml reads pilot.cni.enabled, which
        # templates/istiod-injector-configmap.yaml picks from this top-level `cni`).
        "cni": {"enabled": True},
        **_platform(settings),
    }


def _gateway(settings: InstallSettings) -> dict[str, Any]:
    # gateway/values.yaml (validated by gateway/values.schema.json).
    service: dict[str, Any] = {"type": settings.gateway_service_type}
    if settings.gateway_annotations:
        service["annotations"] = dict(settings.gateway_annotations)
    if settings.gateway_http_node_port or settings.gateway_https_node_port:
        # The ports list replaces the chart's; same three ports, with fixed node ports.
        ports: list[dict[str, Any]] = [
            {"name": "status-port", "port": 15021, "protocol": "TCP", "targetPort": 15021},
            {"name": "http2", "port": 80, "protocol": "TCP", "targetPort": 80},
            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 443},
        ]
        if settings.gateway_http_node_port:
            ports[1]["nodePort"] = settings.gateway_http_node_port
        if settings.gateway_https_node_port:
            ports[2]["nodePort"] = settings.gateway_https_node_port
        service["ports"] = ports
    return {
        # The lesson's Gateway selects istio: ingressgateway; the chart's selector labels
        # take these over the release-name defaults (templates/_helpers.tpl).
        "labels": {"app": catalog.GATEWAY_RELEASE, "istio": "ingressgateway"},
        "service": service,
    }


def _scrape_config() -> dict[str, Any]:
    """VictoriaMetrics' scrape configuration (Prometheus format, ``server.scrape.config``)."""
    pod_labels: list[dict[str, Any]] = [
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    ]
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {
                "job_name": "victoriametrics",
                "static_configs": [{"targets": [f"localhost:{catalog.VM_PORT}"]}],
            },
            {
                # Every Envoy (sidecars and gateways) exposes its stats, istio_requests_total
                # included, on container port 15090 named http-envoy-prom
                # (istio-discovery/files/injection-template.yaml, gateway-injection-template.yaml).
                "job_name": "envoy-stats",
                "metrics_path": "/stats/prometheus",
                "kubernetes_sd_configs": [{"role": "pod"}],
                "relabel_configs": [
                    {
                        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                        "action": "keep",
                        "regex": ".*-envoy-prom",
                    },
                    {
                        "source_labels": ["__meta_kubernetes_pod_container_port_number"],
                        "action": "keep",
                        "regex": "15090",
                    },
                    *pod_labels,
                ],
            },
            {
                # istiod's own metrics: container port 15014 (http-monitoring), /metrics
                # (istio-discovery/templates/deployment.yaml).
                "job_name": "istiod",
                "kubernetes_sd_configs": [
                    {"role": "pod", "namespaces": {"names": [catalog.ISTIO_NAMESPACE]}}
                ],
                "relabel_configs": [
                    {
                        "source_labels": [
                            "__meta_kubernetes_pod_label_app",
                            "__meta_kubernetes_pod_container_port_number",
                        ],
                        "action": "keep",
                        "regex": "istiod;15014",
                    },
                    *pod_labels,
                ],
            },
            {
                # Pods that ask for it with prometheus.io/scrape|port|path annotations (the
                # apps, Jaeger, Flagger). Port 15020 is the Istio agent's merged endpoint that
                # gateway pods announce: their Envoy stats already come from envoy-stats.
                "job_name": "kubernetes-pods",
                "kubernetes_sd_configs": [{"role": "pod"}],
                "relabel_configs": [
                    {
                        "source_labels": ["__meta_kubernetes_pod_container_init"],
                        "action": "drop",
                        "regex": "true",
                    },
                    {
                        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                        "action": "keep",
                        "regex": "true",
                    },
                    {
                        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_port"],
                        "action": "drop",
                        "regex": "15020",
                    },
                    {
                        # One target per pod: the container port the annotation names.
                        "source_labels": [
                            "__meta_kubernetes_pod_annotation_prometheus_io_port",
                            "__meta_kubernetes_pod_container_port_number",
                        ],
                        "action": "keep_if_equal",
                    },
                    {
                        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
                        "action": "replace",
                        "target_label": "__metrics_path__",
                        "regex": "(.+)",
                    },
                    *pod_labels,
                ],
            },
        ],
    }


def _victoria_metrics(settings: InstallSettings) -> dict[str, Any]:
    # victoria-metrics-single/values.yaml: server.scrape.config becomes the scrape.yml of
    # the <fullname>-scrapeconfig ConfigMap passed as -promscrape.config.
    return {
        "server": {
            # Service (and StatefulSet) name: catalog.VM_SERVICE, port 8428.
            "fullnameOverride": catalog.VM_SERVICE,
            "retentionPeriod": RETENTION,
            "persistentVolume": {
                "enabled": True,
                "size": "4Gi",
                "storageClassName": settings.storage_class or "",
            },
            "scrape": {"enabled": True, "config": _scrape_config()},
        }
    }


def _jaeger(settings: InstallSettings) -> dict[str, Any]:
    # jaeger/values.yaml: without `userconfig` the all-in-one image runs its built-in
    # configuration: memory storage, OTLP on 4317/4318, zipkin on 9411, query on 16686.
    return {"fullnameOverride": catalog.JAEGER_SERVICE}


def _kiali(settings: InstallSettings) -> dict[str, Any]:
    # kiali-server/values.yaml mirrors the Kiali CR; keys below: kiali/kiali config/config.go.
    vm = metrics_url()
    external: dict[str, Any] = {
        "prometheus": {
            "url": vm,
            # VictoriaMetrics answers Prometheus' health endpoint (lib/httpserver).
            "health_check_url": f"{vm}/-/healthy",
            # Kiali asks Prometheus for its scrape interval (/api/v1/status/config) and
            # retention (/api/v1/status/runtimeinfo, which VictoriaMetrics lacks); with
            # thanos_proxy it takes both from here instead (handlers/config.go).
            "thanos_proxy": {
                "enabled": True,
                "scrape_interval": SCRAPE_INTERVAL,
                "retention_period": RETENTION,
            },
        },
        "grafana": {"enabled": False},
        "tracing": {"enabled": False},
    }
    if settings.installs("jaeger"):
        external["tracing"] = {
            "enabled": True,
            "provider": "jaeger",
            "internal_url": tracing_query_url(),
            "use_grpc": False,
            # Jaeger is never exposed (no login of its own): no link to a public URL.
            "external_url": "",
        }
    return {
        # A login whoever reaches it (a pod of the cluster too), and nothing to change with:
        # view-only mode also binds Kiali to the chart's kiali-viewer ClusterRole.
        "auth": {"strategy": "token"},
        "deployment": {"view_only_mode": True, "ingress": {"enabled": False}},
        "external_services": external,
        "server": {"port": catalog.KIALI_PORT, "web_root": "/kiali"},
    }


def _gitea(settings: InstallSettings) -> dict[str, Any]:
    # gitea/values.yaml; defaults filled in by templates/_helpers.tpl
    # (gitea.inline_configuration.defaults).
    root_url = gitea_root_url(settings)
    host_port = root_url.split("://", 1)[1].rstrip("/")
    domain = host_port.split(":", 1)[0]
    # A normal ClusterIP (the chart's default is headless), so the gateway can route to it;
    # or a NodePort when the nodes pull from the registry through one.
    http_service: dict[str, Any] = {
        "type": "ClusterIP",
        "port": catalog.GITEA_PORT,
        "clusterIP": "",
    }
    if settings.gitea_node_port:
        http_service.update(type="NodePort", nodePort=settings.gitea_node_port)
    return {
        "replicaCount": 1,
        # One pod on a ReadWriteOnce volume: stop the old pod before starting the new one.
        "strategy": {"type": "Recreate", "rollingUpdate": None},
        "postgresql": {"enabled": False},
        "postgresql-ha": {"enabled": False},
        "valkey": {"enabled": False},
        "valkey-cluster": {"enabled": False},
        "persistence": {
            "enabled": True,
            "size": "1Gi",
            "storageClass": settings.storage_class,
        },
        "service": {"http": http_service},
        "gitea": {
            "admin": {
                "existingSecret": settings.gitea_admin_secret,
                "email": "admin@kubelab.invalid",
                "passwordMode": "keepUpdated",
            },
            "config": {
                "server": {
                    "DOMAIN": domain,
                    "ROOT_URL": root_url,
                    "SSH_DOMAIN": domain,
                    # Also the http Service's targetPort (templates/gitea/httpService.yaml),
                    # which is empty unless set here.
                    "HTTP_PORT": catalog.GITEA_PORT,
                },
                "database": {"DB_TYPE": "sqlite3"},
                "session": {"PROVIDER": "memory"},
                "cache": {"ADAPTER": "memory"},
                "queue": {"TYPE": "level"},
                "packages": {"ENABLED": True},
                "service": {"DISABLE_REGISTRATION": True},
            },
        },
    }


def _cert_manager(settings: InstallSettings) -> dict[str, Any]:
    # cert-manager/values.yaml: crds.enabled installs the CRDs as templates; keep leaves them
    # (and so every Certificate) in place when the release is uninstalled.
    return {"crds": {"enabled": True, "keep": True}}


def _flagger(settings: InstallSettings) -> dict[str, Any]:
    # flagger/values.yaml; the CRDs come from the chart's crds/ folder.
    return {"meshProvider": "istio", "metricsServer": metrics_url()}


def _loadtester(settings: InstallSettings) -> dict[str, Any]:
    # loadtester/values.yaml: Service flagger-loadtester, port 80.
    return {"fullnameOverride": catalog.LOADTESTER_RELEASE}


def _argo_rollouts(settings: InstallSettings) -> dict[str, Any]:
    # argo-rollouts/values.yaml: installCRDs is on by default.
    return {"dashboard": {"enabled": True}}


_VALUES = {
    "istio-base": _istio_base,
    "istio-cni": _istio_cni,
    "istiod": _istiod,
    catalog.GATEWAY_RELEASE: _gateway,
    "victoria-metrics": _victoria_metrics,
    "jaeger": _jaeger,
    "kiali": _kiali,
    "gitea": _gitea,
    "cert-manager": _cert_manager,
    "flagger": _flagger,
    catalog.LOADTESTER_RELEASE: _loadtester,
    "argo-rollouts": _argo_rollouts,
}


def values_for(release: Release, settings: InstallSettings) -> dict[str, Any]:
    """The exact values ``release`` is installed with (a fresh dict on each call)."""
    try:
        build = _VALUES[release.name]
    except KeyError:
        raise KeyError(f"no values for release {release.name!r}") from None
    return build(settings)


# ----------------------------------------------------------------------------- manifests


def _meta(name: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/managed-by": "kubelab"}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def telemetry_manifest(settings: InstallSettings) -> dict[str, Any]:
    """The mesh-wide Telemetry object: every proxy traces to Jaeger at the sampling rate."""
    return {
        "apiVersion": "telemetry.istio.io/v1",
        "kind": "Telemetry",
        "metadata": _meta("mesh-default", catalog.ISTIO_NAMESPACE),
        "spec": {
            "tracing": [
                {
                    "providers": [{"name": TRACING_PROVIDER}],
                    "randomSamplingPercentage": settings.trace_sampling,
                }
            ]
        },
    }


def _exposed(settings: InstallSettings) -> list[str]:
    return sorted(name for name in catalog.CATALOG if public_host(name, settings))


def dashboard_gateway(settings: InstallSettings) -> dict[str, Any] | None:
    """The Istio Gateway serving the UIs' hostnames (None without a domain)."""
    hosts = [f"*/{public_host(name, settings)}" for name in _exposed(settings)]
    if not hosts:
        return None
    # With tls the hostnames are served on 443 only: port 80 is left to the Ingress cert-manager
    # creates for each HTTP-01 challenge (a catch-all route of ours for the same host would
    # shadow the challenge path).
    server: dict[str, Any] = (
        {
            "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
            "hosts": hosts,
            "tls": {"mode": "SIMPLE", "credentialName": DASHBOARD_TLS_SECRET},
        }
        if settings.tls
        else {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": hosts}
    )
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": _meta(DASHBOARD_GATEWAY, catalog.ISTIO_NAMESPACE),
        "spec": {"selector": {"istio": "ingressgateway"}, "servers": [server]},
    }


def dashboard_route(component: Component, settings: InstallSettings) -> dict[str, Any] | None:
    """The VirtualService sending ``<component>.<domain>`` to its UI (None when not exposed)."""
    host = public_host(component.name, settings)
    if host is None or component.ui is None:
        return None
    namespace, service, port = component.ui
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": _meta(component.name, namespace),
        "spec": {
            "hosts": [host],
            "gateways": [f"{catalog.ISTIO_NAMESPACE}/{DASHBOARD_GATEWAY}"],
            "http": [
                {
                    "route": [
                        {
                            "destination": {
                                "host": f"{service}.{namespace}.svc.cluster.local",
                                "port": {"number": port},
                            }
                        }
                    ]
                }
            ],
        },
    }


def dashboard_viewer_manifests() -> list[dict[str, Any]]:
    """The ServiceAccount whose short-lived tokens log in to Kiali, bound to the chart's
    read-only ClusterRole (``kubelab open kiali`` requests them)."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(DASHBOARD_VIEWER, catalog.ISTIO_NAMESPACE),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(DASHBOARD_VIEWER),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": KIALI_VIEWER_ROLE,
            },
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": DASHBOARD_VIEWER,
                    "namespace": catalog.ISTIO_NAMESPACE,
                }
            ],
        },
    ]


def app_host(domain: str) -> str:
    """Where the lesson's app is served through the ingress gateway."""
    return f"app.{domain}"


def app_gateway_values(settings: InstallSettings) -> dict[str, Any]:
    """The app chart's gateway values when a domain is set (empty otherwise)."""
    if not settings.domain:
        return {}
    tls: dict[str, Any] = {"enabled": settings.tls}
    if settings.tls:
        tls["credentialName"] = DASHBOARD_TLS_SECRET
    return {"gateway": {"hosts": [app_host(settings.domain)], "tls": tls}}


def tls_manifests(settings: InstallSettings) -> list[dict[str, Any]]:
    """With ``tls``: the ACME ClusterIssuer, Istio's IngressClass and the UIs' Certificate.

    cert-manager answers HTTP-01 challenges with a temporary Ingress of class ``istio``,
    which istiod serves on the ingress gateway (its Kubernetes Ingress support needs the
    IngressClass); the certificate lands in istio-system, where the Gateway reads it.
    """
    if not settings.tls:
        return []
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": _meta("istio"),
            "spec": {"controller": "istio.io/ingress-controller"},
        },
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "ClusterIssuer",
            "metadata": _meta(CLUSTER_ISSUER),
            "spec": {
                "acme": {
                    "server": settings.acme_server,
                    "email": settings.email,
                    "privateKeySecretRef": {"name": f"{CLUSTER_ISSUER}-account-key"},
                    "solvers": [{"http01": {"ingress": {"ingressClassName": "istio"}}}],
                }
            },
        },
    ]
    hosts = [h for name in _exposed(settings) if (h := public_host(name, settings))]
    if settings.domain:
        hosts.append(app_host(settings.domain))  # the lesson's app, on the same certificate
    if hosts:
        objects.append(
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "Certificate",
                "metadata": _meta(DASHBOARD_GATEWAY, catalog.ISTIO_NAMESPACE),
                "spec": {
                    "secretName": DASHBOARD_TLS_SECRET,
                    "dnsNames": hosts,
                    "issuerRef": {
                        "name": CLUSTER_ISSUER,
                        "kind": "ClusterIssuer",
                        "group": "cert-manager.io",
                    },
                },
            }
        )
    return objects


def extra_manifests(component: Component, settings: InstallSettings) -> list[dict[str, Any]]:
    """Objects to apply once ``component``'s releases are ready (validated in the tests)."""
    objects: list[dict[str, Any]] = []
    if component.name == "istio":
        if settings.installs("jaeger"):
            objects.append(telemetry_manifest(settings))
        gateway = dashboard_gateway(settings)
        if gateway is not None:
            objects.append(gateway)
    elif component.name == "cert-manager":
        objects.extend(tls_manifests(settings))
    elif component.name == "kiali":
        objects.extend(dashboard_viewer_manifests())
    route = dashboard_route(component, settings)
    if route is not None:
        objects.append(route)
    return objects


def component_names(names: list[str], settings: InstallSettings) -> list[str]:
    """A lesson's components plus what the settings call for (cert-manager with ``tls``)."""
    extra = ["cert-manager"] if settings.tls and "cert-manager" not in names else []
    return [*names, *extra]
