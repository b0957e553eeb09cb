"""The ``hetzner`` provider: a k3s cluster on Hetzner Cloud servers, made and removed by kubelab.

:class:`HetznerCluster` talks to the Hetzner Cloud API through the official ``hcloud``
library. ``create`` makes, in order, an ed25519 SSH key (private half stored 0600 under
kubelab's home), a private network with one subnet, a firewall (SSH and the Kubernetes API
only from the instructor's public IP, HTTP/HTTPS from anywhere; Hetzner firewalls filter
public interfaces only, so node-to-node traffic on the private network is not affected),
one control-plane and N worker servers (Ubuntu 24.04), then hands the servers to the k3s
installer and stores the kubeconfig it returns (0600, pointed at the control plane's public
IP). Every resource carries the labels ``kubelab=true`` and ``kubelab-cluster=<name>`` and
is written to the state file the moment the API returns it, so a crash half-way leaves
enough for ``delete`` to remove everything.

``delete`` works from labels, not from memory: it also removes load balancers made from
inside the cluster by the Hetzner cloud controller manager (which labels them only with
``hcloud-ccm/service-uid``, so they are found through their targets and network) and
volumes made by the CSI driver (``managed-by=csi-driver``; found through the servers they
are attached to, or through our labels when the driver runs with
``HCLOUD_VOLUME_EXTRA_LABELS=kubelab=true,kubelab-cluster=<name>``).

The token is never logged or put into a message; API errors a user will hit become a
:class:`~kubelab.errors.SetupError` with the fix.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import ipaddress
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import requests
from hcloud import APIException, Client
from hcloud.actions import BoundAction
from hcloud.firewalls import BoundFirewall, FirewallRule
from hcloud.images import Image
from hcloud.load_balancers import BoundLoadBalancer
from hcloud.locations import Location
from hcloud.networks import BoundNetwork, NetworkSubnet
from hcloud.server_types import ServerType
from hcloud.servers import BoundServer
from hcloud.ssh_keys import BoundSSHKey

from kubelab import paths
from kubelab.checks.sampling import Sampler
from kubelab.checks.types import HttpStable, TrafficSplit
from kubelab.cluster.kube import Kube
from kubelab.errors import KubelabTimeout, SetupError, UsageError
from kubelab.paths import write_private
from kubelab.providers.base import ClusterFacts, ClusterInfo, Provider, RegistryAccess
from kubelab.providers.existing import real_cluster_sampler
from kubelab.retry import NO_RETRY, RetryPolicy, Verdict, call_with_retry
from kubelab.state import ClusterRecord, CreatedResource, StateStore

log = logging.getLogger(__name__)

PROVIDER = "hetzner"
DEFAULT_ENDPOINT = "https://api.hetzner.cloud/v1"
DEFAULT_NAME = "kubelab"
DEFAULT_SERVER_TYPE = "cx33"  # 4 vCPU, 8 GB: Istio + observability + Gitea fit on two
DEFAULT_LOCATION = "nbg1"
#: The hcloud cloud controller's Service annotation naming where a load balancer is made.
LB_LOCATION_ANNOTATION = "load-balancer.hetzner.cloud/location"
#: Hetzner's smallest volume: a claim for less (Gitea asks 1Gi, VictoriaMetrics 4Gi) gets it.
MIN_VOLUME_GB = 10
#: Gitea's NodePort on each node's loopback; k3s's registries.yaml names it.
REGISTRY = RegistryAccess()
DEFAULT_WORKERS = 1
IMAGE = "ubuntu-24.04"
NETWORK_RANGE = "10.0.0.0/16"
SUBNET_RANGE = "10.0.1.0/24"
LABEL_MANAGED = "kubelab"
LABEL_CLUSTER = "kubelab-cluster"
LABEL_ROLE = "kubelab-role"
# The labels the Hetzner cloud controller manager and CSI driver put on what they create.
CCM_SERVICE_LABEL = "hcloud-ccm/service-uid"
CSI_MANAGED_LABEL = "managed-by"
IP_SERVICES = ("https://api.ipify.org", "https://ifconfig.me/ip", "https://icanhazip.com")
TOKEN_HINT = (
    "Create one in the Hetzner Console (your project > Security > API tokens > Generate, "
    "permission Read & Write) and export HCLOUD_TOKEN=<token>."
)


def check_token(token: str) -> None:
    """A token is printable ASCII without spaces: anything else is a copy-and-paste slip
    (a line break, a quote, a non-Latin letter), which the API would only answer with
    refusals, or the HTTP library with an encoding error. Its value is never shown."""
    for position, char in enumerate(token, 1):
        if not (char.isascii() and char.isprintable()) or char.isspace():
            kind = "a space or line break" if char.isspace() else "a character that is not ASCII"
            raise SetupError(
                f"HCLOUD_TOKEN has {kind} at position {position} of {len(token)}",
                hint="Copy the token again from the Hetzner Console and export "
                "HCLOUD_TOKEN='<token>' (quotes included).",
            )


# hcloud 2.27 retries some failures itself (Client's "Retry mechanism": 5 retries, a 1-60 s
# exponential backoff with jitter): these API codes, HTTP 502/504 without a body, and
# request timeouts. It has no public option to change that, so kubelab leaves those to it
# and retries, with kubelab.retry's policy, only what hcloud gives up on at once.
HCLOUD_RETRIES = frozenset({"rate_limit_exceeded", "conflict", "bad_gateway", "timeout", 502, 504})
RETRY_CODES = frozenset({"locked", "server_error", "service_error", "unavailable", "maintenance"})
RETRY_STATUS = frozenset({429, 500, 503})
#: Attempts of one call at most (with a 1 s poll interval: about 2 minutes of backoff).
MAX_ATTEMPTS = 8
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")

T = TypeVar("T")


class Installer(Protocol):
    """Installs Kubernetes on ``servers`` over SSH and returns the admin kubeconfig text."""

    def __call__(self, servers: list[NodeInfo], ssh_key_path: Path) -> str: ...


@dataclass(frozen=True)
class NodeInfo:
    """One server as the k3s installer needs it."""

    name: str
    role: str  # "control-plane" or "worker"
    id: int
    public_ip: str
    private_ip: str | None


@dataclass(frozen=True)
class PlannedResource:
    """One line of what ``create`` will make, with its price (gross, VAT included)."""

    kind: str
    name: str
    detail: str = ""
    hourly: Decimal = Decimal(0)
    monthly: Decimal = Decimal(0)


@dataclass(frozen=True)
class Leftover:
    """Something still existing in the project that kubelab made (or its cluster made)."""

    kind: str
    id: int
    name: str
    monthly_cost: Decimal = Decimal(0)


@dataclass
class CreatedCluster:
    name: str
    kubeconfig: Path
    control_plane_ip: str
    nodes: list[NodeInfo] = field(default_factory=list)
    resources: list[CreatedResource] = field(default_factory=list)


# --------------------------------------------------------------------------- pricing


class Pricing:
    """The ``GET /pricing`` document: gross prices (VAT included) per type and location."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.currency = str(doc.get("currency", "EUR"))

    @staticmethod
    def _pick(prices: list[dict[str, Any]], location: str) -> tuple[Decimal, Decimal] | None:
        for entry in prices:
            if entry.get("location") == location:
                hourly = entry.get("price_hourly") or {}
                monthly = entry.get("price_monthly") or {}
                return Decimal(str(hourly.get("gross", "0"))), Decimal(
                    str(monthly.get("gross", "0"))
                )
        return None

    def _typed(self, section: str, key: str, value: str, location: str) -> tuple[Decimal, Decimal]:
        for item in self.doc.get(section, []):
            if item.get(key) == value:
                found = self._pick(item.get("prices", []), location)
                if found is not None:
                    return found
        return Decimal(0), Decimal(0)

    def has_server_type(self, server_type: str, location: str) -> bool:
        for item in self.doc.get("server_types", []):
            if item.get("name") == server_type:
                return self._pick(item.get("prices", []), location) is not None
        return False

    def server(self, server_type: str, location: str) -> tuple[Decimal, Decimal]:
        return self._typed("server_types", "name", server_type, location)

    def load_balancer(self, lb_type: str, location: str) -> tuple[Decimal, Decimal]:
        return self._typed("load_balancer_types", "name", lb_type, location)

    def primary_ipv4(self, location: str) -> tuple[Decimal, Decimal]:
        return self._typed("primary_ips", "type", "ipv4", location)

    def volume_gb_month(self) -> Decimal:
        price = (self.doc.get("volume") or {}).get("price_per_gb_month") or {}
        return Decimal(str(price.get("gross", "0")))


