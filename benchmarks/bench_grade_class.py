"""Class grading budget: 100 students x 10 checks against an API server 20 ms away must take
under 10% of the serial time.

Run by hand: ``python benchmarks/bench_grade_class.py [--students 100] [--latency 0.02]``.
The API is kubelab's sandbox API server on loopback with ``latency`` added to every answer.
Each student has a namespace holding the objects of the traffic-splitting lesson in a
"done" state (Ready pods with their sidecar, the VirtualService at 0/100); the graded
lesson has two exercises of five object checks each (existence, fields, pods, sidecars,
weights: 10 checks, about 16 API requests per student). Serial is ``--concurrency 1``;
the budget compares it with the default concurrency. Both runs must grade every check as
passed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LESSON_NS = "istio"


def lesson() -> Any:
    from kubelab.lessons.model import Lesson

    checks_a = [
        {
            "type": "resource-exists",
            "api_version": "v1",
            "kind": "Service",
            "name": "app-backend",
            "namespace": LESSON_NS,
        },
        {
            "type": "pods-ready",
            "namespace": LESSON_NS,
            "selector": "app=app-backend",
            "min_ready": 2,
        },
        {"type": "sidecar-injected", "namespace": LESSON_NS, "selector": "app=app-backend"},
        {
            "type": "virtualservice-weights",
            "name": "app-backend",
            "namespace": LESSON_NS,
            "expect": {"v1": 0, "v2": 100},
        },
        {
            "type": "field-equals",
            "api_version": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "name": "app-backend",
            "namespace": LESSON_NS,
            "jsonpath": "{.spec.host}",
            "equals": "app-backend",
        },
    ]
    checks_b = [
        {
            "type": "resource-exists",
            "api_version": "apps/v1",
            "kind": "Deployment",
            "name": "app-backend-v2",
            "namespace": LESSON_NS,
        },
        {
            "type": "field-equals",
            "api_version": "apps/v1",
            "kind": "Deployment",
            "name": "app-backend-v2",
            "namespace": LESSON_NS,
            "jsonpath": "{.spec.replicas}",
            "equals": 1,
        },
        {"type": "pods-ready", "namespace": LESSON_NS, "selector": "app=app-backend,version=v2"},
        {
            "type": "field-equals",
            "api_version": "v1",
            "kind": "Namespace",
            "name": LESSON_NS,
            "jsonpath": "{.metadata.labels.istio-injection}",
            "equals": "enabled",
        },
        {
            "type": "resource-exists",
            "api_version": "networking.istio.io/v1",
            "kind": "VirtualService",
            "name": "app-backend",
            "namespace": LESSON_NS,
        },
    ]
    text = {"en": "x", "pt": "x"}

    def exercise(ex_id: str, checks: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": ex_id,
            "title": text,
            "instructions": text,
            "hints": [text],
            "solve": "solve.sh",
            "checks": checks,
        }

    return Lesson.model_validate(
        {
            "id": "bench",
            "title": text,
            "summary": text,
            "exercises": [exercise("first", checks_a), exercise("second", checks_b)],
        }
    )


def student_objects(namespace: str) -> list[tuple[str, dict[str, Any]]]:
    meta = {"namespace": namespace}
    pods = [
        (
            "pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    **meta,
                    "name": f"app-backend-{v}-x",
                    "labels": {"app": "app-backend", "version": v},
                },
                "spec": {
                    "containers": [
                        {"name": "app", "image": f"app:{v}"},
                        {"name": "istio-proxy", "image": "proxyv2"},
                    ]
                },
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
            },
        )
        for v in ("v1", "v2")
    ]
    route = [
        {"destination": {"host": "app-backend", "subset": v}, "weight": w}
        for v, w in (("v1", 0), ("v2", 100))
    ]
    return [
        (
            "namespaces",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace, "labels": {"istio-injection": "enabled"}},
            },
        ),
        (
            "services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {**meta, "name": "app-backend"},
                "spec": {"selector": {"app": "app-backend"}, "ports": [{"port": 80}]},
            },
        ),
        (
            "deployments",
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {**meta, "name": "app-backend-v2"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "a"}},
                    "template": {
                        "metadata": {"labels": {"app": "a"}},
                        "spec": {"containers": [{"name": "a", "image": "a"}]},
                    },
                },
            },
        ),
        (
            "destinationrules",
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {**meta, "name": "app-backend"},
                "spec": {
                    "host": "app-backend",
                    "subsets": [
                        {"name": "v1", "labels": {"version": "v1"}},
                        {"name": "v2", "labels": {"version": "v2"}},
                    ],
                },
            },
        ),
        (
            "virtualservices",
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {**meta, "name": "app-backend"},
                "spec": {"hosts": ["app-backend"], "http": [{"route": route}]},
            },
        ),
        *pods,
    ]


def main() -> int:
    from kubelab.checks.registry import CheckContext
    from kubelab.checks.result import Status
    from kubelab.classroom.grade import GradeOptions, grade_class
    from kubelab.classroom.roster import Student
    from kubelab.sandbox import resources
    from kubelab.sandbox.threaded import ThreadedApi

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--students", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds added per answer")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    graded = lesson()
    students = [
        Student(f"s{n:03d}", f"Student {n}", f"s{n}@example.org")
        for n in range(1, args.students + 1)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        api = ThreadedApi(Path(tmp), latency=args.latency)
        try:
            by_plural = {rt.plural: rt for rt in resources.RESOURCE_TYPES if rt.version in ("v1",)}
            for student in students:
                for plural, doc in student_objects(student.namespace(LESSON_NS)):
                    api.record(by_plural[plural], doc)
            kube = api.kube()

            def no_traffic(spec: Any) -> Any:
                raise AssertionError("no traffic checks in this benchmark")

            ctx = CheckContext(kube, sampler=no_traffic)
            kube.version()  # connect and warm up discovery outside the timings
            times = {}
            for label, concurrency in (("serial", 1), ("concurrent", args.concurrency)):
                started = time.perf_counter()
                grade = grade_class(
                    graded,
                    students,
                    graded.exercises,
                    ctx,
                    LESSON_NS,
                    GradeOptions(concurrency=concurrency),
                )
                times[label] = time.perf_counter() - started
                checks = [c for s in grade.students for e in s.exercises for c in e.checks]
                assert len(checks) == 10 * len(students), len(checks)
                bad = [c for c in checks if c.status is not Status.PASSED]
                assert not bad, bad[:3]
                print(
                    f"{label:<11} concurrency {concurrency:>3}: {times[label]:6.2f} s "
                    f"for {len(checks)} checks"
                )
        finally:
            api.close()
    ratio = times["concurrent"] / times["serial"]
    verdict = "within" if ratio < 0.10 else "OVER"
    print(
        f"concurrent / serial = {ratio:.1%} ({verdict} the 10% budget); "
        f"{args.students} students, {args.latency * 1000:.0f} ms latency"
    )
    return 0 if ratio < 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
