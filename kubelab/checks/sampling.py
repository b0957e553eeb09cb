"""Sending requests through the mesh and telling which version answered each one.

Two transports produce the same :class:`Sample` list:

* :class:`HttpSampler` sends requests itself (the sandbox's Envoy, or a gateway URL),
  concurrently with aiohttp;
* :class:`ExecSampler` runs curl in the lesson's in-mesh tester pod through the API's
  exec, with ``xargs -P`` for concurrency — what a student's own ``kubectl exec`` does.

An answer counts for a version only when that version of app_backend produced it: a 2xx
whose body is the app's own ``"v1 - Request 17"``. What the mesh says (the sandbox's Envoy
adds ``x-kubelab-subset`` to every answer, its own 503 and 504 included) is kept as the
subset the request was *routed to*, never as the version that answered: a 503 "no healthy
upstream" from subset v2 is a failure, not a v2 answer.

Every request has a timeout. A request that hangs is counted for a version only when that
version's own pods, asked directly, hang too (:func:`attribute_hung`); a request routed to a
subset whose pods answer directly is a routing fault the check names. That is how students
see v1's bug in the numbers, and why a subset selecting the wrong pods cannot pass.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from kubelab.cluster.kube import Kube
from kubelab.i18n import _

_BODY_VERSION = re.compile(r"^\s*([A-Za-z0-9_.-]+) - Request \d+")
SUBSET_HEADER = "x-kubelab-subset"
TIMEOUT_HEADER = "x-envoy-upstream-rq-timeout-ms"
# The checks' own requests ask not to be traced (B3 for Zipkin, W3C for OpenTelemetry,
# as Envoy honours an incoming sampling decision): the traces a student looks for in Jaeger
# (and that the jaeger-traces check counts) are then the ones the student's commands made.
NOT_SAMPLED = {
    "x-b3-sampled": "0",
    "traceparent": "00-6b7562656c6162636865636b73000001-6b7562656c616201-00",
}


# curl's exit code when its --max-time ran out (every other failure has its own code)
CURL_TIMED_OUT = 28


@dataclass(frozen=True)
class Sample:
    """One request: which app version answered (or hung), and how."""

    version: str | None  # the app version that produced the answer; None when none did
    status: int  # HTTP status; 0 when no HTTP answer came back
    hung: bool  # no answer in time (client timeout or the mesh's 504 upstream timeout)
    subset: str | None = None  # the subset the mesh says it routed to (sandbox only)
    detail: str = ""  # what came back instead of an app answer ("no healthy upstream")

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True)
class Destination:
    service: str
    namespace: str
    port: int = 80
    path: str = "/"

    @property
    def host(self) -> str:
        return f"{self.service}.{self.namespace}"


def _detail(body: str) -> str:
    line = body.strip().splitlines()[0] if body.strip() else ""
    return line if len(line) <= 80 else line[:77] + "..."


def app_version(body: str) -> str | None:
    """The app_backend version that wrote ``body``: ``v1 - Request 17`` from ``/``, or the
    JSON of ``/version`` (its ``version`` beside ``bug_after`` and ``requests``)."""
    match = _BODY_VERSION.match(body)
    if match:
        return match.group(1)
    if body.lstrip().startswith("{"):
        try:
            data = json.loads(body)
        except ValueError:
            return None
        if isinstance(data, dict) and {"version", "bug_after", "requests"} <= set(data):
            return str(data["version"])
    return None


def classify(body: str, status: int, subset: str | None, timed_out: bool) -> Sample:
    """A sample from what came back: the version is the app's own answer, nothing else."""
    version = app_version(body) if 200 <= status < 300 else None
    hung = timed_out or (status == 504 and "upstream request timeout" in body)
    if version:
        detail = ""
    elif timed_out:
        detail = _("no answer in time")
    else:
        detail = _detail(body) or (_("an empty answer") if status else _("no answer"))
    return Sample(version, 0 if timed_out else status, hung, subset or None, detail)


