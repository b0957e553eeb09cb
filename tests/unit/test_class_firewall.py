"""``kubelab class create --allow-from``: only a Hetzner cluster kubelab made has a firewall
kubelab manages; without the flag there, the instructor is told the students are shut out."""

from __future__ import annotations

import pytest

from kubelab.cli.classroom import _open_api
from kubelab.errors import UsageError
from kubelab.state import LessonRecord, StateStore

LESSON = "istio-traffic-splitting"


def _lesson_on(provider: str) -> None:
    with StateStore().transaction() as state:
        state.lessons[LESSON] = LessonRecord(
            lesson=LESSON, provider=provider, details={"cluster": "lab"}
        )


def test_allow_from_is_refused_where_kubelab_has_no_firewall() -> None:
    _lesson_on("existing")
    with pytest.raises(UsageError, match="this lesson runs on existing"):
        _open_api(LESSON, ["198.51.100.0/24"])
    assert _open_api(LESSON, []) is None  # nothing to say: not kubelab's firewall


def test_a_hetzner_class_without_allow_from_is_warned() -> None:
    _lesson_on("hetzner")
    line = _open_api(LESSON, [])
    assert line is not None and "answers only your address" in line
    assert "--allow-from CIDR" in line and "lab" in line


def test_a_lesson_up_with_existing_on_a_hetzner_cluster_kubelab_made_counts() -> None:
    """README's cloud flow: `cluster create --provider hetzner`, then `up --provider
    existing` with that cluster's kubeconfig: its firewall is kubelab's all the same."""
    from kubelab.state import ClusterRecord

    with StateStore().transaction() as state:
        state.clusters["class-a"] = ClusterRecord(
            name="class-a", provider="hetzner", kubeconfig="/k/class-a/kubeconfig"
        )
        state.lessons[LESSON] = LessonRecord(
            lesson=LESSON, provider="existing", details={"kubeconfig": "/k/class-a/kubeconfig"}
        )
    line = _open_api(LESSON, [])
    assert line is not None and "Hetzner cluster class-a" in line
