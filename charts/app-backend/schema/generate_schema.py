#!/usr/bin/env python3
"""Generate ``values.schema.json`` of the app-backend chart (JSON Schema draft-07).

Helm validates the merged values against that file on ``lint``, ``template``, ``install``
and ``upgrade``. JSON Schema cannot add numbers, so the rule "weights.v1 + weights.v2 == 100"
is written out by enumeration: one ``if v1 == k then v2 == 100 - k`` clause per k in 0..100.
With helm 3.17's validator a bad pair (45 + 50) then fails with a message naming the v2 that
would fit: ``weights.v2: weights.v2 must be one of the following: 55`` (plus the lines
``weights: Must validate "then" as "if" was valid`` and ``... all the schemas (allOf)``).
The weights object also carries the annotation ``"x-kubelab-sum": 100``, which Helm's
validator ignores (an unknown keyword): kubelab checks it itself when it loads a lesson
(kubelab/lessons/chart_values.py) and says "must add up to 100 (v1 45 + v2 50 = 95)"
instead of the clauses' messages, which it leaves out under a node that carries it.

Usage::

    python charts/app-backend/schema/generate_schema.py          # (re)write values.schema.json
    python charts/app-backend/schema/generate_schema.py --check  # exit 1 if it is out of date

A test asserts that the committed file equals :func:`render`'s output, so edit this script,
not the JSON. The building blocks shared with the other charts are in scripts/chart_schema.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The shared building blocks live in the repository's scripts/ folder, which is no package:
# put it on the path so that this file runs as a plain script and loads with importlib.
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))

import chart_schema
from chart_schema import (
    DNS_LABEL,
    IMAGE_TAG,
    LABEL_KEY,
    LABEL_VALUE,
    Schema,
    boolean,
    common_labels,
    helm_global,
    image,
    integer,
    optional,
    pod_annotations,
    port,
    probe,
    resources,
    string,
    string_map,
    values_schema,
)


def obj(
    properties: Schema, description: str = "", required: bool = True, extra: Schema | None = None
) -> Schema:
    """:func:`chart_schema.obj`, with the keys of ``extra`` (e.g. ``if``/``then``) added."""
    return chart_schema.obj(properties, description, required) | (extra or {})


def version(name: str) -> Schema:
    return obj(
        {
            "enabled": boolean(f"deploy app-backend-{name}"),
            "tag": string(f"image tag of {name}", pattern=IMAGE_TAG),
            "replicas": integer("number of pods", 0),
            "bugAfter": integer(
                "BUG_AFTER: pool size, v1 hangs after this many requests", 1, 1_000_000
            ),
        },
        f"Deployment <name>-{name} (pods labelled app=<name>, version={name})",
    )


def weight_sum_rules() -> list[Schema]:
    """One clause per possible v1 weight: if v1 == k then v2 must be 100 - k."""
    return [
        {
            "if": {"properties": {"v1": {"const": k}}, "required": ["v1"]},
            # A one-element enum (not const): helm then says "weights.v2 must be one of the
            # following: 55", clearer than const's "does not match: 55" or anyOf's messages.
            "then": {"properties": {"v2": {"enum": [100 - k]}}},
        }
        for k in range(101)
    ]


def weights() -> Schema:
    schema = obj(
        {
            "v1": integer("percent of requests routed to subset v1 (http[0].route[0])", 0, 100),
            "v2": integer("percent of requests routed to subset v2 (http[0].route[1])", 0, 100),
        },
        "VirtualService traffic split; integers 0..100 that must sum to 100",
    )
    # For kubelab, which reports the sum itself (Helm ignores the keyword and keeps the
    # clauses below): the values of the properties must add up to this.
    schema["x-kubelab-sum"] = 100
    schema["allOf"] = weight_sum_rules()
    return schema


def build_schema() -> Schema:
    gateway = obj(
        {
            "enabled": boolean("render an Istio Gateway and bind the VirtualService to it"),
            "name": string("name of the Gateway object", pattern=DNS_LABEL, maxLength=63),
            "selector": string_map(
                "labels of the ingress gateway pods", LABEL_KEY, pattern=LABEL_VALUE, maxLength=63
            )
            | {"minProperties": 1},
            "hosts": {
                "type": "array",
                "description": 'hosts served by the Gateway ("*" = any)',
                "minItems": 1,
                "items": {"type": "string", "minLength": 1},
            },
            "port": port("HTTP port of the Gateway server"),
            "tls": obj(
                {
                    "enabled": boolean("add an HTTPS server (TLS mode SIMPLE)"),
                    "port": port("HTTPS port of the Gateway server"),
                    "credentialName": string(
                        "Secret with the certificate, in the ingress gateway's namespace"
                    ),
                },
                "HTTPS server of the Gateway",
                extra={
                    # credentialName is required when TLS is on.
                    "if": {"properties": {"enabled": {"const": True}}, "required": ["enabled"]},
                    "then": {"properties": {"credentialName": {"minLength": 1}}},
                },
            ),
        },
        "optional Istio Gateway (networking.istio.io/v1)",
    )
    tester = obj(
        {
            "enabled": boolean("render the in-mesh curl Pod"),
            "name": string("name of the Pod", pattern=DNS_LABEL, maxLength=63),
            "image": string("image of the Pod (needs curl and sh)", minLength=1),
            "resources": optional(resources("resources of the curl container")),
        },
        "in-mesh curl Pod used by exercises and traffic checks",
    )
    properties: Schema = {
        "global": helm_global(),
        "nameOverride": optional(
            string(
                "base name of all objects (default app-backend)",
                pattern=r"^([a-z]([-a-z0-9]*[a-z0-9])?)?$",
                maxLength=40,
            )
        ),
        "commonLabels": common_labels(),
        "image": image("image of the app; the tag comes from versions.<v>.tag"),
        "versions": obj(
            {"v1": version("v1"), "v2": version("v2")},
            "the two app versions",
        ),
        "weights": weights(),
        "service": obj(
            {
                "port": port("Service port (named http)"),
                "targetPort": port("container port; also passed to the app as PORT"),
            },
            "the Service in front of both versions",
        ),
        "gateway": gateway,
        "tester": tester,
        "resources": optional(resources("resources of the app container")),
        "probes": obj(
            {
                "liveness": probe("liveness probe (restarts a dead process)"),
                "readiness": probe("readiness probe (takes a pod out of the Service)"),
            },
            "HTTP probes of the app container",
        ),
        "podAnnotations": pod_annotations(),
        "podSecurityContext": optional(
            {
                "type": "object",
                "description": "pod-level securityContext of the app and tester pods",
            }
        ),
        "securityContext": optional(
            {
                "type": "object",
                "description": "container-level securityContext of the app and tester containers",
            }
        ),
    }
    return values_schema("app-backend chart values", properties)


def render() -> str:
    return chart_schema.render(build_schema())


def main(argv: list[str] | None = None) -> int:
    doc = __doc__.splitlines()[0]
    return chart_schema.main(render, __file__, doc, argv)


if __name__ == "__main__":
    sys.exit(main())
