"""The ``gke`` provider: a Google Kubernetes Engine Standard cluster made and removed by kubelab.

:class:`GkeCluster` talks to the GKE v1 API through ``google.cloud.container_v1``'s
``ClusterManagerClient`` over its REST transport. The address can be overridden with
``KUBELAB_GKE_ENDPOINT`` (tests point it at a local stub, ``http://127.0.0.1:PORT``; the REST
transport keeps an explicit ``http://`` scheme). Credentials come from Application Default
Credentials (``google.auth.default()``), the project from them, ``GOOGLE_CLOUD_PROJECT`` or a
parameter.

``create`` makes one cluster with one node pool; the cluster carries the resource labels
``kubelab=true`` and ``kubelab-cluster=<name>`` (GKE copies them to the node VMs and their
disks). The cluster is written to the state file *before* the create call, so a crash or a
failed operation leaves a record from which ``delete`` removes it. GKE returns a long-running
:class:`Operation` whose ``name`` is the short id (``operation-...``); kubelab polls
``projects/P/locations/L/operations/<id>`` until ``DONE``.

The kubeconfig is built from the cluster's ``endpoint`` and
``masterAuth.clusterCaCertificate`` (already base64) with an ``exec`` user that runs
``python -m kubelab gke-token`` (:mod:`kubelab.cli.gke_token`): kubectl and the Kubernetes
client ask kubelab for a fresh Google access token when the old one expires, so the
kubeconfig keeps working for a whole class and no gcloud plugin is needed. It holds no
secret and is still written 0600.

What deleting the cluster does **not** remove: Compute Engine forwarding rules of
``LoadBalancer`` Services and persistent disks of PVCs made from inside the cluster survive
the cluster unless ``kubelab down`` ran first (see :data:`LEFTOVER_NOTE`).

Tokens are never logged or put into a message; API errors a user will hit become a
:class:`~kubelab.errors.SetupError` with the fix.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from kubelab import paths
from kubelab.checks.sampling import Sampler
from kubelab.checks.types import HttpStable, TrafficSplit
from kubelab.cluster.kube import Kube
from kubelab.errors import KubelabError, KubelabTimeout, SetupError, UsageError
from kubelab.paths import write_private
from kubelab.providers.base import ClusterFacts, ClusterInfo, Provider, RegistryAccess
from kubelab.providers.existing import real_cluster_sampler
from kubelab.providers.gke_pricing import (
    MACHINE_HOURLY,
    MANAGEMENT_FEE_HOURLY,
    Plan,
    plan,
    region_of,
)
from kubelab.state import ClusterRecord, StateStore

if TYPE_CHECKING:
    from google.api_core import exceptions as gexc
    from google.auth.credentials import Credentials
    from google.cloud import container_v1

log = logging.getLogger(__name__)

PROVIDER = "gke"
ENDPOINT_ENV = "KUBELAB_GKE_ENDPOINT"
PROJECT_ENVS = ("GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT")
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
DEFAULT_NAME = "kubelab"
DEFAULT_LOCATION = "europe-west1-b"
DEFAULT_MACHINE_TYPE = "e2-standard-4"  # 4 vCPU, 16 GB: Istio + observability + Gitea
DEFAULT_NODES = 2
LABEL_MANAGED = "kubelab"
LABEL_CLUSTER = "kubelab-cluster"
EXEC_API_VERSION = "client.authentication.k8s.io/v1"
CREATE_TIMEOUT = 1800.0
DELETE_TIMEOUT = 1200.0
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")

LEFTOVER_NOTE = (
    "Deleting a GKE cluster does not delete the Compute Engine load balancers (forwarding "
    "rules) of LoadBalancer Services nor the persistent disks of PVCs made inside it: "
    "`kubelab cluster delete` releases them from inside the cluster first, and stops when it "
    "cannot (`--force` deletes the cluster anyway). To check for any left over: "
    "`gcloud compute forwarding-rules list "
    '--filter="description~kubernetes.io/service-name"` and `gcloud compute disks list '
    '--filter="description~kubernetes.io/created-for/pvc/name AND -users:*"`; '
    "delete them with `gcloud compute forwarding-rules delete NAME --region R` and "
    "`gcloud compute disks delete NAME --zone Z`."
)

T = TypeVar("T")


@dataclass
class Leftover:
    """A GKE cluster labelled ``kubelab=true`` that still exists (and is billed)."""

    name: str
    location: str
    status: str
    nodes: int
    machine_type: str
    hourly: Decimal | None

    def line(self) -> str:
        cost = f", about USD {self.hourly:.3f}/h" if self.hourly is not None else ""
        return (
            f"gke-cluster {self.name} in {self.location}: {self.status}, "
            f"{self.nodes} x {self.machine_type}{cost}"
        )


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise UsageError(
            f"invalid GKE cluster name {name!r}",
            hint="Lower-case letters, digits and '-', starting with a letter, at most 40 "
            "characters.",
        )


def kubeconfig_document(name: str, endpoint: str, ca_data: str) -> dict[str, Any]:
    """A kubeconfig whose user runs ``python -m kubelab gke-token`` for a fresh token."""
    context = f"gke-{name}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": context,
                "cluster": {
                    "server": f"https://{endpoint}",
                    "certificate-authority-data": ca_data,
                },
            }
        ],
        "users": [
            {
                "name": context,
                "user": {
                    "exec": {
                        "apiVersion": EXEC_API_VERSION,
                        "command": sys.executable,
                        "args": ["-m", "kubelab", "gke-token"],
                        "interactiveMode": "Never",
                        "provideClusterInfo": False,
                        "installHint": "kubelab (with google-auth) must be installed for "
                        f"{sys.executable}; credentials: gcloud auth application-default login",
                    }
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
    }


def _first_line(message: str) -> str:
    return (str(message).strip().splitlines() or ["unknown error"])[0]


def _retryable() -> tuple[type[Exception], ...]:
    from google.api_core import exceptions as e

    return (
        e.TooManyRequests,
        e.ResourceExhausted,
        e.InternalServerError,
        e.BadGateway,
        e.ServiceUnavailable,
        e.GatewayTimeout,
    )


class GkeUnreachable(SetupError):
    """No answer from Google: the token endpoint or the GKE API could not be reached.
    ``sent`` is False when the request provably never left (no connection was made)."""

    def __init__(self, message: str, *, sent: bool, hint: str) -> None:
        super().__init__(message, hint=hint)
        self.sent = sent


_TRANSPORT_WORDS = {
    "gaierror": "the name does not resolve",
    "NameResolutionError": "the name does not resolve",
    "ConnectionRefusedError": "connection refused",
    "ConnectTimeoutError": "no connection within the timeout",
    "ReadTimeoutError": "no answer within the timeout",
    "SSLError": "TLS failed",
}


def _unreachable(exc: BaseException, action: str, endpoint: str) -> GkeUnreachable | None:
    """The GkeUnreachable for a transport failure (None for any other exception)."""
    import requests
    import urllib3.exceptions as u3
    from google.auth.exceptions import TransportError

    if not isinstance(exc, requests.RequestException | TransportError):
        return None
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 10:
        chain.append(current)
        reason = getattr(current, "reason", None)
        nested = next(
            (a for a in getattr(current, "args", ()) if isinstance(a, BaseException)), None
        )
        current = reason if isinstance(reason, BaseException) else nested or current.__cause__
    names = [type(e).__name__ for e in chain]
    never = any(isinstance(e, u3.NewConnectionError | u3.ConnectTimeoutError) for e in chain)
    token = isinstance(exc, TransportError)
    what = "Google's token endpoint" if token else f"the GKE API at {endpoint}"
    detail = next(
        (n for n in reversed(names) if n not in ("MaxRetryError", "ConnectionError")), names[-1]
    )
    detail = _TRANSPORT_WORDS.get(detail, detail)
    return GkeUnreachable(
        f"cannot reach {what} while trying to {action} ({detail})",
        sent=not (never or token),
        hint="Check the network (and a proxy, if you use one), then run the same command "
        "again; it resumes.",
    )


def default_credentials() -> tuple[Credentials, str | None]:
    """Application Default Credentials and the project they name (if any)."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, project = google.auth.default(scopes=SCOPES)
    except DefaultCredentialsError:
        raise SetupError(
            "no Google Cloud credentials found (Application Default Credentials)",
            hint="Run `gcloud auth application-default login`, or set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service account key file.",
        ) from None
    return credentials, project


