"""The patch algorithms of the Kubernetes API: JSON patch (RFC 6902), JSON merge patch
(RFC 7386) and strategic merge patch (lists merged by key, ``$patch`` and
``$setElementOrder`` directives). Pure functions on JSON data; a bad patch is a
:class:`PatchError` with the status code kube-apiserver answers (400 or 422)."""

from __future__ import annotations

import re
from typing import Any

from kubelab.k8s.data import copy_json, json_equal


class PatchError(ValueError):
    """A patch that cannot be applied: ``code`` is 400 (malformed) or 422 (it does not fit)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def bad_request(message: str) -> PatchError:
    return PatchError(message, 400)


def unprocessable(message: str) -> PatchError:
    return PatchError(message, 422)


_MISSING = object()


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str):
        raise bad_request(f"json patch: path must be a string, got {path!r}")
    if path == "":
        return []
    if not path.startswith("/"):
        raise unprocessable(f'json patch: invalid pointer "{path}": must start with "/"')
    tokens = path[1:].split("/")
    for token in tokens:
        if re.search(r"~(?![01])", token):
            raise unprocessable(f'json patch: invalid pointer "{path}": bad "~" escape')
    return [t.replace("~1", "/").replace("~0", "~") for t in tokens]


def _index(token: str, size: int, path: str, *, append_ok: bool) -> int:
    if append_ok and token == "-":
        return size
    if not re.fullmatch(r"0|[1-9][0-9]*", token):
        raise unprocessable(f'json patch: "{path}": "{token}" is not an array index')
    index = int(token)
    if index > size or (index == size and not append_ok):
        raise unprocessable(f'json patch: "{path}": index {index} out of bounds')
    return index


def _container(doc: Any, tokens: list[str], path: str) -> Any:
    """The value holding the last token of ``tokens`` (which must exist)."""
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise unprocessable(f'json patch: "{path}": path does not exist ("{token}")')
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(token, len(node), path, append_ok=False)]
        else:
            raise unprocessable(f'json patch: "{path}": cannot descend into a scalar')
    return node


def _jp_get(doc: Any, tokens: list[str], path: str) -> Any:
    if not tokens:
        return doc
    parent = _container(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise unprocessable(f'json patch: "{path}": path does not exist')
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(last, len(parent), path, append_ok=False)]
    raise unprocessable(f'json patch: "{path}": path does not exist')


def _jp_add(doc: Any, tokens: list[str], value: Any, path: str) -> Any:
    if not tokens:
        return value
    parent = _container(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(last, len(parent), path, append_ok=True), value)
    else:
        raise unprocessable(f'json patch: "{path}": parent is not an object or array')
    return doc


def _jp_remove(doc: Any, tokens: list[str], path: str) -> tuple[Any, Any]:
    if not tokens:
        raise unprocessable('json patch: cannot remove the whole document ("")')
    parent = _container(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise unprocessable(f'json patch: remove "{path}": path does not exist')
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(last, len(parent), path, append_ok=False))
    raise unprocessable(f'json patch: remove "{path}": path does not exist')


def apply_json_patch(doc: Any, patch: Any) -> Any:
    """RFC 6902 on a copy of ``doc``; all-or-nothing. 400 for a malformed patch, 422 when
    an operation does not apply (missing path, failed ``test``)."""
    if not isinstance(patch, list):
        raise bad_request("json patch: the patch must be a JSON array of operations")
    doc = copy_json(doc)
    for number, op in enumerate(patch):
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise bad_request(f"json patch: operation {number} is not an object with an op")
        kind, path = op["op"], op.get("path", _MISSING)
        if path is _MISSING:
            raise bad_request(f'json patch: operation {number} ("{kind}") has no path')
        tokens = _pointer(path)
        if kind in ("add", "replace", "test") and "value" not in op:
            raise bad_request(f'json patch: operation {number} ("{kind}") has no value')
        if kind == "add":
            doc = _jp_add(doc, tokens, copy_json(op["value"]), path)
        elif kind == "remove":
            doc, _ = _jp_remove(doc, tokens, path)
        elif kind == "replace":
            if not tokens:
                doc = copy_json(op["value"])
                continue
            _jp_get(doc, tokens, path)  # must exist
            parent = _container(doc, tokens, path)
            if isinstance(parent, dict):
                parent[tokens[-1]] = copy_json(op["value"])
            else:
                parent[_index(tokens[-1], len(parent), path, append_ok=False)] = copy_json(
                    op["value"]
                )
        elif kind in ("move", "copy"):
            source = op.get("from", _MISSING)
            if source is _MISSING:
                raise bad_request(f'json patch: operation {number} ("{kind}") has no from')
            from_tokens = _pointer(source)
            if kind == "move":
                if from_tokens == tokens:
                    _jp_get(doc, tokens, path)
                    continue
                if tokens[: len(from_tokens)] == from_tokens:
                    raise unprocessable(
                        f'json patch: cannot move "{source}" into its own child "{path}"'
                    )
                doc, value = _jp_remove(doc, from_tokens, source)
            else:
                value = copy_json(_jp_get(doc, from_tokens, source))
            doc = _jp_add(doc, tokens, value, path)
        elif kind == "test":
            if not json_equal(_jp_get(doc, tokens, path), op["value"]):
                raise unprocessable(f'json patch: test of "{path}" failed')
        else:
            raise bad_request(f'json patch: unknown operation "{kind}"')
    return doc


# --------------------------------------------------------------------------- merge patches


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; returns a new value, ``target`` is untouched."""
    if not isinstance(patch, dict):
        return copy_json(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return copy_json(result)


# Lists merged by key instead of replaced, as in the Kubernetes API types' patchMergeKey
# (approximated by field name: container ports merge by containerPort, Service ports by port).
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "ports": ("containerPort", "port"),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "conditions": ("type",),
    "hostAliases": ("ip",),
    "ownerReferences": ("uid",),
    "resourceClaims": ("name",),
    "secrets": ("name",),
}
# Lists of scalars merged as sets (patchStrategy merge).
MERGE_SETS = frozenset({"finalizers"})