# --------------------------------------------------------------------------- helpers


def labels_for(name: str, **extra: str) -> dict[str, str]:
    return {LABEL_MANAGED: "true", LABEL_CLUSTER: name, **extra}


def selector_for(name: str | None) -> str:
    return f"{LABEL_MANAGED}=true,{LABEL_CLUSTER}={name}" if name else f"{LABEL_MANAGED}=true"


def validate_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise UsageError(
            f"cluster name {name!r} is not usable on Hetzner",
            hint="Use 1-32 lowercase letters, digits and dashes, starting and ending with a "
            "letter or digit (it becomes part of server host names and labels).",
        )
    return name


def cluster_dir(name: str) -> Path:
    path = paths.home_dir() / f"hetzner-{name}"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def cluster_ssh_key(directory: Path, comment: str) -> tuple[Path, str]:
    """The cluster's ed25519 key pair: the one in ``directory`` when an earlier attempt made
    it (servers adopted from that attempt hold its public key), else a new one, private key
    (OpenSSH format) 0600. Returns (private key path, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key_path = directory / "id_ed25519"
    if key_path.is_file():
        try:
            loaded = serialization.load_ssh_private_key(key_path.read_bytes(), password=None)
        except (ValueError, TypeError, OSError):
            loaded = None  # unreadable: replaced below (the Hetzner key follows it)
        if isinstance(loaded, Ed25519PrivateKey):
            kept = loaded.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
            return key_path, f"{kept.decode('ascii')} {comment}"
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode("ascii")
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode("ascii")
    )
    public = f"{public} {comment}"
    write_private(key_path, private)
    (directory / "id_ed25519.pub").write_text(public + "\n", encoding="utf-8")
    return key_path, public


def _key_body(line: str | None) -> str:
    """An OpenSSH public key line without its comment ("ssh-ed25519 AAAA...")."""
    return " ".join((line or "").split()[:2])


def detect_public_ip(timeout: float = 5.0) -> str:
    """This machine's public IPv4 address, asked of a what-is-my-IP service."""
    for url in IP_SERVICES:
        try:
            response = requests.get(url, timeout=timeout)
            response.raise_for_status()
            return str(ipaddress.ip_address(response.text.strip()))
        except (requests.RequestException, ValueError):
            continue
    raise SetupError(
        "cannot detect your public IP address (needed to open SSH and the Kubernetes API "
        "only to you)",
        hint="Pass it explicitly: kubelab cluster create --provider hetzner "
        "--allow-from 203.0.113.7",
    )


def as_cidr(ip: str) -> str:
    try:
        net = ipaddress.ip_network(ip, strict=False)
    except ValueError as exc:
        raise UsageError(f"{ip!r} is not an IP address or CIDR range") from exc
    return str(net)