class GkeCluster:
    """Create, describe and delete kubelab's GKE clusters in one project."""

    def __init__(
        self,
        project: str | None = None,
        *,
        credentials: Credentials | None = None,
        endpoint: str | None = None,
        poll_interval: float = 5.0,
        create_timeout: float = CREATE_TIMEOUT,
        delete_timeout: float = DELETE_TIMEOUT,
        retry_deadline: float = 120.0,
        retry_initial: float = 1.0,
        store: StateStore | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._project = project
        self._credentials = credentials
        self.endpoint = endpoint if endpoint is not None else os.environ.get(ENDPOINT_ENV)
        self.poll_interval = poll_interval
        self.create_timeout = create_timeout
        self.delete_timeout = delete_timeout
        self.retry_deadline = retry_deadline
        self.retry_initial = retry_initial
        self.store = store or StateStore()
        self.sleep = sleep
        self._client: container_v1.ClusterManagerClient | None = None
        self.polls = 0  # operation polls made (observable in tests)

    # -- client, credentials, errors -------------------------------------------------------

    def _load_credentials(self) -> Credentials:
        if self._credentials is None:
            credentials, detected = default_credentials()
            self._credentials = credentials
            if not self._project and detected:
                self._project = detected
        return self._credentials

    @property
    def project(self) -> str:
        self._load_credentials()
        project = self._project or next(
            (os.environ[v] for v in PROJECT_ENVS if os.environ.get(v)), None
        )
        if not project:
            raise SetupError(
                "no Google Cloud project given",
                hint="Pass --project, or set GOOGLE_CLOUD_PROJECT "
                "(`gcloud config set project P` for gcloud-made credentials).",
            )
        self._project = project
        return project

    def client(self) -> container_v1.ClusterManagerClient:
        if self._client is None:
            from google.cloud import container_v1

            options: dict[str, Any] = {}
            if self.endpoint:
                options["api_endpoint"] = self.endpoint
            self._client = container_v1.ClusterManagerClient(
                credentials=self._load_credentials(),
                transport="rest",
                client_options=options or None,
            )
        return self._client

    def _retry(self) -> Any:
        from google.api_core import retry as gretry

        return gretry.Retry(
            predicate=gretry.if_exception_type(*_retryable()),
            initial=self.retry_initial,
            maximum=max(self.retry_initial, 30.0),
            multiplier=2.0,
            timeout=self.retry_deadline,
        )

    def _call(
        self,
        action: str,
        fn: Callable[..., T],
        passthrough: tuple[type[Exception], ...] = (),
        **request: Any,
    ) -> T:
        """``fn(**request)`` with 429/5xx retried under the deadline; errors made readable
        (except ``passthrough`` ones, which the caller handles)."""
        from google.api_core import exceptions as e

        try:
            return fn(**request, retry=self._retry(), timeout=60.0)
        except passthrough:
            raise
        except e.RetryError as exc:
            cause = exc.cause if isinstance(exc.cause, e.GoogleAPICallError) else None
            raise SetupError(
                f"GKE API kept failing while trying to {action} "
                f"(retried for {self.retry_deadline:.0f}s): "
                f"{_first_line(cause.message) if cause else 'no answer'}",
                hint="Google's API is rate limiting or unavailable: wait a minute and run "
                "the command again (it resumes); https://status.cloud.google.com",
            ) from None
        except e.GoogleAPICallError as exc:
            raise self._translate(exc, action) from None
        except Exception as exc:
            unreachable = _unreachable(exc, action, self.endpoint or "container.googleapis.com")
            if unreachable is None:
                raise
            raise unreachable from None

    def _translate(self, exc: gexc.GoogleAPICallError, action: str) -> SetupError:
        from google.api_core import exceptions as e

        # The REST transport prefixes "METHOD URL: "; the URL names no secret but is noise.
        message = re.sub(r"^[A-Z]+ \S+: ", "", _first_line(exc.message))
        kind = "other"
        if isinstance(exc, e.TooManyRequests | e.ResourceExhausted):
            kind = "ratelimit"
        elif isinstance(exc, e.Unauthenticated):
            kind = "unauth"
        elif isinstance(exc, e.PermissionDenied | e.Forbidden):
            kind = "denied"
        return self._explain(
            message, action, reason=exc.reason or "", metadata=exc.metadata, kind=kind
        )

    def _explain(
        self,
        message: str,
        action: str,
        *,
        reason: str = "",
        metadata: dict[str, Any] | None = None,
        kind: str = "other",
    ) -> SetupError:
        """A GKE error message as a SetupError with the fix (``kind`` from its HTTP status)."""
        lowered = message.lower()
        project = self._project or "YOUR_PROJECT"
        if (
            reason == "SERVICE_DISABLED"
            or "has not been used in project" in lowered
            or ("api is not enabled" in lowered)
        ):
            url = (metadata or {}).get("activationUrl")
            return SetupError(
                f"the Kubernetes Engine API (container.googleapis.com) is not enabled in "
                f"project {project}",
                hint=f"Enable it: `gcloud services enable container.googleapis.com "
                f"--project {project}`"
                + (f" (or open {url})" if url else "")
                + ", wait a minute, and run the command again.",
            )
        if reason == "BILLING_DISABLED" or ("billing" in lowered and "disabled" in lowered):
            return SetupError(
                f"billing is not enabled for project {project}",
                hint="Link a billing account: https://console.cloud.google.com/billing "
                f"(`gcloud billing projects link {project} --billing-account=ID`).",
            )
        if "quota" in lowered and kind != "ratelimit":
            return SetupError(
                f"Google Cloud quota exceeded while trying to {action}: {message}",
                hint="Use fewer or smaller nodes (--nodes 1 --size e2-standard-2), another "
                "region, or request more quota (IAM & Admin > Quotas: CPUS, SSD_TOTAL_GB, "
                "IN_USE_ADDRESSES in the region).",
            )
        if kind == "unauth":
            return SetupError(
                "Google Cloud rejected the credentials (expired or revoked)",
                hint="Run `gcloud auth application-default login` again.",
            )
        if kind == "denied":
            return SetupError(
                f"permission denied in project {project} while trying to {action}: {message}",
                hint="The account needs the Kubernetes Engine Admin role: `gcloud projects "
                f"add-iam-policy-binding {project} --member=user:YOU "
                "--role=roles/container.admin` (a service account also needs "
                "roles/iam.serviceAccountUser). Check the project id too.",
            )
        if "machine type" in lowered or "machinetype" in lowered:
            return SetupError(
                f"machine type not available there: {message}",
                hint="Pick another --size or --location: `gcloud compute machine-types list "
                "--filter=zone:ZONE`.",
            )
        if kind == "ratelimit":
            return SetupError(
                f"GKE API rate limit hit while trying to {action}: {message}",
                hint="Wait a minute and run the command again (it resumes).",
            )
        return SetupError(
            f"GKE could not {action}: {message}",
            hint="If a cluster was made, `kubelab cluster delete --provider gke` removes it.",
        )

    # -- names ---------------------------------------------------------------------------

    def _parent(self, location: str) -> str:
        return f"projects/{self.project}/locations/{location}"

    def _cluster_path(self, name: str, location: str) -> str:
        return f"{self._parent(location)}/clusters/{name}"

    def _record(self, name: str) -> ClusterRecord | None:
        record = self.store.load().clusters.get(name)
        return record if record is not None and record.provider == PROVIDER else None

    def _location_of(self, name: str, location: str | None) -> str:
        if location:
            return location
        record = self._record(name)
        if record and record.details.get("location"):
            return str(record.details["location"])
        return DEFAULT_LOCATION

    def kubeconfig_path(self, name: str) -> Path:
        return paths.home_dir() / f"gke-{name}" / "kubeconfig"

    # -- operations ----------------------------------------------------------------------

    def wait(self, operation: container_v1.Operation, location: str, timeout: float) -> None:
        """Poll ``operation`` until DONE; raise with the operation's own error if it failed."""
        from google.cloud import container_v1

        done = container_v1.Operation.Status.DONE
        path = f"{self._parent(location)}/operations/{operation.name.rsplit('/', 1)[-1]}"
        deadline = time.monotonic() + timeout
        op = operation
        while op.status != done:
            if time.monotonic() > deadline:
                raise KubelabTimeout(
                    f"GKE operation {op.name} ({op.operation_type.name}) not done after "
                    f"{timeout:.0f}s",
                    hint="It keeps running at Google: run the same command again to keep "
                    "waiting, or `kubelab cluster status`.",
                )
            self.sleep(self.poll_interval)
            op = self._call("check the operation", self.client().get_operation, name=path)
            self.polls += 1
        error = op.error.message if op.error and op.error.message else op.status_message
        if error:
            raise self._explain(_first_line(error), f"finish {op.operation_type.name}")

    # -- create / describe / delete ------------------------------------------------------

    def plan(self, name: str, nodes: int, machine_type: str, location: str) -> Plan:
        check_name(name)
        return plan(name, nodes, machine_type, location)

    def cluster_spec(self, name: str, nodes: int, machine_type: str) -> container_v1.Cluster:
        from google.cloud import container_v1

        from kubelab.providers.gke_pricing import DISK_SIZE_GB, DISK_TYPE

        labels = {LABEL_MANAGED: "true", LABEL_CLUSTER: name}
        return container_v1.Cluster(
            name=name,
            description="made by kubelab (kubelab cluster delete removes it)",
            resource_labels=labels,
            node_pools=[
                container_v1.NodePool(
                    name="default-pool",
                    initial_node_count=nodes,
                    config=container_v1.NodeConfig(
                        machine_type=machine_type,
                        disk_size_gb=DISK_SIZE_GB,
                        disk_type=DISK_TYPE,
                        oauth_scopes=SCOPES,
                        labels=labels,
                    ),
                    management=container_v1.NodeManagement(auto_repair=True, auto_upgrade=True),
                )
            ],
            release_channel=container_v1.ReleaseChannel(
                channel=container_v1.ReleaseChannel.Channel.REGULAR
            ),
            # kube-proxy in iptables mode, said outright rather than left to GKE's default:
            # the nodes pull the lesson's images from localhost:<Gitea NodePort>
            # (RegistryAccess), which kube-proxy's iptables mode is known to serve.
            network_config=container_v1.NetworkConfig(
                datapath_provider=container_v1.DatapathProvider.LEGACY_DATAPATH
            ),
        )

    def create(
        self,
        name: str = DEFAULT_NAME,
        nodes: int = DEFAULT_NODES,
        machine_type: str = DEFAULT_MACHINE_TYPE,
        location: str = DEFAULT_LOCATION,
    ) -> ClusterInfo:
        """Create the cluster (or adopt the one being made) and write its kubeconfig."""
        from google.api_core import exceptions as e

        check_name(name)
        if nodes < 1:
            raise UsageError(f"--nodes must be at least 1 (got {nodes})")
        project = self.project
        with self.store.transaction() as state:
            existing = state.clusters.get(name)
            if existing is not None and existing.provider != PROVIDER:
                raise UsageError(
                    f"a {existing.provider} cluster named {name} is already in kubelab's state",
                    hint="Pick another --name.",
                )
            state.clusters[name] = ClusterRecord(
                name=name,
                provider=PROVIDER,
                details={
                    "project": project,
                    "location": location,
                    "machine_type": machine_type,
                    "nodes": nodes,
                    "status": "creating",
                },
            )
        client = self.client()
        try:
            operation = self._call(
                f"create cluster {name}",
                client.create_cluster,
                (e.Conflict,),  # HTTP 409 (ALREADY_EXISTS) arrives as Conflict over REST
                parent=self._parent(location),
                cluster=self.cluster_spec(name, nodes, machine_type),
            )
        except GkeUnreachable as exc:
            if existing is None and not exc.sent:
                # The create never left this machine: no cluster to remember.
                with self.store.transaction() as state:
                    state.clusters.pop(name, None)
            raise
        except e.Conflict as exc:
            if "already exists" not in str(exc.message).lower():
                raise self._translate(exc, f"create cluster {name}") from None
            # Made by an earlier run (interrupted): adopt it once its own create finished.
            self._wait_running(name, location)
        else:
            self._update(name, operation=operation.name)
            log.info("GKE is creating cluster %s (%s)", name, operation.name)
            self.wait(operation, location, self.create_timeout)
        return self.kubeconfig(name, location)

    def _wait_running(self, name: str, location: str) -> None:
        from google.cloud import container_v1

        status = container_v1.Cluster.Status
        deadline = time.monotonic() + self.create_timeout
        while True:
            cluster = self.get(name, location)
            if dict(cluster.resource_labels).get(LABEL_MANAGED) != "true":
                raise UsageError(
                    f"a GKE cluster named {name} already exists in {location} and was not "
                    "made by kubelab",
                    hint="Pick another --name, or use it with --provider existing.",
                )
            if cluster.status == status.RUNNING:
                return
            if cluster.status in (status.ERROR, status.DEGRADED, status.STOPPING):
                raise SetupError(
                    f"GKE cluster {name} is {cluster.status.name}",
                    hint="`kubelab cluster delete --provider gke` removes it; then create again.",
                )
            if time.monotonic() > deadline:
                raise KubelabTimeout(f"GKE cluster {name} not RUNNING after {self.create_timeout}s")
            self.sleep(self.poll_interval)
            self.polls += 1

    def _update(self, name: str, **details: Any) -> None:
        with self.store.transaction() as state:
            record = state.clusters.get(name)
            if record is not None:
                record.details.update(details)

    def get(self, name: str, location: str | None = None) -> container_v1.Cluster:
        location = self._location_of(name, location)
        return self._call(
            f"read cluster {name}",
            self.client().get_cluster,
            name=self._cluster_path(name, location),
        )

    def kubeconfig(self, name: str, location: str | None = None) -> ClusterInfo:
        """Write the kubeconfig (0600) from the cluster's endpoint and CA; record it."""
        location = self._location_of(name, location)
        cluster = self.get(name, location)
        if not cluster.endpoint or not cluster.master_auth.cluster_ca_certificate:
            raise SetupError(
                f"GKE cluster {name} has no endpoint yet (status {cluster.status.name})",
                hint="Wait for it to be RUNNING: `kubelab cluster status`.",
            )
        path = self.kubeconfig_path(name)
        doc = kubeconfig_document(
            name, cluster.endpoint, cluster.master_auth.cluster_ca_certificate
        )
        write_private(path, yaml.safe_dump(doc, sort_keys=False))
        with self.store.transaction() as state:
            record = state.clusters.get(name) or ClusterRecord(name=name, provider=PROVIDER)
            record.kubeconfig = str(path)
            record.details.update(
                {
                    "project": self.project,
                    "location": location,
                    "status": cluster.status.name.lower(),
                    "endpoint": cluster.endpoint,
                }
            )
            record.details.pop("operation", None)
            state.clusters[name] = record
        details = {"cluster_name": name, "project": self.project, "location": location}
        return ClusterInfo(path, details)

    def delete(
        self, name: str = DEFAULT_NAME, location: str | None = None, *, force: bool = False
    ) -> list[str]:
        """Delete the cluster and wait; NOT_FOUND counts as already gone. Idempotent.

        Its load balancers and disks are released from inside it first; when that fails
        the cluster is left in place (a SetupError says why), unless ``force``."""
        from google.api_core import exceptions as e

        location = self._location_of(name, location)
        lines: list[str] = self._release_from_inside(name, force)
        deadline = time.monotonic() + self.delete_timeout
        while True:
            try:
                operation = self.client().delete_cluster(
                    name=self._cluster_path(name, location), retry=self._retry(), timeout=60.0
                )
            except e.NotFound:
                lines.append(f"GKE cluster {name} in {location}: already gone")
                break
            except e.FailedPrecondition as exc:
                # Another operation (the create) still runs on the cluster: wait for it.
                if time.monotonic() > deadline:
                    raise self._translate(exc, f"delete cluster {name}") from None
                self.sleep(self.poll_interval)
                self.polls += 1
                continue
            except e.RetryError as exc:
                cause = exc.cause if isinstance(exc.cause, e.GoogleAPICallError) else None
                raise SetupError(
                    f"GKE API kept failing while trying to delete cluster {name}: "
                    f"{_first_line(cause.message) if cause else 'no answer'}",
                    hint="Run `kubelab cluster delete` again in a minute; "
                    "https://status.cloud.google.com",
                ) from None
            except e.GoogleAPICallError as exc:
                raise self._translate(exc, f"delete cluster {name}") from None
            self.wait(operation, location, max(1.0, deadline - time.monotonic()))
            lines.append(f"deleted GKE cluster {name} in {location}")
            break
        with self.store.transaction() as state:
            record = state.clusters.get(name)
            if record is not None and record.provider == PROVIDER:
                del state.clusters[name]
        path = self.kubeconfig_path(name)
        if path.exists():
            path.unlink()
            lines.append(f"removed {path}")
        return lines

    def _release_from_inside(self, name: str, force: bool = False) -> list[str]:
        """Load balancers and disks the cluster made go first (they outlive the cluster,
        billed). A failure stops the delete, unless ``force``: then it is reported."""
        from kubelab.cluster.kube import Kube
        from kubelab.providers.incluster import release_cloud_resources

        path = self.kubeconfig_path(name)
        if not path.exists():
            return []
        try:
            released = release_cloud_resources(Kube(path), sleep=self.sleep)
        except Exception as exc:
            reason = exc.message if isinstance(exc, KubelabError) else type(exc).__name__
            if not force:
                raise SetupError(
                    f"GKE cluster {name} is not deleted: its load balancers and disks could "
                    f"not be released from inside it first ({reason})",
                    hint="Deleted now, they would stay billed. Fix what the message says and "
                    "run `kubelab cluster delete --provider gke` again; `--force` deletes the "
                    "cluster anyway (then delete the disks and forwarding rules by hand: "
                    "`kubelab cluster leftovers`).",
                ) from None
            return [
                f"could not release in-cluster load balancers and disks first ({reason}); "
                "deleted anyway (--force): `kubelab cluster leftovers` tells what is left"
            ]
        return [f"released {line}" for line in released]

    def leftovers(self, name: str | None = None) -> list[Leftover]:
        """kubelab's clusters (label kubelab=true) that still exist, in every location."""
        response = self._call(
            "list clusters",
            self.client().list_clusters,
            parent=f"projects/{self.project}/locations/-",
        )
        found: list[Leftover] = []
        for cluster in response.clusters:
            labels = dict(cluster.resource_labels)
            if labels.get(LABEL_MANAGED) != "true":
                continue
            if name is not None and labels.get(LABEL_CLUSTER) != name:
                continue
            nodes = int(cluster.current_node_count) or sum(
                p.initial_node_count for p in cluster.node_pools
            )
            machine = cluster.node_pools[0].config.machine_type if cluster.node_pools else "?"
            prices = MACHINE_HOURLY.get(region_of(cluster.location), {})
            hourly = MANAGEMENT_FEE_HOURLY + prices[machine] * nodes if machine in prices else None
            found.append(
                Leftover(
                    cluster.name, cluster.location, cluster.status.name, nodes, machine, hourly
                )
            )
        if response.missing_zones:
            log.warning("GKE could not list zones %s", ", ".join(response.missing_zones))
        return found


class GkeProvider(Provider):
    """Lessons on a GKE cluster that kubelab made (or makes on first ``up``)."""

    name = "gke"
    owns_cluster = True

    def __init__(
        self,
        cluster_name: str = DEFAULT_NAME,
        *,
        project: str | None = None,
        location: str | None = None,
        nodes: int = DEFAULT_NODES,
        machine_type: str = DEFAULT_MACHINE_TYPE,
        cluster: GkeCluster | None = None,
    ) -> None:
        self.cluster_name = cluster_name
        self.location = location
        self.nodes = nodes
        self.machine_type = machine_type
        self.gke = cluster or GkeCluster(project)

    def preflight(self) -> None:
        from kubelab.tools import require_tool

        require_tool("helm")
        require_tool("kubectl")
        _ = self.gke.project  # credentials and project present

    def ensure_cluster(self, namespace: str) -> ClusterInfo:
        record = self.gke._record(self.cluster_name)
        if record is not None and record.details.get("status") == "running" and record.kubeconfig:
            path = Path(record.kubeconfig)
            details = {
                "cluster_name": self.cluster_name,
                "project": record.details.get("project"),
                "location": record.details.get("location"),
            }
            if path.is_file():
                return ClusterInfo(path, details)
            return self.gke.kubeconfig(self.cluster_name, self.location)
        return self.gke.create(
            self.cluster_name,
            self.nodes,
            self.machine_type,
            self.location
            or (record.details.get("location") if record else None)
            or DEFAULT_LOCATION,
        )

    def facts(self) -> ClusterFacts:
        # The nodes pull from Gitea's NodePort on their loopback: kube-proxy's iptables mode
        # serves it, and the clusters kubelab creates ask for it (legacy datapath, not
        # Dataplane V2). The images never leave the cluster; the cost is one fixed NodePort
        # (30300) on every node, closed to the internet by GKE's default firewall. GKE keeps
        # CNI plugins in /home/kubernetes/bin (Istio's gke platform profile).
        return ClusterFacts(registry=RegistryAccess(), mesh_platform="gke")

    def teardown(self, details: dict[str, Any], everything: bool = False) -> list[str]:
        if not everything:
            return []
        name = str(details.get("cluster_name") or self.cluster_name)
        location = details.get("location")
        return self.gke.delete(name, str(location) if location else self.location)

    def sampler(
        self, kube: Kube, details: dict[str, Any], spec: TrafficSplit | HttpStable
    ) -> Sampler:
        return real_cluster_sampler(kube, details, spec)
