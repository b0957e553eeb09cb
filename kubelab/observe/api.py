"""How ``kubelab graph`` and ``kubelab traces`` reach a component's HTTP API."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from kubelab.errors import SetupError, UsageError
from kubelab.i18n import _

# GET path?params -> the answer's body (text)
Getter = Callable[[str, dict[str, str]], str]

_DIRECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class ComponentApi:
    """A component's API: ``get(path, params)`` and where it is, for messages."""

    get: Getter
    where: str


def direct(url: str, timeout: float = _DIRECT_TIMEOUT) -> ComponentApi:
    """The API at ``url`` (e.g. a port-forward: ``http://127.0.0.1:8428``)."""
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise UsageError(
            _("{url} is not an http:// or https:// URL").format(url=url),
            hint=_("For example: --url http://127.0.0.1:8428 (after a kubectl port-forward)."),
        )

    def get(path: str, params: dict[str, str]) -> str:
        query = urllib.parse.urlencode(params)
        target = f"{base}/{path.lstrip('/')}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(target, timeout=timeout) as response:
                return str(response.read().decode("utf-8", errors="replace"))
        except urllib.error.HTTPError as exc:
            # Prometheus-API errors come as 4xx with a JSON body that says why.
            return str(exc.read().decode("utf-8", errors="replace"))
        except (urllib.error.URLError, OSError) as exc:
            raise SetupError(
                _("cannot reach {url}: {error}").format(url=base, error=exc),
                hint=_("Check the URL, and that the port-forward still runs."),
            ) from exc

    return ComponentApi(get, base)


# Where a view of a URL given by hand looks when no lesson runs: the course's namespace.
COURSE_NAMESPACE = "istio"


def namespace_of(lesson: str | None, url: str | None) -> str:
    """The running (or named) lesson's namespace (a student's own in a class); the
    course's when a URL is given by hand and no lesson runs."""
    from kubelab.lessons.session import open_session, running_lessons
    from kubelab.state import StateStore

    store = StateStore()
    if url is not None and lesson is None and not running_lessons(store.load()):
        return COURSE_NAMESPACE
    return open_session(store, lesson).namespace


def lesson_api(component: str, lesson: str | None) -> ComponentApi:
    """``component``'s API on the running lesson's cluster, through the API server's
    service proxy (as the checks reach it)."""
    from kubelab.components.catalog import CATALOG
    from kubelab.lessons.runner import check_context
    from kubelab.lessons.session import open_session
    from kubelab.providers import get_provider
    from kubelab.state import StateStore

    session = open_session(StateStore(), lesson)
    record = session.record
    if not session.deployed or not record.provider:
        raise UsageError(
            _("lesson {lesson} is not running").format(lesson=session.loaded.lesson.id),
            hint=f"kubelab up {session.loaded.lesson.id} --provider sandbox",
        )
    provider = get_provider(record.provider)
    ctx = check_context(provider, record)
    name = CATALOG[component].title if component in CATALOG else component
    if component not in ctx.services:
        raise SetupError(
            _("{component} is not available on the {provider} cluster").format(
                component=name, provider=record.provider
            ),
            hint=provider.missing_component_hint(component),
        )
    namespace, service, port = ctx.services[component]

    def get(path: str, params: dict[str, str]) -> str:
        return ctx.kube.service_proxy_get(namespace, service, port, path, params)

    where = f"{name} ({namespace}/{service}:{port}, service proxy)"
    if provider.offline:  # the sandbox answers at the component's address with a stand-in
        stand_ins = {"victoria-metrics": "Prometheus", "jaeger": _("span receiver")}
        where = _("the sandbox's {stand_in} (at {where})").format(
            stand_in=stand_ins.get(component, name), where=f"{namespace}/{service}:{port}"
        )
    return ComponentApi(get, where)