def firewall_rules(allowed_cidr: str, api_from: Sequence[str] = ()) -> list[FirewallRule]:
    """The cluster firewall: SSH from the instructor only; the Kubernetes API from the
    instructor and ``api_from`` (a class's networks: students' kubeconfigs point at the
    control plane's public IP); HTTP(S) and ping from anywhere."""
    anywhere = ["0.0.0.0/0", "::/0"]
    tcp, inbound = FirewallRule.PROTOCOL_TCP, FirewallRule.DIRECTION_IN
    api_sources = list(dict.fromkeys([allowed_cidr, *api_from]))
    return [
        FirewallRule(inbound, tcp, [allowed_cidr], port="22", description="SSH (instructor)"),
        FirewallRule(inbound, tcp, api_sources, port="6443", description="Kubernetes API"),
        FirewallRule(inbound, tcp, anywhere, port="80", description="HTTP"),
        FirewallRule(inbound, tcp, anywhere, port="443", description="HTTPS"),
        FirewallRule(inbound, FirewallRule.PROTOCOL_ICMP, anywhere, description="ping"),
    ]


def point_kubeconfig_at(text: str, host: str) -> str:
    """The kubeconfig with every cluster's server URL pointed at ``host`` (port kept)."""
    import yaml

    doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("clusters"), list):
        raise SetupError("the k3s installer returned something that is not a kubeconfig")
    for entry in doc["clusters"]:
        cluster = entry.get("cluster") or {}
        server = str(cluster.get("server", ""))
        match = re.match(r"^(https?://)([^/:]+|\[[^\]]+\])(:\d+)?(.*)$", server)
        if match:
            scheme, _, port, rest = match.groups()
            cluster["server"] = f"{scheme}{host}{port or ':6443'}{rest}"
    return str(yaml.safe_dump(doc, sort_keys=False))


def explain(
    exc: APIException, doing: str, *, server_type: str = "", location: str = ""
) -> SetupError:
    """The :class:`SetupError` (message + fix) for an API error a user can hit."""
    code, message = exc.code, str(exc.message)
    if code in ("unauthorized", 401):
        return SetupError(
            "HCLOUD_TOKEN is not valid (the Hetzner API answered 401)", hint=TOKEN_HINT
        )
    if code in ("token_readonly", "forbidden", 403):
        # A token that reads but may not write is a Read-only token.
        return SetupError(
            f"the token is read-only: create a Read & Write token (the API refused "
            f"{doing}: {message})",
            hint=TOKEN_HINT,
        )
    if code == "resource_limit_exceeded":
        return SetupError(
            f"Hetzner quota exceeded while {doing}: {message}",
            hint="Remove what you no longer need (`kubelab cluster leftovers` lists what "
            "kubelab left), use fewer --nodes, or ask Hetzner for a higher limit "
            "(Console > your project > Limits).",
        )
    if code == "resource_unavailable" or (
        code == "invalid_input" and ("location" in message or "server_type" in message)
    ):
        what = f"server type {server_type} in {location}" if server_type else "this resource"
        return SetupError(
            f"{what} is not available right now ({message})",
            hint="Try another --location (fsn1, nbg1, hel1, ash, hil, sin) or another --size "
            "(e.g. cx33, cpx32, cax21).",
        )
    if code in ("rate_limit_exceeded", 429):
        return SetupError(
            f"the Hetzner API rate limit was hit while {doing} and retries did not help",
            hint="The limit is 3600 requests per hour per project: wait a few minutes and "
            "run the same command again (it resumes).",
        )
    return SetupError(f"Hetzner API error while {doing}: {message} ({code})")


def _classify(exc: BaseException) -> Verdict:
    """What kubelab retries of an hcloud call (what hcloud did not retry already)."""
    if isinstance(exc, APIException):
        code = exc.code
        if code in HCLOUD_RETRIES:
            return NO_RETRY  # hcloud retried it already, and gave up
        if code in RETRY_CODES or (isinstance(code, int) and code in RETRY_STATUS):
            return Verdict(True, None, str(code))
        return NO_RETRY
    if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.Timeout):
        return Verdict(True, None, type(exc).__name__)  # never connected: hcloud does not retry
    return NO_RETRY


def _not_found(exc: APIException) -> bool:
    return exc.code in ("not_found", 404)


# --------------------------------------------------------------------------- the cluster


