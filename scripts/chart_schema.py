"""Building blocks of the charts' ``values.schema.json`` generators (JSON Schema draft-07).

``charts/<chart>/schema/generate_schema.py`` describes its values with these helpers and
calls :func:`main`; what only one chart needs stays in its own generator. Every object is
closed (``additionalProperties: false``), so a typo in a key is an error instead of a
silently ignored value.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def obj(properties: Schema, description: str = "", required: bool = True) -> Schema:
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
    return obj({"requests": quantities, "limits": quantities}, description, required=False)


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


def image(description: str, tag: Schema | None = None) -> Schema:
    """The ``image`` values of the app: registry, repository, ``tag`` if given, pull policy
    and optional pull Secrets."""
    return obj(
        {
            "registry": string("registry host[:port], empty for none", pattern=r"^[^/\s]*$"),
            "repository": string("image repository", pattern=r"^[a-z0-9][a-z0-9._/-]*$"),
            **({"tag": tag} if tag else {}),
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
        description,
    )


def helm_global() -> Schema:
    """``global``: reserved by Helm, so every chart accepts it."""
    return optional(
        {"type": "object", "description": "reserved by Helm (values shared with subcharts)"}
    )


def common_labels() -> Schema:
    return optional(
        string_map(
            "extra labels added to every object", LABEL_KEY, pattern=LABEL_VALUE, maxLength=63
        )
    )


def pod_annotations() -> Schema:
    return optional(string_map("annotations added to the app pods"))


def values_schema(title: str, properties: Schema) -> Schema:
    """The whole file: a closed object of ``properties``, required unless optional."""
    required = [k for k, v in properties.items() if not v.pop("x-optional", False)]
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": title,
        "description": "Generated by schema/generate_schema.py - edit that script, not this file.",
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": properties,
    }


def render(schema: Schema) -> str:
    return json.dumps(schema, indent=2) + "\n"


def main(
    render: Callable[[], str], script: str, description: str, argv: list[str] | None = None
) -> int:
    """The command line of the generator ``script`` (its ``__file__``): write ``render()``
    to the chart's values.schema.json (or ``--output``), or with ``--check`` exit 1 if that
    file differs."""
    chart_dir = Path(script).resolve().parent.parent
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    parser.add_argument(
        "--output", type=Path, default=chart_dir / "values.schema.json", help="file to write"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date; run {Path(script).name}", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0
