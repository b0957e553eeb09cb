"""The four patch types of the sandbox API, and kube-apiserver's errors for them: the
algorithms are kubelab.k8s.patch's, their failures become the Status answers (400 for a
malformed patch, 422 for one that does not fit the object)."""

from __future__ import annotations

from typing import Any

from kubelab.k8s import patch as algorithms
from kubelab.sandbox.errors import ApiError

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)
# kubectl's --type names, accepted by Store.patch for convenience.
PATCH_ALIASES = {
    "json": JSON_PATCH,
    "merge": MERGE_PATCH,
    "strategic": STRATEGIC_MERGE_PATCH,
    "apply": APPLY_PATCH,
}


def _api_error(error: algorithms.PatchError) -> ApiError:
    return ApiError(error.code, "Invalid" if error.code == 422 else "BadRequest", error.message)


def apply_json_patch(doc: Any, patch: Any) -> Any:
    try:
        return algorithms.apply_json_patch(doc, patch)
    except algorithms.PatchError as error:
        raise _api_error(error) from None


def apply_merge_patch(target: Any, patch: Any) -> Any:
    try:
        return algorithms.apply_merge_patch(target, patch)
    except algorithms.PatchError as error:
        raise _api_error(error) from None


def strategic_merge(original: Any, patch: Any) -> Any:
    try:
        return algorithms.strategic_merge(original, patch)
    except algorithms.PatchError as error:
        raise _api_error(error) from None


def unsupported_patch(*, strategic: bool) -> ApiError:
    """415 for a patch content type the resource does not take (strategic: whether
    strategic merge is one it takes)."""
    accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH]
    if strategic:
        accepted.insert(2, STRATEGIC_MERGE_PATCH)
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{', '.join(accepted)}",
    )