class HetznerCluster:
    """Create, inspect and delete kubelab clusters in one Hetzner Cloud project.

    ``poll_interval`` (seconds between action polls), ``action_timeout``,
    ``retry_deadline`` (how long API calls are retried on 429/5xx), ``sleep``,
    ``public_ip`` and ``installer`` are injectable for tests.
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        endpoint: str | None = None,
        poll_interval: float = 1.0,
        action_timeout: float = 600.0,
        retry_deadline: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        public_ip: Callable[[], str] = detect_public_ip,
        installer: Installer | None = None,
        state: StateStore | None = None,
    ) -> None:
        token = token if token is not None else os.environ.get("HCLOUD_TOKEN", "")
        if not token.strip():
            raise SetupError("HCLOUD_TOKEN is not set", hint=TOKEN_HINT)
        check_token(token.strip())
        self.endpoint = endpoint or os.environ.get("HCLOUD_ENDPOINT") or DEFAULT_ENDPOINT
        self.poll_interval = poll_interval
        self.action_timeout = action_timeout
        self.retry_deadline = retry_deadline
        self.sleep = sleep
        self.public_ip = public_ip
        self._installer = installer
        self.state = state or StateStore()
        self._token = token.strip()  # for the cloud controller and CSI driver; never shown
        self.client = Client(
            token=token.strip(),
            api_endpoint=self.endpoint,
            application_name="kubelab",
            poll_interval=poll_interval,
            timeout=30.0,
        )
        self.poll_count = 0  # action polls made (tests count them)

    def _policy(self, deadline: float, attempts: int = MAX_ATTEMPTS) -> RetryPolicy:
        """kubelab.retry's policy for this client: backoff from the poll interval (no
        jitter: one client per run), the injected sleep."""
        return RetryPolicy(
            deadline=deadline,
            max_attempts=attempts,
            initial_delay=self.poll_interval,
            max_delay=30.0,
            jitter=0.0,
            sleep=self.sleep,
        )

    def __repr__(self) -> str:  # never show the token
        return f"HetznerCluster(endpoint={self.endpoint!r})"

    # ----------------------------------------------------------------- API plumbing

    def call(
        self, doing: str, fn: Callable[[], T], *, server_type: str = "", location: str = ""
    ) -> T:
        """Run one API call, retrying transient failures under ``retry_deadline``
        (kubelab.retry's policy, on top of nothing hcloud retries itself); map errors."""
        refused = 0

        def classify(exc: BaseException) -> Verdict:
            # A refused or unresolvable connection is tried three times, not for minutes.
            nonlocal refused
            verdict = _classify(exc)
            if verdict.retry and isinstance(exc, requests.ConnectionError):
                refused += 1
                if refused >= 3:
                    return NO_RETRY
            return verdict

        try:
            return call_with_retry(
                lambda _remaining: fn(), self._policy(self.retry_deadline), classify
            )
        except APIException as exc:
            raise explain(exc, doing, server_type=server_type, location=location) from exc
        except requests.RequestException as exc:
            raise SetupError(
                f"cannot reach the Hetzner API at {self.endpoint} while {doing} "
                f"({type(exc).__name__})",
                hint="Check your network; HCLOUD_ENDPOINT overrides the address.",
            ) from None

    def wait(self, action: BoundAction | None, doing: str) -> None:
        """Poll ``action`` until it finishes; raise with the API's reason when it fails."""
        if action is None:
            return
        deadline = time.monotonic() + self.action_timeout
        while action.status == "running":
            if time.monotonic() > deadline:
                raise KubelabTimeout(
                    f"Hetzner action {action.command} ({doing}) still running after "
                    f"{self.action_timeout:.0f} s",
                    hint="Run the command again; `kubelab cluster delete` removes a half-made "
                    "cluster.",
                )
            self.sleep(self.poll_interval)
            self.call(f"polling {doing}", action.reload)
            self.poll_count += 1
        if action.status == "error":
            error: dict[str, Any] = dict(action.error or {})
            raise SetupError(
                f"Hetzner action {action.command} failed while {doing}: "
                f"{error.get('message', 'no reason given')} ({error.get('code', 'error')})"
            )

    def wait_all(self, actions: Sequence[BoundAction], doing: str) -> None:
        for action in actions:
            self.wait(action, doing)

    def pricing(self) -> Pricing:
        doc = self.call("reading prices", lambda: self.client.request("GET", "/pricing"))
        return Pricing(doc.get("pricing", {}))

    # ----------------------------------------------------------------- plan

    def plan(
        self,
        name: str,
        nodes: int = DEFAULT_WORKERS,
        server_type: str = DEFAULT_SERVER_TYPE,
        location: str = DEFAULT_LOCATION,
        *,
        load_balancers: int = 1,
        volumes: tuple[str, ...] = ("Gitea data", "VictoriaMetrics data"),
    ) -> list[PlannedResource]:
        """What ``create`` makes (1 control plane + ``nodes`` workers) and what it costs.

        ``load_balancers``/``volumes`` are what the lesson's cluster creates itself (the
        ingress gateway's LoadBalancer; Gitea's and VictoriaMetrics' claims, each a volume
        of Hetzner's minimum size, :data:`MIN_VOLUME_GB`), billed as long as they exist.
        """
        validate_name(name)
        prices = self.pricing()
        if not prices.has_server_type(server_type, location):
            raise SetupError(
                f"server type {server_type} has no price in {location}: it does not exist "
                "or is not sold there",
                hint="Try another --location (fsn1, nbg1, hel1, ash, hil, sin) or --size.",
            )
        hourly, monthly = prices.server(server_type, location)
        ip_hourly, ip_monthly = prices.primary_ipv4(location)
        plan = [
            PlannedResource("ssh_key", f"kubelab-{name}", "ed25519"),
            PlannedResource("network", f"kubelab-{name}", f"{NETWORK_RANGE}"),
            PlannedResource("firewall", f"kubelab-{name}", "22/6443 from you, 80/443 open"),
        ]
        for node in self._node_names(name, nodes):
            plan.append(
                PlannedResource(
                    "server", node, f"{server_type} {location} {IMAGE}", hourly, monthly
                )
            )
            plan.append(PlannedResource("primary_ip", node, "IPv4", ip_hourly, ip_monthly))
        lb_hourly, lb_monthly = prices.load_balancer("lb11", location)
        for i in range(load_balancers):
            plan.append(
                PlannedResource(
                    "load_balancer",
                    f"(ingress gateway {i + 1})",
                    "lb11, made by the cloud controller",
                    lb_hourly,
                    lb_monthly,
                )
            )
        monthly_volume = prices.volume_gb_month() * MIN_VOLUME_GB
        for what in volumes:
            plan.append(
                PlannedResource(
                    "volume",
                    f"({what})",
                    f"{MIN_VOLUME_GB} GB, made by the CSI driver",
                    (monthly_volume / 730).quantize(Decimal("0.0001")),
                    monthly_volume,
                )
            )
        return plan

    @staticmethod
    def _node_names(name: str, workers: int) -> list[str]:
        return [f"kubelab-{name}-cp"] + [f"kubelab-{name}-w{i}" for i in range(1, workers + 1)]

    # ----------------------------------------------------------------- create

    def _record(self, name: str, resource: CreatedResource) -> None:
        with self.state.transaction() as state:
            record = state.clusters.get(name)
            if record is None:
                record = state.clusters[name] = ClusterRecord(name=name, provider=PROVIDER)
            record.resources = [r for r in record.resources if r.key() != resource.key()]
            record.resources.append(resource)
        log.debug("hetzner: recorded %s %s (id %s)", resource.kind, resource.name, resource.id)

    def create(
        self,
        name: str,
        nodes: int = DEFAULT_WORKERS,
        server_type: str = DEFAULT_SERVER_TYPE,
        location: str = DEFAULT_LOCATION,
        allowed_ip: str | None = None,
        *,
        keep_on_failure: bool = False,
    ) -> CreatedCluster:
        """Create the cluster; on failure delete what was made unless ``keep_on_failure``."""
        validate_name(name)
        if nodes < 0:
            raise UsageError("--nodes must be 0 or more (workers beside the control plane)")
        allowed = as_cidr(allowed_ip or self.public_ip())
        with self.state.transaction() as state:
            existing = state.clusters.get(name)
            if existing is not None and existing.provider != PROVIDER:
                raise UsageError(f"a {existing.provider} cluster named {name!r} already exists")
            if existing is None:
                existing = state.clusters[name] = ClusterRecord(name=name, provider=PROVIDER)
            existing.details.update(
                {
                    "location": location,
                    "server_type": server_type,
                    "workers": nodes,
                    "endpoint": self.endpoint,
                    "allowed_ip": allowed,
                }
            )
        try:
            return self._create(name, nodes, server_type, location, allowed)
        except BaseException as exc:
            if keep_on_failure:
                if isinstance(exc, SetupError | KubelabTimeout) and not exc.hint:
                    exc.hint = (
                        f"What was made is kept; `kubelab cluster delete --provider hetzner "
                        f"--name {name}` removes it."
                    )
                raise
            log.info("hetzner: create of %s failed, rolling back", name)
            try:
                self.delete(name)
            except Exception as cleanup:  # keep the original error, say what is left
                log.warning("hetzner: rollback of %s incomplete: %s", name, cleanup)
                if isinstance(exc, SetupError | KubelabTimeout):
                    exc.details.append(
                        f"rollback incomplete ({cleanup}); run `kubelab cluster delete "
                        f"--provider hetzner --name {name}`"
                    )
            raise

    def _create(
        self, name: str, workers: int, server_type: str, location: str, allowed: str
    ) -> CreatedCluster:
        client = self.client
        labels = labels_for(name)
        directory = cluster_dir(name)

        loc = self.call("reading the location", lambda: client.locations.get_by_name(location))
        if loc is None:
            raise UsageError(
                f"Hetzner has no location {location!r}",
                hint="Use fsn1, nbg1, hel1 (EU), ash, hil (US) or sin (Singapore).",
            )
        stype = self.call(
            "reading the server type", lambda: client.server_types.get_by_name(server_type)
        )
        if stype is None:
            raise UsageError(
                f"Hetzner has no server type {server_type!r}",
                hint="See https://www.hetzner.com/cloud for the types (e.g. cx33, cpx32, cax21).",
            )
        for where in stype.locations or []:
            if where.location.name == location and where.available is False:
                raise SetupError(
                    f"server type {server_type} is not available in {location} right now",
                    hint="Try another --location (fsn1, nbg1, hel1) or --size.",
                )

        key_path, public_key = cluster_ssh_key(directory, f"kubelab-{name}")
        key = self._adopt_or_create(
            name,
            "ssh_key",
            f"kubelab-{name}",
            lambda: client.ssh_keys.create(
                name=f"kubelab-{name}", public_key=public_key, labels=labels
            ),
            lambda: client.ssh_keys.get_by_name(f"kubelab-{name}"),
            # Kept while it is the local key; one of a lost local key is made again.
            replace=lambda found: _key_body(found.public_key) != _key_body(public_key),
        )
        assert isinstance(key, BoundSSHKey)

        network = self._adopt_or_create(
            name,
            "network",
            f"kubelab-{name}",
            lambda: client.networks.create(
                name=f"kubelab-{name}",
                ip_range=NETWORK_RANGE,
                subnets=[
                    NetworkSubnet(
                        type=NetworkSubnet.TYPE_CLOUD,
                        ip_range=SUBNET_RANGE,
                        network_zone=loc.network_zone,
                    )
                ],
                labels=labels,
            ),
            lambda: client.networks.get_by_name(f"kubelab-{name}"),
        )
        assert isinstance(network, BoundNetwork)

        def make_firewall() -> BoundFirewall:
            response = client.firewalls.create(
                name=f"kubelab-{name}",
                rules=firewall_rules(allowed),
                labels=labels,  # type: ignore[arg-type]  # hcloud 2.27 types labels as str
            )
            self.wait_all(response.actions or [], "creating the firewall")
            return response.firewall

        firewall = self._adopt_or_create(
            name,
            "firewall",
            f"kubelab-{name}",
            make_firewall,
            lambda: client.firewalls.get_by_name(f"kubelab-{name}"),
        )
        assert isinstance(firewall, BoundFirewall)

        pending: list[tuple[BoundServer, list[BoundAction]]] = []
        for node in self._node_names(name, workers):
            role = "control-plane" if node.endswith("-cp") else "worker"
            existing = self.call(
                "looking for servers", functools.partial(client.servers.get_by_name, node)
            )
            if existing is not None and (existing.labels or {}).get(LABEL_CLUSTER) == name:
                self._record_bound(name, "server", existing, role=role)
                pending.append((existing, []))
                continue
            created = self._create_or_adopt(
                name,
                f"server {node}",
                functools.partial(
                    client.servers.create,
                    name=node,
                    server_type=ServerType(name=server_type),
                    image=Image(name=IMAGE),
                    location=Location(name=location),
                    ssh_keys=[key],
                    networks=[network],
                    firewalls=[firewall],
                    labels={**labels, LABEL_ROLE: role},
                ),
                functools.partial(client.servers.get_by_name, node),
                server_type=server_type,
                location=location,
            )
            if isinstance(created, BoundServer):  # adopted: its create action is long done
                self._record_bound(name, "server", created, role=role)
                pending.append((created, []))
                continue
            self._record_bound(name, "server", created.server, role=role)
            pending.append((created.server, [created.action, *created.next_actions]))
        for server, actions in pending:
            self.wait_all(actions, f"starting server {server.name}")

        node_infos = [self._node_info(server) for server, _ in pending]
        control_plane = node_infos[0]
        installer = self._installer or _default_installer(self._token, network.id, location, name)
        log.info("hetzner: installing k3s on %d servers", len(node_infos))
        kubeconfig_text = installer(node_infos, key_path)
        kubeconfig = directory / "kubeconfig"
        write_private(kubeconfig, point_kubeconfig_at(kubeconfig_text, control_plane.public_ip))
        with self.state.transaction() as state:
            record = state.clusters[name]
            record.kubeconfig = str(kubeconfig)
            record.details["control_plane_ip"] = control_plane.public_ip
            record.details["network_id"] = network.id
            resources = list(record.resources)
        return CreatedCluster(name, kubeconfig, control_plane.public_ip, node_infos, resources)

    def _record_bound(self, cluster: str, kind: str, obj: Any, **details: Any) -> None:
        self._record(
            cluster,
            CreatedResource(kind=kind, name=str(obj.name), id=str(obj.id), details=details),
        )

    def _adopt_or_create(
        self,
        cluster: str,
        kind: str,
        res_name: str,
        make: Callable[[], Any],
        find: Callable[[], Any],
        *,
        replace: Callable[[Any], bool] | None = None,
    ) -> Any:
        """Create a named resource; one left by an earlier run of ours is reused (or, where
        ``replace(found)`` says so, deleted and made again: an SSH key must match the
        local key)."""
        found = self.call(f"looking for {kind} {res_name}", find)
        if found is not None:
            if (found.labels or {}).get(LABEL_CLUSTER) != cluster:
                raise SetupError(
                    f"a {kind} named {res_name} already exists in the project and kubelab did "
                    "not make it",
                    hint="Pick another --name, or rename/delete that resource.",
                )
            if replace is None or not replace(found):
                self._record_bound(cluster, kind, found)
                return found
            self.call(f"replacing {kind} {res_name}", found.delete)
        obj = self._create_or_adopt(cluster, f"{kind} {res_name}", make, find)
        self._record_bound(cluster, kind, obj)
        return obj

    def _create_or_adopt(
        self,
        cluster: str,
        what: str,
        make: Callable[[], T],
        find: Callable[[], Any],
        **explain_args: str,
    ) -> T | Any:
        """Run a create call. When an answer was lost (5xx or a dropped connection after the
        API made the resource), the retry hits ``uniqueness_error``: adopt the resource if
        it carries our cluster label instead of failing on our own creation."""
        try:
            return self.call(f"creating {what}", make, **explain_args)
        except SetupError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, APIException) and cause.code == "uniqueness_error"):
                raise
            found = self.call(f"looking for {what}", find)
            if found is None or (found.labels or {}).get(LABEL_CLUSTER) != cluster:
                raise
            log.info("hetzner: %s was made by a retried call whose answer was lost; adopting", what)
            return found

    def _node_info(self, server: BoundServer) -> NodeInfo:
        fresh = self.call(
            f"reading server {server.name}",
            functools.partial(self.client.servers.get_by_id, int(server.id or 0)),
        )
        public = fresh.public_net.ipv4.ip if fresh.public_net and fresh.public_net.ipv4 else None
        if not public:
            raise SetupError(f"server {fresh.name} has no public IPv4 address")
        private = fresh.private_net[0].ip if fresh.private_net else None
        role = (fresh.labels or {}).get(LABEL_ROLE, "worker")
        return NodeInfo(str(fresh.name), role, int(fresh.id or 0), str(public), private)

    # ----------------------------------------------------------------- find / delete

    def _ours(self, name: str | None) -> dict[str, list[Any]]:
        """Everything that belongs to cluster ``name`` (every kubelab cluster if None)."""
        client = self.client
        selector = selector_for(name)
        found: dict[str, list[Any]] = {}
        servers = self.call(
            "listing servers", lambda: client.servers.get_all(label_selector=selector)
        )
        recorded = self._recorded_ids(name)
        known = {s.id for s in servers}
        for server_id in recorded.get("server", []):
            if server_id not in known:
                with contextlib.suppress(SetupError):
                    servers.append(
                        self.call(
                            "reading a recorded server",
                            functools.partial(client.servers.get_by_id, server_id),
                        )
                    )
        found["server"] = servers
        server_ids = {s.id for s in servers}
        networks = self.call(
            "listing networks", lambda: client.networks.get_all(label_selector=selector)
        )
        found["network"] = networks
        network_ids = {n.id for n in networks} | set(recorded.get("network", []))
        found["load_balancer"] = [
            lb
            for lb in self.call("listing load balancers", client.load_balancers.get_all)
            if self._lb_is_ours(lb, name, server_ids, network_ids)
        ]
        found["volume"] = [
            v
            for v in self.call("listing volumes", client.volumes.get_all)
            if (name is None and (v.labels or {}).get(LABEL_MANAGED) == "true")
            or (name is not None and (v.labels or {}).get(LABEL_CLUSTER) == name)
            or (v.server is not None and v.server.id in server_ids)
        ]
        found["firewall"] = self.call(
            "listing firewalls", lambda: client.firewalls.get_all(label_selector=selector)
        )
        found["ssh_key"] = self.call(
            "listing SSH keys", lambda: client.ssh_keys.get_all(label_selector=selector)
        )
        return found

    def _recorded_ids(self, name: str | None) -> dict[str, list[int]]:
        ids: dict[str, list[int]] = {}
        state = self.state.load()
        for cluster_name, record in state.clusters.items():
            if record.provider != PROVIDER or (name is not None and cluster_name != name):
                continue
            for resource in record.resources:
                if resource.id and resource.id.isdigit():
                    ids.setdefault(resource.kind, []).append(int(resource.id))
        return ids

    @staticmethod
    def _lb_is_ours(
        lb: BoundLoadBalancer, name: str | None, server_ids: set[int | None], network_ids: set[Any]
    ) -> bool:
        labels = lb.labels or {}
        if labels.get(LABEL_MANAGED) == "true" and name in (None, labels.get(LABEL_CLUSTER)):
            return True
        for target in lb.targets or []:
            if target.server is not None and target.server.id in server_ids:
                return True
            selector = target.label_selector.selector if target.label_selector else ""
            if name and selector and f"{LABEL_CLUSTER}={name}" in (selector or ""):
                return True
        return any(
            net.network is not None and net.network.id in network_ids
            for net in lb.private_net or []
        )

    def allow_api_from(self, name: str, cidrs: Sequence[str]) -> list[str]:
        """Open the cluster's Kubernetes API (6443) to ``cidrs`` besides the instructor, for
        a class whose kubeconfigs point at the control plane's public IP; recorded, so a
        later call adds to them. Returns the API's sources now."""
        validate_name(name)
        wanted = [as_cidr(c) for c in cidrs]
        record = self.state.load().clusters.get(name)
        if record is None or record.provider != PROVIDER:
            raise UsageError(
                f"kubelab made no Hetzner cluster named {name!r}",
                hint="`kubelab cluster status` lists the clusters kubelab made.",
            )
        instructor = str(record.details.get("allowed_ip") or "")
        sources = list(dict.fromkeys([*(record.details.get("api_from") or []), *wanted]))
        client = self.client
        firewall = self.call(
            "reading the firewall",
            functools.partial(client.firewalls.get_by_name, f"kubelab-{name}"),
        )
        if firewall is None or (firewall.labels or {}).get(LABEL_CLUSTER) != name:
            raise SetupError(
                f"cluster {name} has no firewall kubelab-{name}",
                hint="Was it deleted by hand? `kubelab cluster leftovers` shows what exists.",
            )
        actions = self.call(
            "opening the Kubernetes API to the class",
            functools.partial(firewall.set_rules, firewall_rules(instructor, sources)),
        )
        self.wait_all(actions or [], "updating the firewall")
        with self.state.transaction() as state:
            state.clusters[name].details["api_from"] = sources
        return [instructor, *sources]

    def delete(self, name: str, *, force: bool = False) -> list[str]:
        """Remove everything of cluster ``name``; idempotent. Returns a line per deletion.

        ``force`` changes nothing here: the load balancers and volumes are found and deleted
        through the Hetzner API by their labels, not from inside the cluster."""
        validate_name(name)
        client = self.client
        done: list[str] = []
        found = self._ours(name)

        def gone(kind: str, obj: Any) -> None:
            done.append(f"deleted {kind} {obj.name} (id {obj.id})")
            log.info("hetzner: deleted %s %s (id %s)", kind, obj.name, obj.id)

        for lb in found["load_balancer"]:
            if self._delete_one(
                f"deleting load balancer {lb.name}",
                functools.partial(client.request, "DELETE", f"/load_balancers/{lb.id}"),
            ):
                gone("load balancer", lb)
        for volume in found["volume"]:
            if volume.server is not None:
                with contextlib.suppress(SetupError):  # already detached: delete says why
                    self._delete_one(f"detaching volume {volume.name}", volume.detach)
            if self._delete_one(f"deleting volume {volume.name}", volume.delete):
                gone("volume", volume)
        for server in found["server"]:
            if self._delete_one(f"deleting server {server.name}", server.delete):
                gone("server", server)
        for kind, what in (
            ("firewall", "firewall"),
            ("network", "network"),
            ("ssh_key", "SSH key"),
        ):
            for obj in found[kind]:
                if self._delete_one(f"deleting {what} {obj.name}", obj.delete):
                    gone(what, obj)

        with self.state.transaction() as state:
            record = state.clusters.get(name)
            if record is not None and record.provider == PROVIDER:
                del state.clusters[name]
        local = paths.home_dir() / f"hetzner-{name}"
        if local.exists():
            shutil.rmtree(local, ignore_errors=True)
        return done

    def _delete_one(self, doing: str, fn: Callable[[], Any]) -> bool:
        """Run a delete; wait for its action; False when it was already gone.

        ``resource_in_use`` (a firewall or network still attached to a server that is
        going away) is retried under the action timeout.
        """

        def classify(exc: BaseException) -> Verdict:
            if isinstance(exc, APIException) and exc.code == "resource_in_use":
                return Verdict(True, None, "resource_in_use")
            return _classify(exc)

        try:
            # Up to 20 attempts: a network stays in use until its servers are gone.
            result = call_with_retry(
                lambda _remaining: fn(), self._policy(self.action_timeout, 20), classify
            )
        except APIException as exc:
            if _not_found(exc):
                return False
            raise explain(exc, doing) from exc
        action = _action_of(result, self.client)
        self.wait(action, doing)
        return True

    # ----------------------------------------------------------------- leftovers

    def leftovers(self, name: str | None = None) -> list[Leftover]:
        """Everything still existing that kubelab (or its clusters) made, with monthly cost."""
        found = self._ours(name)
        prices = self.pricing()
        result: list[Leftover] = []
        for server in found["server"]:
            loc = server.location.name if server.location else ""
            stype = server.server_type.name if server.server_type else ""
            cost = prices.server(str(stype), str(loc))[1]
            if server.public_net and server.public_net.ipv4:
                cost += prices.primary_ipv4(str(loc))[1]
            result.append(Leftover("server", int(server.id or 0), str(server.name), cost))
        for lb in found["load_balancer"]:
            loc = lb.location.name if lb.location else ""
            lb_type = lb.load_balancer_type.name if lb.load_balancer_type else ""
            cost = prices.load_balancer(str(lb_type), str(loc))[1]
            result.append(Leftover("load_balancer", int(lb.id or 0), str(lb.name), cost))
        for volume in found["volume"]:
            cost = prices.volume_gb_month() * int(volume.size or 0)
            result.append(Leftover("volume", int(volume.id or 0), str(volume.name), cost))
        for kind in ("firewall", "network", "ssh_key"):
            for obj in found[kind]:
                result.append(Leftover(kind, int(obj.id or 0), str(obj.name)))
        return result


