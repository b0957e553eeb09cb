"""What a GKE cluster made by kubelab costs: a documented price table, not a pricing API.

Google publishes no unauthenticated price API that fits here (the Cloud Billing Catalog API
needs an API key and returns per-SKU vCPU/memory prices), so kubelab carries a small table
and says that its numbers are **estimates**:

* GKE cluster management fee: USD 0.10 per cluster per hour, for every Standard cluster
  (https://cloud.google.com/kubernetes-engine/pricing, "Cluster management fee and free
  tier"). The GKE free tier (USD 74.40 of monthly credit per billing account) covers one
  zonal cluster; the estimate does **not** subtract it, so it is an upper bound. Both
  figures were read on that page (stored copy) in 2026-11.
* E2 on-demand VM prices per hour (Linux, no sustained-use or committed-use discount;
  https://cloud.google.com/compute/vm-instance-pricing): the E2 vCPU and memory rates x the
  machine's 1, 2 or 4 vCPU and 4, 8 or 16 GB. us-central1 (USD 0.021811 per vCPU-hour,
  0.002923 per GB-hour) agrees with figures two independent public projects took from the
  Cloud Billing catalog in 2026-09 and 2026-10. The us-east1 and europe-west1 rows are 2025
  list prices **not re-checked** since; the plan says so when it uses them.
* Node boot disks: GKE's default is 100 GB; kubelab asks for 50 GB ``pd-balanced`` per node
  (https://cloud.google.com/compute/disks-image-pricing), priced per GB-month below
  (us-central1 USD 0.10, checked with the same sources).

A region missing from the table is priced as us-central1 (among the cheapest), and the plan
says so. Months are 730 hours, as Google's calculator uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from kubelab.errors import UsageError

PRICES_AS_OF = "2026-10 (list prices; estimates)"
# Regions whose rows were checked against 2026 sources (see the module docstring).
CHECKED_REGIONS = frozenset({"us-central1"})
CURRENCY = "USD"
HOURS_PER_MONTH = Decimal(730)
MANAGEMENT_FEE_HOURLY = Decimal("0.10")
FREE_TIER_MONTHLY_CREDIT = Decimal("74.40")
DISK_TYPE = "pd-balanced"
DISK_SIZE_GB = 50
FALLBACK_REGION = "us-central1"
# GKE spreads a regional cluster's node pool over three zones by default: N nodes per zone.
REGIONAL_ZONES = 3

# region -> machine type -> USD per hour (on-demand, Linux).
MACHINE_HOURLY: dict[str, dict[str, Decimal]] = {
    "us-central1": {
        "e2-medium": Decimal("0.033503"),
        "e2-standard-2": Decimal("0.067006"),
        "e2-standard-4": Decimal("0.134012"),
    },
    "us-east1": {
        "e2-medium": Decimal("0.033503"),
        "e2-standard-2": Decimal("0.067006"),
        "e2-standard-4": Decimal("0.134012"),
    },
    "europe-west1": {
        "e2-medium": Decimal("0.036812"),
        "e2-standard-2": Decimal("0.073624"),
        "e2-standard-4": Decimal("0.147248"),
    },
}
# region -> USD per GB-month of pd-balanced.
DISK_GB_MONTHLY: dict[str, Decimal] = {
    "us-central1": Decimal("0.100"),
    "us-east1": Decimal("0.100"),
    "europe-west1": Decimal("0.110"),
}
MACHINE_TYPES = tuple(MACHINE_HOURLY[FALLBACK_REGION])


def region_of(location: str) -> str:
    """``europe-west1-b`` -> ``europe-west1``; a region is returned unchanged."""
    parts = location.split("-")
    return "-".join(parts[:2]) if len(parts) >= 3 else location


def is_zone(location: str) -> bool:
    return len(location.split("-")) >= 3


def _cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@dataclass
class PlannedResource:
    """One billed thing: what it is, how many, and its estimated hourly price in total."""

    kind: str
    name: str
    count: int
    hourly: Decimal
    note: str = ""

    @property
    def monthly(self) -> Decimal:
        return self.hourly * HOURS_PER_MONTH


@dataclass
class Plan:
    """What ``create`` will make, with estimated cost; ``lines()`` is what the CLI prints."""

    cluster: str
    location: str
    resources: list[PlannedResource]
    notes: list[str] = field(default_factory=list)

    @property
    def hourly(self) -> Decimal:
        return sum((r.hourly for r in self.resources), Decimal(0))

    @property
    def monthly(self) -> Decimal:
        return self.hourly * HOURS_PER_MONTH

    def lines(self) -> list[str]:
        out = [f"GKE cluster {self.cluster} in {self.location} will create:"]
        for r in self.resources:
            note = f"  ({r.note})" if r.note else ""
            out.append(
                f"  {r.count} x {r.kind} {r.name}: {CURRENCY} {_cents(r.hourly)}/h, "
                f"{_cents(r.monthly)}/month{note}"
            )
        out.append(
            f"  total: about {CURRENCY} {self.hourly.quantize(Decimal('0.001'))}/h, "
            f"{_cents(self.monthly)}/month (estimate, prices of {PRICES_AS_OF})"
        )
        out.extend(f"  note: {n}" for n in self.notes)
        return out


def plan(name: str, nodes: int, machine_type: str, location: str) -> Plan:
    """The resources ``GkeCluster.create`` makes and their estimated hourly/monthly cost."""
    if nodes < 1:
        raise UsageError(f"--nodes must be at least 1 (got {nodes})")
    region = region_of(location)
    notes: list[str] = []
    table_region = region
    if region not in MACHINE_HOURLY:
        table_region = FALLBACK_REGION
        notes.append(
            f"{region} is not in kubelab's price table: priced as {FALLBACK_REGION}; the real "
            "price there may be higher (https://cloud.google.com/compute/vm-instance-pricing)."
        )
    elif region not in CHECKED_REGIONS:
        notes.append(
            f"{region}'s prices are 2025 list prices kubelab has not re-checked; see "
            "https://cloud.google.com/compute/vm-instance-pricing for today's."
        )
    prices = MACHINE_HOURLY[table_region]
    if machine_type not in prices:
        raise UsageError(
            f"kubelab has no price for machine type {machine_type!r}",
            hint=f"Use one of: {', '.join(MACHINE_TYPES)}.",
        )
    total_nodes = nodes if is_zone(location) else nodes * REGIONAL_ZONES
    if not is_zone(location):
        notes.append(
            f"{location} is a region: GKE puts {nodes} node(s) in each of {REGIONAL_ZONES} "
            f"zones ({total_nodes} in all); give a zone (e.g. {location}-b) for fewer."
        )
    disk_hourly = DISK_GB_MONTHLY[table_region] * DISK_SIZE_GB / HOURS_PER_MONTH
    notes.append(
        f"GKE's free tier ({CURRENCY} {FREE_TIER_MONTHLY_CREDIT}/month per billing account) "
        "covers the management fee of one zonal cluster; it is not subtracted here."
    )
    notes.append(
        "Load balancers and volumes the lessons create inside the cluster cost extra "
        "(about USD 0.025/h per forwarding rule) until `kubelab down` removes them."
    )
    return Plan(
        cluster=name,
        location=location,
        resources=[
            PlannedResource("gke-cluster", name, 1, MANAGEMENT_FEE_HOURLY, "management fee"),
            PlannedResource(
                "node",
                machine_type,
                total_nodes,
                prices[machine_type] * total_nodes,
                "on-demand VM",
            ),
            PlannedResource(
                "disk",
                f"{DISK_SIZE_GB} GB {DISK_TYPE}",
                total_nodes,
                disk_hourly * total_nodes,
                "node boot disk",
            ),
        ],
        notes=notes,
    )