_DELETE = object()


def _is_directive(key: str) -> bool:
    return key in ("$patch", "$retainKeys") or key.startswith(
        ("$setElementOrder/", "$deleteFromPrimitiveList/")
    )


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not _is_directive(k)}
    if isinstance(value, list):
        return [
            _strip_directives(v)
            for v in value
            if not (isinstance(v, dict) and v.get("$patch") in ("replace", "delete"))
        ]
    return value


def _item_key(item: Any, keys: tuple[str, ...]) -> tuple[str, Any] | None:
    if not isinstance(item, dict):
        return None
    for key in keys:
        if key in item:
            return (key, item[key])
    return None


def _merge_list(original: list[Any], patch: list[Any], field: str) -> list[Any]:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        kept = [p for p in patch if not (isinstance(p, dict) and p.get("$patch") == "replace")]
        return [copy_json(_strip_directives(p)) for p in kept]
    if field in MERGE_SETS:
        out = list(original)
        out.extend(copy_json(p) for p in patch if p not in out)
        return out
    keys = MERGE_KEYS[field]
    result = list(original)
    for item in patch:
        key = _item_key(item, keys)
        if key is None:
            result.append(copy_json(_strip_directives(item)))
            continue
        at = next((i for i, o in enumerate(result) if _item_key(o, (key[0],)) == key), None)
        if isinstance(item, dict) and item.get("$patch") == "delete":
            result = [o for o in result if _item_key(o, (key[0],)) != key]
        elif at is None:
            result.append(strategic_merge({}, item))
        else:
            result[at] = strategic_merge(result[at], item)
    return result


def _reorder(items: list[Any], order: list[Any], field: str) -> list[Any]:
    """Apply ``$setElementOrder``: listed elements in that order, the others after."""
    keys = MERGE_KEYS.get(field)

    def ident(value: Any) -> Any:
        return _item_key(value, keys) if keys else value

    wanted = [ident(o) for o in order]
    ranked = [i for w in wanted for i in items if ident(i) == w]
    return ranked + [i for i in items if ident(i) not in wanted]


def strategic_merge(original: Any, patch: Any) -> Any:
    """Kubernetes strategic merge patch, approximated: maps merge, ``null`` deletes, lists
    named in :data:`MERGE_KEYS` merge by key, other lists are replaced; ``$patch``
    (replace/delete), ``$retainKeys``, ``$setElementOrder`` and
    ``$deleteFromPrimitiveList`` directives are honoured."""
    if not isinstance(patch, dict):
        return copy_json(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return copy_json(_strip_directives(patch))
    if directive == "delete":
        return _DELETE
    result = dict(original) if isinstance(original, dict) else {}
    orders: dict[str, list[Any]] = {}
    removals: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value if isinstance(value, list) else []
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            removals[key.split("/", 1)[1]] = value if isinstance(value, list) else []
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and (key in MERGE_KEYS or key in MERGE_SETS):
            current = result.get(key)
            result[key] = _merge_list(current if isinstance(current, list) else [], value, key)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy_json(_strip_directives(value))
    for field, values in removals.items():
        if isinstance(result.get(field), list):
            result[field] = [v for v in result[field] if v not in values]
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _reorder(result[field], order, field)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return copy_json(result)