def _action_of(result: Any, client: Client) -> BoundAction | None:
    """The action a delete call returned, in whichever shape hcloud gives it."""
    if isinstance(result, BoundAction):
        return result
    if isinstance(result, dict) and isinstance(result.get("action"), dict):
        return BoundAction(client.actions, result["action"])
    action = getattr(result, "action", None)
    return action if isinstance(action, BoundAction) else None


def _default_installer(
    token: str, network_id: int | None, location: str, cluster: str
) -> Installer:
    """``kubelab.providers.k3s.install_k3s`` (Ansible through ansible-runner, imported only
    when needed) with the token, network and location the cloud controller and CSI driver
    need, and k3s's registries.yaml naming the registry address (plain HTTP to Gitea's
    NodePort on the node's loopback)."""
    module = importlib.import_module("kubelab.providers.k3s")
    return cast(
        Installer,
        functools.partial(
            module.install_k3s,
            hcloud_token=token,
            network_id=network_id,
            hcloud_location=location,
            cluster_name=cluster,
            registry_host=REGISTRY.host,
            registry_endpoint=f"http://{REGISTRY.host}",
        ),
    )


# --------------------------------------------------------------------------- provider


class HetznerProvider(Provider):
    """kubelab's Provider for a k3s cluster it creates on Hetzner Cloud."""

    name = PROVIDER
    owns_cluster = True

    def __init__(
        self,
        cluster_name: str = DEFAULT_NAME,
        workers: int = DEFAULT_WORKERS,
        server_type: str = DEFAULT_SERVER_TYPE,
        location: str = DEFAULT_LOCATION,
        allowed_ip: str | None = None,
        cluster: HetznerCluster | None = None,
        state: StateStore | None = None,
    ) -> None:
        self.cluster_name = validate_name(cluster_name)
        self.workers = workers
        self.server_type = server_type
        self.location = location
        self.allowed_ip = allowed_ip
        self._cluster = cluster
        self.state = state or (cluster.state if cluster else StateStore())

    @property
    def cluster(self) -> HetznerCluster:
        if self._cluster is None:
            self._cluster = HetznerCluster(state=self.state)
        return self._cluster

    def preflight(self) -> None:
        from kubelab.tools import require_tool

        require_tool("helm")
        require_tool("kubectl")
        cluster = self.cluster
        cluster.call("checking the token", lambda: cluster.client.locations.get_all())

    def _existing(self) -> ClusterRecord | None:
        record = self.state.load().clusters.get(self.cluster_name)
        if record is None or record.provider != PROVIDER or not record.kubeconfig:
            return None
        return record if Path(record.kubeconfig).is_file() else None

    def ensure_cluster(self, namespace: str) -> ClusterInfo:
        record = self._existing()
        if record is not None and record.kubeconfig:
            details = {"cluster": self.cluster_name, **record.details}
            return ClusterInfo(Path(record.kubeconfig), details)
        created = self.cluster.create(
            self.cluster_name, self.workers, self.server_type, self.location, self.allowed_ip
        )
        return ClusterInfo(
            created.kubeconfig,
            {"cluster": created.name, "control_plane_ip": created.control_plane_ip},
        )

    def facts(self) -> ClusterFacts:
        # The hcloud cloud controller makes no load balancer without a location (or network
        # zone): the gateway Service names the cluster's own (the CCM also gets it as
        # HCLOUD_LOAD_BALANCERS_LOCATION). k3s's registries.yaml names the registry address.
        record = self.state.load().clusters.get(self.cluster_name)
        location = str((record.details if record else {}).get("location") or self.location)
        return ClusterFacts(
            registry=REGISTRY,
            gateway_annotations={LB_LOCATION_ANNOTATION: location},
            mesh_platform="k3s",  # k3s keeps its CNI files under /var/lib/rancher/k3s
        )

    def teardown(self, details: dict[str, Any], everything: bool = False) -> list[str]:
        if not everything:
            return []
        return self.cluster.delete(str(details.get("cluster") or self.cluster_name))

    def sampler(
        self, kube: Kube, details: dict[str, Any], spec: TrafficSplit | HttpStable
    ) -> Sampler:
        return real_cluster_sampler(kube, details, spec)


def iter_plan_lines(plan: list[PlannedResource], currency: str = "EUR") -> Iterator[str]:
    """Human lines for a plan, with the totals (what the CLI prints before confirming)."""
    for item in plan:
        yield (
            f"{item.kind:<14} {item.name:<28} {item.detail:<40} "
            f"{item.hourly:>8.4f}/h {item.monthly:>8.2f}/month"
        )
    hourly = sum((p.hourly for p in plan), Decimal(0))
    monthly = sum((p.monthly for p in plan), Decimal(0))
    yield f"total {hourly:.4f} {currency}/hour, at most {monthly:.2f} {currency}/month (VAT incl.)"