def unreachable(reason: str) -> Sample:
    """A request that got no HTTP answer at all (refused, reset, DNS)."""
    return Sample(None, 0, False, None, reason)


class Sampler(Protocol):
    def sample(
        self, dest: Destination, count: int, timeout: float, concurrency: int
    ) -> list[Sample]: ...

    def hanging_versions(
        self, dest: Destination, versions: Iterable[str], timeout: float
    ) -> set[str]: ...


def version_pods(kube: Kube, dest: Destination, version: str) -> tuple[list[Any], int | str]:
    """The pods of ``version`` behind ``dest``'s Service, and the port their app serves."""
    service = kube.get("v1", "Service", dest.service, dest.namespace) or {}
    spec = service.get("spec") or {}
    selector = dict(spec.get("selector") or {})
    ports = spec.get("ports") or [{}]
    target = ports[0].get("targetPort") or ports[0].get("port") or 80
    labels = ",".join(f"{k}={v}" for k, v in {**selector, "version": version}.items())
    return kube.list("v1", "Pod", dest.namespace, labels), target


# (destination, version) -> URL of one pod of that version, bypassing the routing
PodUrl = Callable[[Destination, str], "str | None"]


class HttpSampler:
    """Requests sent from here to an HTTP entry point of the mesh (sandbox Envoy, gateway)."""

    def __init__(self, base_url: str, pod_url: PodUrl | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        # For attribute_hung: the sandbox knows where each pod's app listens.
        self.pod_url = pod_url

    def sample(
        self, dest: Destination, count: int, timeout: float, concurrency: int
    ) -> list[Sample]:
        return asyncio.run(self._sample(dest, count, timeout, concurrency))

    async def _sample(
        self, dest: Destination, count: int, timeout: float, concurrency: int
    ) -> list[Sample]:
        import aiohttp

        headers = {"Host": dest.host, TIMEOUT_HEADER: str(int(timeout * 1000)), **NOT_SAMPLED}
        limit = asyncio.Semaphore(concurrency)
        # The client waits a little longer than the mesh, so the mesh's 504 (which names
        # the subset) arrives before the client gives up.
        client_timeout = aiohttp.ClientTimeout(total=timeout + 1.0)
        connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
        url = f"{self.base_url}{dest.path}"

        async def one(session: aiohttp.ClientSession) -> Sample:
            async with limit:
                try:
                    async with session.get(url, headers=headers) as resp:
                        body = await resp.text(errors="replace")
                        return classify(body, resp.status, resp.headers.get(SUBSET_HEADER), False)
                except TimeoutError:
                    return classify("", 0, None, True)
                except aiohttp.ClientError as exc:
                    return unreachable(
                        _("connection failed ({error})").format(error=type(exc).__name__)
                    )

        async with aiohttp.ClientSession(timeout=client_timeout, connector=connector) as session:
            return list(await asyncio.gather(*(one(session) for _unused in range(count))))

    def hanging_versions(
        self, dest: Destination, versions: Iterable[str], timeout: float
    ) -> set[str]:
        async def probe(url: str) -> bool:
            import aiohttp

            try:
                async with (
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s,
                    s.get(url) as resp,
                ):
                    await resp.read()
                    return False
            except TimeoutError:
                return True
            except aiohttp.ClientError:
                return False

        urls = {}
        for version in versions:
            url = self.pod_url(dest, version) if self.pod_url else None
            if url:
                urls[version] = url

        async def run() -> set[str]:
            hung = await asyncio.gather(*(probe(url) for url in urls.values()))
            return {v for v, h in zip(urls, hung, strict=True) if h}

        return asyncio.run(run())


# Runs in the tester pod: N requests, C at a time, one line per request:
# "<body>|<http code>|<x-kubelab-subset>|<curl exit code>" (code 000 when no HTTP answer
# came back; exit code 28 when curl's --max-time ran out, another one for a reset).
_EXEC_SCRIPT = r"""
n=$1; c=$2; t=$3; ms=$4; url=$5
seq 1 "$n" | xargs -n 1 -P "$c" sh -c '
  r=$({ curl -s -m "$0" -H "x-envoy-upstream-rq-timeout-ms: $1" @NOT_SAMPLED@ \
      -w "|%{http_code}|%header{x-kubelab-subset}" "$2" 2>/dev/null; printf "|%s" "$?"; } \
      | tr -d "\n")
  printf "%s\n" "$r"' "$t" "$ms" "$url"
""".replace("@NOT_SAMPLED@", " ".join(f'-H "{k}: {v}"' for k, v in NOT_SAMPLED.items()))


def parse_exec_line(line: str) -> Sample:
    """A sample from one line the tester's script printed."""
    body, code, subset, exit_code = line.rsplit("|", 3)
    status = int(code) if code.isdigit() else 0
    if status == 0 and exit_code.strip() != str(CURL_TIMED_OUT):
        return unreachable(
            _("connection failed (curl exit {exit_code})").format(
                exit_code=exit_code.strip() or "?"
            )
        )
    return classify(body, status, subset or None, status == 0)


class ExecSampler:
    """Requests sent with curl from the in-mesh tester pod, through the API's exec."""

    def __init__(self, kube: Kube, tester: str, namespace: str) -> None:
        self.kube = kube
        self.tester = tester
        self.namespace = namespace

    # curl processes the tester pod runs at once (it has small resource limits).
    MAX_CONCURRENCY = 100

    def _run(self, url: str, count: int, timeout: float, concurrency: int) -> list[str]:
        concurrency = min(concurrency, self.MAX_CONCURRENCY)
        client_timeout = timeout + 1.0
        result = self.kube.exec(
            self.namespace,
            self.tester,
            [
                "sh",
                "-c",
                _EXEC_SCRIPT,
                "sample",
                str(count),
                str(concurrency),
                f"{client_timeout:g}",
                str(int(timeout * 1000)),
                url,
            ],
            timeout=client_timeout * (count / max(concurrency, 1) + 2) + 30,
        )
        return [line for line in result.stdout.splitlines() if line.count("|") >= 3]

    def sample(
        self, dest: Destination, count: int, timeout: float, concurrency: int
    ) -> list[Sample]:
        url = f"http://{dest.host}:{dest.port}{dest.path}"
        return [parse_exec_line(line) for line in self._run(url, count, timeout, concurrency)]

    def hanging_versions(
        self, dest: Destination, versions: Iterable[str], timeout: float
    ) -> set[str]:
        """Ask one pod of each version directly (pod IP, bypassing the routing)."""
        hung = set()
        for version in versions:
            pods, target = version_pods(self.kube, dest, version)
            ips = [p.get("status", {}).get("podIP") for p in pods]
            ips = [ip for ip in ips if ip]
            if not ips:
                continue
            lines = self._run(f"http://{ips[0]}:{target}{dest.path}", 1, timeout, 1)
            # curl gave up, or the sidecar did first: Envoy's 504 "upstream request timeout"
            # after the x-envoy-upstream-rq-timeout-ms the request carried.
            if lines and parse_exec_line(lines[0]).hung:
                hung.add(version)
        return hung


def attribute_hung(samples: list[Sample], hanging: set[str]) -> list[Sample]:
    """Count hung samples for the versions whose own pods hang when asked directly.

    A hung sample the mesh routed to subset X belongs to version X only when X's pods hang;
    otherwise it stays unexplained (X's subset sends it somewhere else). Hung samples the
    mesh did not name are shared round-robin among the hanging versions (the split between
    several hanging versions is then only approximate).
    """
    if not hanging:
        return samples
    order = sorted(hanging)
    out, i = [], 0
    for s in samples:
        if s.hung and s.version is None and (s.subset is None or s.subset in hanging):
            out.append(Sample(s.subset or order[i % len(order)], s.status, True, s.subset))
            i += s.subset is None
        else:
            out.append(s)
    return out


def failures(samples: Iterable[Sample]) -> Counter[tuple[str | None, int, bool, str]]:
    """Samples no version answered, grouped by (subset, status, hung, detail)."""
    return Counter((s.subset, s.status, s.hung, s.detail) for s in samples if s.version is None)


def misrouted(samples: Iterable[Sample]) -> Counter[tuple[str, str]]:
    """(subset routed to, version that answered) for answers from another version."""
    return Counter(
        (s.subset, s.version)
        for s in samples
        if s.subset and s.version and not s.hung and s.subset != s.version
    )


def _requests(n: int, subset: str | None) -> str:
    """``n`` requests, to ``subset`` when the mesh named one ("1 request", "3 requests")."""
    if subset:
        text = (
            _("{count} request to subset {subset}")
            if n == 1
            else _("{count} requests to subset {subset}")
        )
        return text.format(count=n, subset=subset)
    return (_("{count} request") if n == 1 else _("{count} requests")).format(count=n)


def explain_failures(samples: list[Sample], timeout: float) -> list[str]:
    """One sentence per kind of failure, naming what to look at."""
    sentences = []
    for (subset, status, hung, detail), n in sorted(
        failures(samples).items(), key=lambda item: (-item[1], str(item[0]))
    ):
        requests = _requests(n, subset)
        if hung:
            if subset:
                sentences.append(
                    _(
                        "{requests} hung past {timeout:g}s, but the pods labelled "
                        "version={subset} answer when asked directly: does DestinationRule "
                        "subset {subset} select them?"
                    ).format(requests=requests, timeout=timeout, subset=subset)
                )
            else:
                sentences.append(
                    _(
                        "{requests} hung past {timeout:g}s and no version's pods hang when "
                        "asked directly: is the Service selecting the app's pods?"
                    ).format(requests=requests, timeout=timeout)
                )
        elif status == 0:
            sentences.append(
                _("{requests} got no HTTP answer: {detail}").format(
                    requests=requests, detail=detail
                )
            )
        elif 200 <= status < 300:
            sentences.append(
                _(
                    "{requests} answered {status} {detail!r}, which no app-backend version "
                    "sends: is the Service selecting the app's pods?"
                ).format(requests=requests, status=status, detail=detail)
            )
        else:
            whose = (
                _(
                    "are the pods labelled version={subset} running and ready, and does "
                    "DestinationRule subset {subset} select them?"
                ).format(subset=subset)
                if subset
                else _(
                    "are the pods of every version running and ready, and do the "
                    "DestinationRule's subsets select them?"
                )
            )
            sentences.append(
                _("{requests} answered {status} {detail}: {whose}").format(
                    requests=requests, status=status, detail=detail, whose=whose
                )
            )
    for (subset, version), n in sorted(misrouted(samples).items()):
        routed = (
            _("{count} request routed to subset {subset}")
            if n == 1
            else _("{count} requests routed to subset {subset}")
        ).format(count=n, subset=subset)
        sentences.append(
            _(
                "{requests} were answered by {version}: does DestinationRule subset {subset} "
                "select {version}'s pods?"
            ).format(requests=routed, version=version, subset=subset)
        )
    return sentences


def tally(samples: Iterable[Sample]) -> tuple[Counter[str], Counter[str], int]:
    """(answers per version, hung per version, samples no version answered)."""
    answered: Counter[str] = Counter()
    hung: Counter[str] = Counter()
    unknown = 0
    for s in samples:
        if s.version is None:
            unknown += 1
            continue
        answered[s.version] += 1
        if s.hung:
            hung[s.version] += 1
    return answered, hung, unknown
