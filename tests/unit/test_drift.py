"""Field-level differences between a live object and the lesson's rendering, and owners."""

from __future__ import annotations

from kubelab.cluster.drift import Drift, differences, owners


def test_differences_name_each_changed_field():
    want = {"spec": {"http": [{"route": [{"weight": 90}, {"weight": 10}]}], "hosts": ["a"]}}
    live = {
        "spec": {"http": [{"route": [{"weight": 0}, {"weight": 100}]}], "hosts": ["a"]},
        "status": {},
    }
    assert differences(live, want) == [
        (("spec", "http", 0, "route", 0, "weight"), 0, 90),
        (("spec", "http", 0, "route", 1, "weight"), 100, 10),
    ]
    assert differences(want, want) == []


def test_extra_live_fields_are_no_difference_and_lists_of_another_length_are_one():
    assert differences({"a": 1, "b": 2}, {"a": 1}) == []
    assert differences({"l": [1, 2, 3]}, {"l": [1, 4]}) == [(("l",), [1, 2, 3], [1, 4])]
    assert differences({"a": None}, {"a": 1}) == [(("a",), None, 1)]
    assert differences({}, {"a": {"b": 1}}) == [(("a",), None, {"b": 1})]


def test_owners_read_managed_fields():
    live = {
        "metadata": {
            "managedFields": [
                {"manager": "kubelab", "fieldsV1": {"f:spec": {"f:http": {}}}},
                {"manager": "kubectl-patch", "fieldsV1": {"f:spec": {"f:http": {}}}},
                {"manager": "flagger", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            ]
        }
    }
    path = ("spec", "http", 0, "route", 0, "weight")
    assert owners(live, path, "kubelab") == ("kubectl-patch",)
    assert owners(live, ("spec", "replicas"), "kubelab") == ("flagger",)
    assert owners({}, path, "kubelab") == ()


def test_a_drift_describes_itself_and_knows_controllers_from_kubectl():
    drift = Drift(("spec", "http", 0, "route", 0, "weight"), 0, 90, ("kubectl-patch",))
    assert drift.where == "spec.http[0].route[0].weight"
    assert (
        drift.describe()
        == "spec.http[0].route[0].weight is 0, the lesson has 90 (by kubectl-patch)"
    )
    assert not drift.by_controller
    assert Drift(("spec", "replicas"), 0, 1, ("flagger",)).by_controller
    assert not Drift(("spec", "replicas"), 0, 1).by_controller
