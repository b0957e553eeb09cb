"""The sandbox's fidelity, measured: the same operations on the sandbox API and on the
real control plane, their answers normalized and compared.

A :class:`Side` is one of the two clusters. A case (:func:`case`) is a function that runs
operations on a side in its own namespace (the same name on both sides) and returns
what it observed: kubectl's exit code and output, or an HTTP answer through the
official Python client's transport. :func:`normalize` removes what differs between any
two clusters (uids, timestamps, resourceVersions, generated name suffixes, addresses),
nothing else. A case is *identical* when both sides observed the same thing.

The real server of the tests is kube-apiserver v1.20.2; the sandbox says it is v1.31.
Where the two versions answer differently by design (a case says so in its docstring),
the case observes the outcome a student sees (exit code, what is stored) rather than
the wording.

:data:`KNOWN_DIFFERENCES` names every case that is allowed to differ, and why; each is
listed in docs/sandbox.md. A case that differs without being listed fails, and so does a
listed one that has become identical (the list must stay true).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubelab.tools import find_tool

Observation = Any
CaseFn = Callable[["Side"], Observation]


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    fn: CaseFn
    doc: str


CASES: list[Case] = []
#: (case, identical) for every case run in this test session
RESULTS: list[tuple[Case, bool]] = []

#: case id -> why the sandbox answers differently (each is in docs/sandbox.md)
KNOWN_DIFFERENCES: dict[str, str] = {
    "apply-list-kind": "kubectl validates a List against /openapi/v2, which is not served",
    "kubectl-apply-unknown-field-custom-resource": "v1.31 refuses the unknown field "
    "(kubectl asks for strict validation); v1.20 prunes it, or kubectl refuses it on the "
    "client when its cached /openapi/v2 already has the CRD's schema",
}
KNOWN_DIFFERENCES["ssa-keeps-another-managers-container"] = (
    "v1.20's schema makes a pod's containers an atomic list for server-side apply (the "
    "injector's apply conflicts with kubectl's); from 1.21 it is a list merged by name"
)
#: known differences whose real answer varies from run to run (they may also be the same)
UNSTABLE = {"kubectl-apply-unknown-field-custom-resource"}


def case(category: str) -> Callable[[CaseFn], CaseFn]:
    def register(fn: CaseFn) -> CaseFn:
        doc = " ".join((fn.__doc__ or "").split())
        CASES.append(Case(fn.__name__.removeprefix("case_").replace("_", "-"), category, fn, doc))
        return fn

    return register


# --------------------------------------------------------------------------- normalizing

_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_IP = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
# generateName suffixes and ReplicaSet/pod hashes (Kubernetes' alphabet: no vowels).
_SUFFIX = re.compile(r"(?<=[a-z0-9]-)[bcdfghjklmnpqrstvwxz2456789]{5}\b")
_HASH = re.compile(r"(?<=[a-z0-9]-)[bcdfghjklmnpqrstvwxz2456789]{8,10}\b")
_SERVER = re.compile(r"https://127\.0\.0\.1:\d+")
_RV = re.compile(r"(resourceVersion[\"' :=]+)\d+")
# kubectl's table ages: 0s, 12s, 3m4s, 2d.
_AGE = re.compile(r"(?<=\s)\d+(?:s|m\d*s?|h\d*m?|d\d*h?)(?=\s|$)")
_DROPPED_KEYS = {"uid", "resourceVersion", "creationTimestamp", "selfLink", "time"}


def normalize_text(text: str) -> str:
    for pattern, replacement in (
        (_TIME, "<time>"),
        (_UUID, "<uid>"),
        (_SERVER, "<server>"),
        (_IP, "<ip>"),
        (_HASH, "<hash>"),
        (_SUFFIX, "<gen>"),
        (_RV, r"\1<rv>"),
        (_AGE, "<age>"),
    ):
        text = pattern.sub(replacement, text)
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def normalize(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items() if k not in _DROPPED_KEYS}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, str):
        return normalize_text(value)
    return value


def dig(obj: Any, path: str) -> Any:
    """``a.b.0.c`` of ``obj``, or None."""
    for part in path.split(".") if path else []:
        if isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        elif isinstance(obj, dict):
            obj = obj.get(part)
        else:
            return None
    return obj


def project(obj: Any, *paths: str) -> dict[str, Any]:
    return {p: normalize(dig(obj, p)) for p in paths}


def status_shape(answer: tuple[int, Any]) -> dict[str, Any]:
    """An error answer as kubectl and the client see it: code, reason, message, causes."""
    code, body = answer
    if not isinstance(body, dict) or body.get("kind") != "Status":
        return {"code": code, "body": normalize(body)}
    details = body.get("details") or {}
    causes = sorted(
        (normalize(c) for c in details.get("causes") or []),
        key=lambda c: json.dumps(c, sort_keys=True),
    )
    return {
        "code": code,
        "status": body.get("status"),
        "reason": body.get("reason"),
        "message": normalize(body.get("message")),
        "details": {k: normalize(v) for k, v in details.items() if k not in ("causes", "uid")},
        "causes": causes,
    }


# --------------------------------------------------------------------------- sides


@dataclass
class Side:
    """One cluster: ``real`` (kube-apiserver v1.20.2) or ``sandbox``."""

    name: str
    kubeconfig: Path
    cache_dir: Path
    #: the namespace of the case being run
    ns: str = ""
    _client: Any = field(default=None, repr=False)

    # ---------------------------------------------------------------- kubectl

    def kubectl(
        self,
        *args: str,
        stdin: str | None = None,
        timeout: float = 30,
        env: dict[str, str] | None = None,
    ) -> tuple[int, str, str]:
        """``kubectl -n <case namespace> args``: exit code, normalized stdout and stderr."""
        kubectl = find_tool("kubectl")
        assert kubectl is not None, "kubectl missing: scripts/install-tools.sh"
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(self.cache_dir),
            **(env or {}),
        }
        done = subprocess.run(
            [str(kubectl), "-n", self.ns, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            input=stdin,
        )
        return done.returncode, normalize_text(done.stdout), normalize_text(done.stderr)

    def apply(self, manifest: str | dict[str, Any] | list[dict[str, Any]], *args: str) -> int:
        text = manifest if isinstance(manifest, str) else _yaml(manifest)
        rc, _out, err = self.kubectl("apply", "-f", "-", *args, stdin=text)
        assert rc == 0, f"{self.name}: kubectl apply failed: {err}"
        return rc

    # ---------------------------------------------------------------- HTTP

    @property
    def client(self) -> Any:
        if self._client is None:
            from kubernetes import config

            self._client = config.new_client_from_config(config_file=str(self.kubeconfig))
        return self._client

    def http(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        query: dict[str, Any] | None = None,
    ) -> tuple[int, Any]:
        """One request through the official client's transport: status and parsed body
        (raw, not normalized: cases pick and normalize)."""
        from kubernetes.client.exceptions import ApiException

        path = path.replace("{ns}", self.ns)
        method_, url, headers, payload, _post = self.client.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.client.call_api(
                method_, url, header_params=headers, body=payload, _request_timeout=20
            )
            response.read()
            status, data = response.status, response.data
        except ApiException as error:
            status, data = error.status, error.body
        text = data.decode() if isinstance(data, bytes) else str(data or "")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text.strip()

    def post(self, path: str, body: Any, **query: Any) -> tuple[int, Any]:
        return self.http("POST", path, body, query=query)

    def get(self, path: str, **query: Any) -> tuple[int, Any]:
        return self.http("GET", path, query=query)

    # ---------------------------------------------------------------- waiting

    def as_token(self, token: str) -> Side:
        """This side seen with a bearer token (a ServiceAccount's) instead of the admin's."""
        config = yaml.safe_load(self.kubeconfig.read_text())
        config["users"] = [{"name": "token", "user": {"token": token}}]
        for context in config["contexts"]:
            context["context"]["user"] = "token"
        path = self.cache_dir / f"token-{self.ns}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return Side(f"{self.name} (token)", path, self.cache_dir, self.ns)

    def wait(self, what: str, ready: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: timed out waiting for {what}")
            time.sleep(0.1)

    def wait_rollout(self, deployment: str, timeout: float = 40) -> None:
        rc, _out, err = self.kubectl(
            "rollout",
            "status",
            f"deployment/{deployment}",
            f"--timeout={int(timeout)}s",
            timeout=timeout + 10,
        )
        assert rc == 0, f"{self.name}: rollout of {deployment} did not finish: {err}"


def _yaml(manifest: dict[str, Any] | list[dict[str, Any]]) -> str:
    docs = manifest if isinstance(manifest, list) else [manifest]
    return yaml.safe_dump_all(docs, sort_keys=False)


# --------------------------------------------------------------------------- objects


def deployment(
    name: str = "web",
    *,
    replicas: int = 1,
    image: str = "example.test/web:1",
    containers: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    labels = labels or {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": containers or [{"name": name, "image": image}]},
            },
        },
    }


def pod(name: str = "box", containers: tuple[str, ...] = ("main",)) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": c, "image": f"example.test/{c}:1"} for c in containers]},
    }


def configmap(name: str = "settings", data: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": data if data is not None else {"mode": "a"},
    }


# --------------------------------------------------------------------------- the figure


def report() -> dict[str, Any]:
    """The fidelity figure by category of the cases run so far."""
    by: dict[str, list[int]] = {}
    for one, same in RESULTS:
        counts = by.setdefault(one.category, [0, 0])
        counts[0] += int(same)
        counts[1] += 1
    identical = sum(c[0] for c in by.values())
    compared = sum(c[1] for c in by.values())
    return {"categories": by, "identical": identical, "compared": compared}


def report_lines() -> list[str]:
    figure = report()
    if not figure["compared"]:
        return []
    lines = [f"{'category':<24} identical / compared"]
    for category, (same, total) in sorted(figure["categories"].items()):
        lines.append(f"{category:<24} {same:>3} / {total:<3} {100 * same / total:5.1f}%")
    same, total = figure["identical"], figure["compared"]
    lines.append(f"{'all':<24} {same:>3} / {total:<3} {100 * same / total:5.1f}%")
    target = os.environ.get("KUBELAB_FIDELITY_REPORT")
    if target:
        Path(target).write_text(json.dumps(figure, indent=2) + "\n")
    return lines
