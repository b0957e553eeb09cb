"""Rendered objects are validated like a strict API server would: core and CRD kinds."""

from __future__ import annotations

import json

import pytest
from support import ROOT, SHARED

from kubelab.validation.manifests import crd_kinds, validate_object


def _vs(**route_extra):
    route = {"destination": {"host": "app-backend", "subset": "v1"}, "weight": 90, **route_extra}
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "app-backend", "namespace": "istio"},
        "spec": {"hosts": ["app-backend"], "http": [{"route": [route]}]},
    }


def test_valid_virtualservice_passes():
    assert validate_object(_vs()) == []


def test_unknown_field_in_crd_kind_is_reported_with_its_path():
    problems = validate_object(_vs(wieght=10), "vs.yaml")
    assert [(p.path, p.obj) for p in problems] == [
        ("spec.http[0].route[0]", "VirtualService/app-backend")
    ]
    assert "'wieght' was unexpected" in problems[0].message


def test_wrong_type_in_crd_kind():
    obj = _vs()
    obj["spec"]["http"][0]["route"][0]["weight"] = "ninety"
    problems = validate_object(obj)
    assert problems and problems[0].path == "spec.http[0].route[0].weight"


def test_bad_metadata_name_in_crd_kind():
    obj = _vs()
    obj["metadata"]["name"] = "App_Backend"
    assert [p.path for p in validate_object(obj)] == ["metadata.name"]


def test_core_kind_reports_every_problem():
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "replicas": "two",
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicy2": "x"}]},
            },
        },
    }
    paths = [p.path for p in validate_object(deployment)]
    assert paths == ["spec.replicas", "spec.template.spec.containers[0]"]


def test_unknown_kind_is_a_problem_not_a_pass():
    problems = validate_object({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {}})
    assert "no schema" in problems[0].message


@pytest.mark.parametrize(
    "group_version,kinds",
    [
        ("networking.istio.io/v1", {"VirtualService", "DestinationRule", "Gateway"}),
        ("flagger.app/v1beta1", {"Canary", "MetricTemplate"}),
        ("argoproj.io/v1alpha1", {"Rollout", "AnalysisTemplate", "AnalysisRun"}),
    ],
)
def test_kept_crd_schemas_cover_the_lessons_kinds(group_version, kinds):
    assert kinds <= set(crd_kinds()[group_version])


@pytest.mark.skipif(not (SHARED / "schemas" / "crds").is_dir(), reason="../shared not present")
def test_kept_crd_schemas_match_upstream():
    """The copies under kubelab/validation/crds are what scripts/sync-crd-schemas.py makes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "sync_crd_schemas", ROOT / "scripts" / "sync-crd-schemas.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.render(module.extract(SHARED / "schemas" / "crds"))
    target = ROOT / "kubelab" / "validation" / "crds"
    assert {p.name for p in target.glob("*.json")} == set(expected)
    for name, text in expected.items():
        assert json.loads((target / name).read_text()) == json.loads(text), name
