#!/usr/bin/env python3
"""Generate ``values.schema.json`` of the app-backend chart (JSON Schema draft-07).

Helm validates the merged values against that file on ``lint``, ``template``, ``install``
and ``upgrade``. JSON Schema cannot add numbers, so the rule "weights.v1 + weights.v2 == 100"
is written out by enumeration: one ``if v1 == k then v2 == 100 - k`` clause per k in 0..100.
With helm 3.17's validator a bad pair (45 + 50) then fails with a message naming the v2 that
would fit: ``weights.v2: weights.v2 must be one of the following: 55`` (plus the lines
``weights: Must validate "then" as "if" was valid`` and ``... all the schemas (allOf)``).

Usage::

    python charts/app-backend/schema/generate_schema.py          # (re)write values.schema.json
    python charts/app-backend/schema/generate_schema.py --check  # exit 1 if it is out of date

A test asserts that the committed file equals :func:`render`'s output, so edit this script,
not the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

CHART_DIR = Path(__file__).resolve().parent.parent
SCHEMA_PATH = CHART_DIR / "values.schema.json"

Schema = dict[str, Any]

# Kubernetes name formats (RFC 1123 label / subdomain) and label syntax.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# Resource quantity, as in the Kubernetes OpenAPI definition of resource.Quantity.
QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# Docker image tag.
IMAGE_TAG = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"


def obj(
    properties: Schema, description: str = "", required: bool = True, extra: Schema | None = None
) -> Schema:
    """A closed object: only the listed properties, all required unless told otherwise.

    Keys whose schema has ``"x-optional": True`` are not required: they may be removed with
    ``--set key=null`` (Helm's way of dropping a default). The marker is stripped again.
    """
    schema: Schema = {"type": "object"}
    if description:
        schema["description"] = description
    schema["additionalProperties"] = False
    if required:
        schema["required"] = [k for k, v in properties.items() if not v.get("x-optional")]
    for value in properties.values():
        value.pop("x-optional", None)
    schema["properties"] = properties
    schema.update(extra or {})
    return schema


def optional(schema: Schema) -> Schema:
    """Mark a property as not required (see :func:`obj`)."""
    return {**schema, "x-optional": True}


def string(description: str = "", **extra: Any) -> Schema:
    schema: Schema = {"type": "string"}
    if description:
        schema["description"] = description
    schema.update(extra)
    return schema


def integer(description: str, minimum: int | None = None, maximum: int | None = None) -> Schema:
    schema: Schema = {"type": "integer", "description": description}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def boolean(description: str) -> Schema:
    return {"type": "boolean", "description": description}


def string_map(description: str, key_pattern: str | None = None, **value: Any) -> Schema:
    schema: Schema = {"type": "object", "description": description}
    if key_pattern:
        schema["propertyNames"] = {"pattern": key_pattern, "maxLength": 317}
    schema["additionalProperties"] = {"type": "string", **value}
    return schema


def port(description: str) -> Schema:
    return integer(description, 1, 65535)


def resources(description: str) -> Schema:
    quantity = {"anyOf": [{"type": "string", "pattern": QUANTITY}, {"type": "number"}]}
    quantities = {
        "type": "object",
        "propertyNames": {"pattern": DNS_SUBDOMAIN.replace("$", "") + r"(/[-A-Za-z0-9_.]+)?$"},
        "additionalProperties": quantity,
    }
    return obj(
        {"requests": quantities, "limits": quantities},
        description,
        required=False,
    )


def probe(description: str) -> Schema:
    return obj(
        {
            "path": string("HTTP path of the probe", pattern="^/"),
            "initialDelaySeconds": integer("seconds before the first probe", 0),
            "periodSeconds": integer("seconds between probes", 1),
            "timeoutSeconds": integer("seconds before a probe times out", 1),
            "failureThreshold": integer("failures in a row before acting", 1),
        },
        description,
    )


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
        "global": optional(
            {"type": "object", "description": "reserved by Helm (values shared with subcharts)"}
        ),
        "nameOverride": optional(
            string(
                "base name of all objects (default app-backend)",
                pattern=r"^([a-z]([-a-z0-9]*[a-z0-9])?)?$",
                maxLength=40,
            )
        ),
        "commonLabels": optional(
            string_map(
                "extra labels added to every object", LABEL_KEY, pattern=LABEL_VALUE, maxLength=63
            )
        ),
        "image": obj(
            {
                "registry": string("registry host[:port], empty for none", pattern=r"^[^/\s]*$"),
                "repository": string("image repository", pattern=r"^[a-z0-9][a-z0-9._/-]*$"),
                "pullPolicy": {
                    "type": "string",
                    "description": "imagePullPolicy of the app containers",
                    "enum": ["Always", "IfNotPresent", "Never"],
                },
                "pullSecrets": optional(
                    {
                        "type": "array",
                        "description": "names of image pull Secrets",
                        "items": {"type": "string", "pattern": DNS_SUBDOMAIN},
                    }
                ),
            },
            "image of the app; the tag comes from versions.<v>.tag",
        ),
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
        "podAnnotations": optional(string_map("annotations added to the app pods")),
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
    required = [k for k, v in properties.items() if not v.pop("x-optional", False)]
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "app-backend chart values",
        "description": "Generated by schema/generate_schema.py - edit that script, not this file.",
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": properties,
    }


def render() -> str:
    return json.dumps(build_schema(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    parser.add_argument("--output", type=Path, default=SCHEMA_PATH, help="file to write")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date; run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
