#!/usr/bin/env python3
"""Generate ``values.schema.json`` of the app-rollouts chart (JSON Schema draft-07).

Helm validates the merged values against that file on ``lint``, ``template``, ``install`` and
``upgrade``: every object is closed (``additionalProperties: false``), so a typo in a key is an
error instead of a silently ignored value.

Usage::

    python charts/app-rollouts/schema/generate_schema.py          # (re)write values.schema.json
    python charts/app-rollouts/schema/generate_schema.py --check  # exit 1 if it is out of date

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
    Schema,
    boolean,
    common_labels,
    helm_global,
    image,
    integer,
    obj,
    optional,
    pod_annotations,
    port,
    probe,
    resources,
    string,
    values_schema,
)

# Argo Rollouts duration strings (pause.duration, initialDelay, interval) and PromQL ranges.
DURATION = r"^[0-9]+(ms|s|m|h)$"
# Seconds for `sleep` in the curl image's busybox sh, e.g. "0.25".
SECONDS = r"^[0-9]+(\.[0-9]+)?$"


def name(description: str) -> Schema:
    # Room for the "-preview"/"-stable"/"-canary" suffixes within a 63-character DNS label.
    return string(description, pattern=DNS_LABEL, maxLength=40)


def weights(description: str) -> Schema:
    return {
        "type": "array",
        "description": description,
        "minItems": 1,
        "items": {"type": "integer", "minimum": 0, "maximum": 100},
    }


def bluegreen(description: str) -> Schema:
    return obj(
        {
            "enabled": boolean("render this scenario"),
            "name": name("name of the Rollout and its active Service (<name>-preview: preview)"),
            "autoPromotionEnabled": boolean(
                "promote on its own once the new ReplicaSet is ready (false: pause for a human)"
            ),
            "scaleDownDelaySeconds": integer(
                "seconds the old ReplicaSet keeps running after the switch", 0
            ),
        },
        description,
    )


def curl_pod(description: str, extra: Schema | None = None) -> Schema:
    return obj(
        {
            "enabled": boolean("render it"),
            "name": string("name (also its app label and container name)", pattern=DNS_LABEL),
            "image": string("image with curl and a POSIX sh", minLength=1),
            **(extra or {}),
            "resources": optional(resources("resources of the curl container")),
        },
        description,
    )


def build_schema() -> Schema:
    scenarios = obj(
        {
            "bluegreen": bluegreen("blue/green promoted by hand"),
            "bluegreenAnalysis": bluegreen("blue/green gated by prePromotionAnalysis"),
            "canary": obj(
                {
                    "enabled": boolean("render this scenario"),
                    "name": name("name of the Rollout, its VirtualService and DestinationRule"),
                    "weights": weights(
                        "one setWeight step each, followed by an indefinite pause unless 100"
                    ),
                },
                "canary with manual pauses, split by DestinationRule subsets",
            ),
            "canaryAnalysis": obj(
                {
                    "enabled": boolean("render this scenario"),
                    "name": name("name of the Rollout and its VirtualService"),
                    "weights": weights(
                        "one setWeight step each, followed by a pause and a success-rate analysis"
                    ),
                    "pause": string(
                        "pause after each setWeight, before the analysis", pattern=DURATION
                    ),
                },
                "canary gated by an analysis after every step, split by host",
            ),
        },
        "the four Rollouts rendered side by side",
    )
    analysis = obj(
        {
            "metricsAddress": string(
                "Prometheus-compatible query URL (VictoriaMetrics)", pattern=r"^https?://[^\s]+$"
            ),
            "successRate": obj(
                {
                    "threshold": {
                        "type": "number",
                        "description": "minimum success rate (0..1) of a successful measurement",
                        "minimum": 0,
                        "maximum": 1,
                    },
                    "window": string("range of the rate window in the query", pattern=DURATION),
                    "initialDelay": string("wait before the first measurement", pattern=DURATION),
                    "interval": string("time between measurements", pattern=DURATION),
                    "count": integer("measurements per run", 1),
                    "failureLimit": integer("failed measurements tolerated", 0),
                    "inconclusiveLimit": integer("no-data measurements tolerated", 0),
                },
                "AnalysisTemplate success-rate (guarded PromQL on the app's request counter)",
            ),
            "loadTest": obj(
                {
                    "image": string("image with curl and a POSIX sh", minLength=1),
                    "duration": integer("seconds of load", 1, 3600),
                    "pause": string("seconds between two requests", pattern=SECONDS),
                    "deadlineSeconds": integer("seconds before the Job is stopped", 1),
                },
                "AnalysisTemplate load-test (a Job outside the mesh)",
            ),
        },
        "the AnalysisTemplates",
    )
    properties: Schema = {
        "global": helm_global(),
        "commonLabels": common_labels(),
        "image": image(
            "image of the app", tag=string("tag every Rollout starts with", pattern=IMAGE_TAG)
        ),
        "app": obj(
            {
                "replicas": integer("pods per Rollout", 1, 10),
                "bugAfter": integer(
                    "BUG_AFTER env: requests v1 answers before it hangs", 1, 1_000_000
                ),
                "port": port("port the app listens on"),
            },
            "settings shared by the app containers",
        ),
        "service": obj(
            {"port": port("port of every Service (named http)")},
            "the Services",
        ),
        "scenarios": scenarios,
        "analysis": analysis,
        "tester": curl_pod("in-mesh curl Pod for exercises"),
        "traffic": curl_pod(
            "background traffic from inside the mesh",
            {
                "targets": {
                    "type": "array",
                    "description": "Service names; empty: the main Service of each scenario",
                    "items": {"type": "string", "pattern": DNS_LABEL},
                },
                "pause": string("seconds to sleep after each round", pattern=SECONDS),
            },
        ),
        "resources": optional(resources("resources of the app container")),
        "probes": obj(
            {
                "liveness": probe("liveness probe"),
                "readiness": probe("readiness probe"),
            },
            "HTTP probes of the app container",
        ),
        "podAnnotations": pod_annotations(),
        "podSecurityContext": optional(
            {"type": "object", "description": "pod-level securityContext of every pod"}
        ),
        "securityContext": optional(
            {"type": "object", "description": "container-level securityContext of every container"}
        ),
    }
    return values_schema("app-rollouts chart values", properties)


def render() -> str:
    return chart_schema.render(build_schema())


def main(argv: list[str] | None = None) -> int:
    doc = (__doc__ or "").splitlines()[0]
    return chart_schema.main(render, __file__, doc, argv)


if __name__ == "__main__":
    sys.exit(main())
