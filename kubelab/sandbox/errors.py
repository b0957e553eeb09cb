"""The sandbox API's errors: :class:`ApiError` carries the Kubernetes ``Status`` that
kube-apiserver answers with, and the constructors below build the usual ones (404
NotFound, 409 AlreadyExists and Conflict, 422 Invalid with field causes, 400
BadRequest, 415 for an unsupported patch type)."""

from __future__ import annotations

import re
from typing import Any

from kubelab.sandbox import resources
from kubelab.sandbox.admission import Cause
from kubelab.sandbox.resources import ResourceType


class ApiError(Exception):
    """A failed API request, carrying the Kubernetes ``Status`` the server answers with."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if not self.reason:
            del out["reason"]  # omitempty, as a webhook's denial has none
        if self.details is not None:
            out["details"] = self.details
        return out

    def __repr__(self) -> str:
        return f"ApiError({self.code}, {self.reason!r}, {self.message!r})"


def not_found(rt: ResourceType, name: str) -> ApiError:
    details = status_details(rt, name, rt.plural)
    return ApiError(404, "NotFound", f'{rt.group_resource} "{name}" not found', details)


def already_exists(rt: ResourceType, name: str) -> ApiError:
    details = status_details(rt, name, rt.plural)
    message = f'{rt.group_resource} "{name}" already exists'
    return ApiError(409, "AlreadyExists", message, details)


def conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    details = status_details(rt, name, rt.plural)
    message = f'Operation cannot be fulfilled on {rt.group_resource} "{name}": {why}'
    return ApiError(409, "Conflict", message, details)


STALE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def invalid(rt: ResourceType, name: str, problems: list[str] | list[Cause]) -> ApiError:
    """422 Invalid; kubectl prints ``The <Kind> "<name>" is invalid: <problems>``."""
    joined = ", ".join(str(p) for p in problems)
    joined = joined if len(problems) == 1 else f"[{joined}]"
    causes = []
    for problem in problems:
        if isinstance(problem, Cause):
            cause = {"reason": problem.reason, "message": problem.message, "field": problem.field}
            causes.append(cause)
            continue
        field, sep, message = problem.partition(": ")
        # "spec.x: Required value" -> a cause with a field, as the API server reports it.
        if sep and re.fullmatch(r"[A-Za-z0-9_.\[\]/-]+", field):
            causes.append({"reason": "FieldValueInvalid", "message": message, "field": field})
        else:
            causes.append({"reason": "FieldValueInvalid", "message": problem})
    details = {**status_details(rt, name, rt.kind), "causes": causes}
    return ApiError(422, "Invalid", f'{rt.qualified_kind} "{name}" is invalid: {joined}', details)


def status_details(rt: ResourceType, name: str, kind: str) -> dict[str, Any]:
    """A Status's details: the group is left out for the core group, as Go's omitempty."""
    details = {"name": name, "group": rt.group, "kind": kind}
    if not rt.group:
        del details["group"]
    return details


def invalid_options(problem: str) -> ApiError:
    """422 for bad PatchOptions (a missing fieldManager for apply)."""
    message = f'PatchOptions.meta.k8s.io "" is invalid: {problem}'
    field, _, why = problem.partition(": ")
    cause = {"reason": "FieldValueRequired", "message": why, "field": field}
    details = {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [cause]}
    return ApiError(422, "Invalid", message, details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unprocessable(message: str) -> ApiError:
    """A 422 without details: kubectl prints ``The request is invalid: <message>``."""
    return ApiError(422, "Invalid", message)


def namespace_not_found(namespace: str) -> ApiError:
    return not_found(resources.NAMESPACES, namespace)


def name_mismatch(in_body: Any, in_url: str) -> ApiError:
    return bad_request(
        f"the name of the object ({in_body}) does not match the name on the URL ({in_url})"
    )
