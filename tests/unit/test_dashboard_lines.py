"""What `up` and its dry-run say about where each dashboard is and how to log in."""

from __future__ import annotations

from kubelab.cli.up import dashboard_lines
from kubelab.components.values import InstallSettings
from kubelab.lessons.loader import find_lesson

LESSON = find_lesson("istio-traffic-splitting")


def test_without_a_domain_every_dashboard_is_a_port_forward() -> None:
    lines = dashboard_lines(LESSON, InstallSettings())
    assert lines[0].startswith("dashboards: kubelab open ")
    assert "kiali" in lines[0] and "jaeger" in lines[0]
    assert not any(line.startswith("public:") for line in lines)
    assert "Kiali asks for a token (view only): `kubelab open kiali` writes one." in lines


def test_a_domain_serves_gitea_and_says_what_it_does_not_serve() -> None:
    lines = dashboard_lines(LESSON, InstallSettings(domain="lab.example.org"))
    assert "public:     http://gitea.lab.example.org/" in lines
    (hidden,) = [line for line in lines if line.startswith("not exposed")]
    assert "kiali" in hidden and "jaeger" in hidden and "--expose-dashboards" in hidden


def test_exposed_dashboards_are_kiali_over_tls_and_never_jaeger() -> None:
    settings = InstallSettings(
        domain="lab.example.org", tls=True, email="t@example.org", expose_dashboards=True
    )
    lines = dashboard_lines(LESSON, settings)
    (public,) = [line for line in lines if line.startswith("public:")]
    assert "https://kiali.lab.example.org/" in public and "jaeger" not in public
    assert any("kubelab open kiali --token-only" in line for line in lines)
    (hidden,) = [line for line in lines if line.startswith("not exposed")]
    assert "jaeger" in hidden and "no login of their own" in hidden
