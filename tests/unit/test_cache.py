"""kubelab's cache of pure work (kubelab/cache.py): a result is reused only for exactly the
inputs it was made from, failures and secrets are never kept, and a broken cache only
costs the work again."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kubelab import cache, paths
from kubelab.cluster import helm
from kubelab.errors import ValidationFailed
from kubelab.lessons import index, loader
from kubelab.validation import manifests
from tests.support import ROOT

CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}


def _count_calls(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    calls: list[int] = []
    real = getattr(module, name)

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def _touch_later(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


# -- the lesson listing ---------------------------------------------------------------------


@pytest.fixture
def labs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "labs"
    shutil.copytree(ROOT / "labs", copy)
    monkeypatch.setenv("KUBELAB_LABS_DIR", str(copy))
    return copy


def test_the_listing_is_validated_once_then_again_after_a_change(labs, monkeypatch):
    calls = _count_calls(monkeypatch, loader, "available_lessons")
    first = index.lesson_listing()
    assert [e["id"] for e in first] == sorted(p.name for p in labs.iterdir())
    assert index.lesson_listing() == first and len(calls) == 1
    # Any file of a lesson (here a solve script) changes the key.
    _touch_later(next((labs / "argo-rollouts" / "solve").iterdir()))
    assert index.lesson_listing() == first and len(calls) == 2
    # So does a lesson folder that appears.
    shutil.copytree(labs / "flagger-canary", labs / "flagger-copy")
    with pytest.raises(ValidationFailed, match="flagger-copy"):
        index.lesson_listing()  # its id does not match its folder: reported, not hidden


def test_an_invalid_lesson_is_reported_every_time(labs):
    file = labs / "istio-traffic-splitting" / "lesson.yaml"
    file.write_text(file.read_text().replace("exercises:", "exercises_typo:", 1))
    for _ in range(2):
        with pytest.raises(ValidationFailed, match="istio-traffic-splitting"):
            index.lesson_listing()


def test_a_cache_that_cannot_be_written_costs_only_the_work(labs, monkeypatch):
    (paths.home_dir() / "cache").write_text("not a folder")
    calls = _count_calls(monkeypatch, loader, "available_lessons")
    assert index.lesson_listing() == index.lesson_listing()
    assert len(calls) == 2


# -- helm template --------------------------------------------------------------------------

FAKE_HELM = """#!/bin/sh
echo run >> "{log}"
cat <<'EOF'
apiVersion: v1
kind: {kind}
metadata:
  name: rendered
EOF
"""


@pytest.fixture
def fake_helm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A helm that logs each run and renders one object of the kind asked for."""
    bin_dir, log = tmp_path / "bin", tmp_path / "helm.log"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def install(kind: str = "ConfigMap") -> Path:
        script = bin_dir / "helm"
        script.write_text(FAKE_HELM.format(log=log, kind=kind))
        script.chmod(0o755)
        return log

    return install


def _runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_a_rendering_is_reused_only_for_the_same_chart_values_and_helm(tmp_path, fake_helm):
    log = fake_helm()
    chart = tmp_path / "chart"
    chart.mkdir()
    (chart / "Chart.yaml").write_text("name: c\n")
    first = helm.template(chart, "r", "ns", {"a": 1})
    assert helm.template(chart, "r", "ns", {"a": 1}) == first and _runs(log) == 1
    helm.template(chart, "r", "ns", {"a": 2})  # other values
    helm.template(chart, "r", "other", {"a": 1})  # other namespace
    assert _runs(log) == 3
    _touch_later(chart / "Chart.yaml")  # the chart changed
    helm.template(chart, "r", "ns", {"a": 1})
    assert _runs(log) == 4
    fake_helm()  # another helm binary (rewritten: new size or time)
    _touch_later(Path(helm.require_tool("helm")))
    helm.template(chart, "r", "ns", {"a": 1})
    assert _runs(log) == 5


def test_secrets_are_never_kept(tmp_path, fake_helm):
    log = fake_helm()
    chart = tmp_path / "chart"
    chart.mkdir()
    for _ in range(2):
        helm.template(chart, "r", "ns", {"admin": {"password": "s3cret-value"}})
    assert _runs(log) == 2
    log = fake_helm("Secret")
    for _ in range(2):
        helm.template(chart, "r", "ns", {})
    assert _runs(log) == 4
    kept = paths.home_dir() / "cache" / "helm-template"
    assert not kept.exists() or list(kept.iterdir()) == []


# -- validation -----------------------------------------------------------------------------


def test_a_valid_object_is_checked_once_and_an_invalid_one_every_time(monkeypatch):
    calls = _count_calls(monkeypatch, manifests, "validate_object")
    assert manifests.validate_objects([("a.yaml", CONFIGMAP)]) == []
    assert manifests.validate_objects([("a.yaml", CONFIGMAP)]) == []
    assert len(calls) == 1
    changed = {**CONFIGMAP, "data": {"k": "v"}}
    assert manifests.validate_objects([("a.yaml", changed)]) == []
    assert len(calls) == 2
    wrong = {**CONFIGMAP, "data": {"k": 1}, "extra": True}
    for _ in range(2):
        problems = manifests.validate_objects([("b.yaml", wrong)])
        assert "data.k" in {p.path for p in problems}
        assert any("extra" in p.message for p in problems)  # unknown field
    assert len(calls) == 4


def test_keys_depend_on_every_part_and_its_boundaries():
    assert cache.digest("ab", "c") != cache.digest("a", "bc")
    assert cache.digest("a") == cache.digest("a")
