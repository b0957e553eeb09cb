"""Sending requests through the mesh and telling which version answered each one.

Two transports produce the same :class:`Sample` list:

* :class:`HttpSampler` sends requests itself (the sandbox's Envoy, or a gateway URL),
  concurrently with aiohttp;
* :class:`ExecSampler` runs curl in the lesson's in-mesh tester pod through the API's
  exec, with ``xargs -P`` for concurrency — what a student's own ``kubectl exec`` does.

Every request has a timeout. A request that hangs still belongs to a version: the mesh
says which subset it was routed to (the sandbox's Envoy adds ``x-kubelab-subset`` even
to its 504), and otherwise :func:`attribute_hung` asks each version's pods directly which
of them hang. That is how students see v1's bug in the numbers.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from kubelab.cluster.kube import Kube

_BODY_VERSION = re.compile(r"^\s*([A-Za-z0-9_.-]+) - Request \d+")
SUBSET_HEADER = "x-kubelab-subset"
TIMEOUT_HEADER = "x-envoy-upstream-rq-timeout-ms"


@dataclass(frozen=True)
class Sample:
    """One request: who answered (or hung), and how."""

    version: str | None
    status: int  # HTTP status; 0 when the client gave up waiting
    hung: bool  # no answer in time (client timeout or the mesh's 504 upstream timeout)

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


def classify(body: str, status: int, subset: str | None, timed_out: bool) -> Sample:
    """A sample from what came back: version from the body, else from the mesh's header."""
    match = _BODY_VERSION.match(body)
    version = match.group(1) if match and 200 <= status < 300 else None
    hung = timed_out or (status == 504 and "upstream request timeout" in body)
    return Sample(version or subset or None, 0 if timed_out else status, hung)


class Sampler(Protocol):
    def sample(
        self, dest: Destination, count: int, timeout: float, concurrency: int
    ) -> list[Sample]: ...

    def hanging_versions(
        self, dest: Destination, versions: Iterable[str], timeout: float
    ) -> set[str]: ...


class HttpSampler:
    """Requests sent from here to an HTTP entry point of the mesh (sandbox Envoy, gateway)."""

    def __init__(self, base_url: str, probe_urls: dict[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        # version -> URL of one of its pods, for attribute_hung (the sandbox knows them).
        self.probe_urls = probe_urls or {}

    def sample(
        self, dest: Destination, count: int, timeout: float, concurrency: int
    ) -> list[Sample]:
        return asyncio.run(self._sample(dest, count, timeout, concurrency))

    async def _sample(
        self, dest: Destination, count: int, timeout: float, concurrency: int
    ) -> list[Sample]:
        import aiohttp

        headers = {"Host": dest.host, TIMEOUT_HEADER: str(int(timeout * 1000))}
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
                except aiohttp.ClientError:
                    return Sample(None, 0, False)

        async with aiohttp.ClientSession(timeout=client_timeout, connector=connector) as session:
            return list(await asyncio.gather(*(one(session) for _ in range(count))))

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

        async def run() -> set[str]:
            wanted = [v for v in versions if v in self.probe_urls]
            hung = await asyncio.gather(*(probe(self.probe_urls[v]) for v in wanted))
            return {v for v, h in zip(wanted, hung, strict=True) if h}

        return asyncio.run(run())


# Runs in the tester pod: N requests, C at a time, one line per request:
# "<body>|<http code>|<x-kubelab-subset>" (code 000 when curl timed out).
_EXEC_SCRIPT = r"""
n=$1; c=$2; t=$3; ms=$4; url=$5
seq 1 "$n" | xargs -n 1 -P "$c" sh -c '
  r=$(curl -s -m "$0" -H "x-envoy-upstream-rq-timeout-ms: $1" \
      -w "|%{http_code}|%header{x-kubelab-subset}" "$2" 2>/dev/null | tr -d "\n")
  printf "%s\n" "$r"' "$t" "$ms" "$url"
"""


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
        return [line for line in result.stdout.splitlines() if line.count("|") >= 2]

    def sample(
        self, dest: Destination, count: int, timeout: float, concurrency: int
    ) -> list[Sample]:
        url = f"http://{dest.host}:{dest.port}{dest.path}"
        samples = []
        for line in self._run(url, count, timeout, concurrency):
            body, code, subset = line.rsplit("|", 2)
            status = int(code) if code.isdigit() else 0
            samples.append(classify(body, status, subset or None, status == 0))
        return samples

    def hanging_versions(
        self, dest: Destination, versions: Iterable[str], timeout: float
    ) -> set[str]:
        """Ask one pod of each version directly (pod IP, bypassing the routing)."""
        service = self.kube.get("v1", "Service", dest.service, dest.namespace) or {}
        spec = service.get("spec") or {}
        selector = ",".join(f"{k}={v}" for k, v in (spec.get("selector") or {}).items())
        ports = spec.get("ports") or [{}]
        target = ports[0].get("targetPort") or ports[0].get("port") or 80
        hung = set()
        for version in versions:
            pods = self.kube.list("v1", "Pod", dest.namespace, f"{selector},version={version}")
            ips = [p.get("status", {}).get("podIP") for p in pods]
            ips = [ip for ip in ips if ip]
            if not ips:
                continue
            lines = self._run(f"http://{ips[0]}:{target}{dest.path}", 1, timeout, 1)
            if not lines:
                continue
            body, code, _subset = lines[0].rsplit("|", 2)
            status = int(code) if code.isdigit() else 0
            # curl gave up (000), or the sidecar did first: Envoy's 504 "upstream request
            # timeout" after the x-envoy-upstream-rq-timeout-ms the request carried.
            if status == 0 or classify(body, status, None, False).hung:
                hung.add(version)
        return hung


def attribute_hung(samples: list[Sample], hanging: set[str]) -> list[Sample]:
    """Give hung samples the mesh did not name to the version known to hang.

    With several hanging versions the unnamed ones are shared round-robin (the split
    between them is then only approximate, which the check's message says).
    """
    if not hanging:
        return samples
    order = sorted(hanging)
    out, i = [], 0
    for s in samples:
        if s.hung and s.version is None:
            out.append(Sample(order[i % len(order)], s.status, True))
            i += 1
        else:
            out.append(s)
    return out


def tally(samples: Iterable[Sample]) -> tuple[Counter[str], Counter[str], int]:
    """(answers per version, hung per version, samples with no version)."""
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
