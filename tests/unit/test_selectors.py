"""Label selectors as kubectl -l understands them."""

from __future__ import annotations

import pytest

from kubelab.k8s.selectors import matches, parse


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=app-backend", {"app": "app-backend"}, True),
        ("app==app-backend", {"app": "app-backend"}, True),
        ("app=app-backend,version=v1", {"app": "app-backend", "version": "v2"}, False),
        ("version!=v1", {"version": "v2"}, True),
        ("version!=v1", {}, True),
        ("version in (v1, v2)", {"version": "v2"}, True),
        ("version notin (v1,v2)", {"version": "v2"}, False),
        ("app", {"app": "x"}, True),
        ("!app", {"app": "x"}, False),
        ("app.kubernetes.io/name=kiali", {"app.kubernetes.io/name": "kiali"}, True),
        ("", {"anything": "x"}, True),
    ],
)
def test_matches(selector, labels, expected):
    assert matches(selector, labels) is expected


@pytest.mark.parametrize("bad", ["app in v1", "=v1", "app=a b", "version in ()", "a,,b"])
def test_bad_selectors_name_the_bad_part(bad):
    with pytest.raises(ValueError, match="invalid label selector"):
        parse(bad)
