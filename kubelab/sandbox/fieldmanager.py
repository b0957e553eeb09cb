"""Field ownership (``metadata.managedFields``) and server-side apply, as kube-apiserver's
field manager does them (structured-merge-diff), for the sandbox store.

A field set is a set of paths. Each path is a tuple of elements, in the notation of
``fieldsV1``:

* ``f:name``: a field of a struct or map;
* ``k:{"name":"web"}``: the item of an associative list with that key;
* ``v:"x"``: the value of a set list;
* ``i:0``: an index (of lists of unknown kind).

A path names a leaf (a scalar, an atomic list, an empty map) or a list item. The list
kinds come from the schema: ``x-kubernetes-list-type`` and ``x-kubernetes-list-map-keys``
(kubernetes-validate's schemas for built-in kinds, the CRD's structural schema for
custom ones).

What it implements:

* :func:`apply`: the merge of an applied configuration into the live object, by list
  keys; conflicts with other managers (409, unless forced, when forcing takes the fields
  over); the removal of fields the applier applied before and no longer applies (unless
  another manager owns them); and the applier's ``Apply`` entry.
* :func:`track_update`: what a create, update or patch (an ``Update`` operation) does
  to ownership. The writer owns every field it changed, and the other managers lose
  them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from kubelab.k8s.data import now_rfc3339
from kubelab.sandbox import admission
from kubelab.sandbox.resources import ResourceType

Path = tuple[str, ...]
_MISSING: Any = object()

# Metadata no manager owns (identity and server-set fields).
_IGNORED_META = {
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
}


class ApplyConflict(Exception):
    """Fields another manager owns, with a different value."""

    def __init__(self, conflicts: list[tuple[str, str]]) -> None:
        self.conflicts = conflicts  # (manager description, field path)
        super().__init__(conflict_message(conflicts))


def conflict_message(conflicts: list[tuple[str, str]]) -> str:
    count = len(conflicts)
    head = f"Apply failed with {count} conflict{'s' if count > 1 else ''}: "
    managers: dict[str, list[str]] = {}
    for manager, field in conflicts:
        managers.setdefault(manager, []).append(field)
    if count == 1:
        manager, field = conflicts[0]
        return f"{head}conflict with {manager}: {field}"
    parts = []
    for manager, fields in managers.items():
        if len(fields) == 1:
            parts.append(f"conflict with {manager}: {fields[0]}")
        else:
            parts.append(f"conflicts with {manager}:\n" + "\n".join(f"- {f}" for f in fields))
    return head + "\n".join(parts)


# --------------------------------------------------------------------------- schema


class _Schema:
    def __init__(self, rt: ResourceType) -> None:
        found = admission.schema_of(rt)
        self.root, self.defs = found if found is not None else ({}, {})

    def resolve(self, node: Any) -> dict[str, Any]:
        return admission.resolve(self.defs, node)

    def child(self, node: Any, key: str) -> dict[str, Any]:
        node = self.resolve(node)
        props = node.get("properties") or {}
        if key in props:
            return self.resolve(props[key])
        extra = node.get("additionalProperties")
        return self.resolve(extra) if isinstance(extra, dict) else {}

    def items(self, node: Any) -> dict[str, Any]:
        return self.resolve(self.resolve(node).get("items"))

    def list_keys(self, node: Any) -> tuple[str, tuple[str, ...]]:
        node = self.resolve(node)
        kind = node.get("x-kubernetes-list-type")
        keys = node.get("x-kubernetes-list-map-keys")
        if kind == "map" and keys:
            return "map", tuple(keys)
        if kind == "set":
            return "set", ()
        merge_key = node.get("x-kubernetes-patch-merge-key")
        if merge_key and kind is None:
            return "map", (str(merge_key),)
        return "atomic", ()


def _key_element(item: dict[str, Any], keys: tuple[str, ...]) -> str:
    key = {k: item[k] for k in keys if k in item}
    return "k:" + json.dumps(key, separators=(",", ":"))


def _value_element(value: Any) -> str:
    return "v:" + json.dumps(value, separators=(",", ":"))


# --------------------------------------------------------------------------- field sets


def field_set(rt: ResourceType, obj: dict[str, Any]) -> set[Path]:
    """The paths of ``obj`` a manager can own (identity and status left out)."""
    schema = _Schema(rt)
    out: set[Path] = set()
    for key, value in obj.items():
        if key in ("apiVersion", "kind") or (key == "status" and "status" in rt.subresources):
            continue
        if key == "metadata" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in _IGNORED_META}
            if not value:
                continue
        _collect(schema, value, schema.child(schema.root, key), (f"f:{key}",), out)
    return out


def _collect(schema: _Schema, value: Any, node: dict[str, Any], path: Path, out: set[Path]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _collect(schema, item, schema.child(node, key), (*path, f"f:{key}"), out)
    elif isinstance(value, list) and value:
        kind, keys = schema.list_keys(node)
        if kind == "map" and all(isinstance(i, dict) for i in value):
            item_node = schema.items(node)
            for item in value:
                item_path = (*path, _key_element(item, keys))
                out.add(item_path)
                for key, field in item.items():
                    child = schema.child(item_node, key)
                    _collect(schema, field, child, (*item_path, f"f:{key}"), out)
        elif kind == "set":
            out.update((*path, _value_element(v)) for v in value)
        else:
            out.add(path)
    else:
        out.add(path)


def to_fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    members: list[dict[str, Any]] = []
    for path in sorted(paths):
        node = tree
        for element in path:
            node = node.setdefault(element, {})
        members.append(node)
    for node in members:
        if node and "." not in node:
            node["."] = {}
    return _sorted_tree(tree)


def _sorted_tree(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: _sorted_tree(tree[k]) for k in sorted(tree, key=lambda k: (k != ".", k))}


def from_fields_v1(tree: Any, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    if not isinstance(tree, dict):
        return out
    if prefix and (not tree or "." in tree):
        out.add(prefix)
    for element, child in tree.items():
        if element != ".":
            out |= from_fields_v1(child, (*prefix, element))
    return out


def path_string(path: Path) -> str:
    """``.spec.template.spec.containers[name="web"].image``, as conflicts name fields."""
    out = ""
    for element in path:
        kind, _, rest = element.partition(":")
        if kind == "f":
            out += f".{rest}"
        elif kind == "k":
            key = json.loads(rest)
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in key.items()) + "]"
        elif kind == "v":
            out += f"[={rest}]"
        else:
            out += f"[{rest}]"
    return out


# --------------------------------------------------------------------------- values


def _step(value: Any, element: str) -> Any:
    kind, _, rest = element.partition(":")
    if kind == "f":
        return value.get(rest, _MISSING) if isinstance(value, dict) else _MISSING
    if not isinstance(value, list):
        return _MISSING
    if kind == "k":
        key = json.loads(rest)
        for item in value:
            if isinstance(item, dict) and all(item.get(k) == v for k, v in key.items()):
                return item
        return _MISSING
    if kind == "v":
        wanted = json.loads(rest)
        return wanted if wanted in value else _MISSING
    index = int(rest) if rest.isdigit() else -1
    return value[index] if 0 <= index < len(value) else _MISSING


def value_at(obj: Any, path: Path) -> Any:
    for element in path:
        obj = _step(obj, element)
        if obj is _MISSING:
            return _MISSING
    return obj


def remove(obj: Any, path: Path) -> None:
    parent = value_at(obj, path[:-1])
    kind, _, rest = path[-1].partition(":")
    if kind == "f" and isinstance(parent, dict):
        parent.pop(rest, None)
    elif kind in ("k", "v") and isinstance(parent, list):
        target = _step(parent, path[-1])
        if target is not _MISSING:
            parent[:] = [i for i in parent if i is not target and not (kind == "v" and i == target)]


# --------------------------------------------------------------------------- merging


def merge(schema: _Schema, live: Any, config: Any, node: dict[str, Any]) -> Any:
    """``config`` merged into ``live``: maps by key, associative lists by item key, set
    lists as a union; anything else is replaced."""
    if isinstance(live, dict) and isinstance(config, dict):
        out = dict(live)
        for key, value in config.items():
            out[key] = merge(schema, live.get(key, _MISSING), value, schema.child(node, key))
        return out
    if isinstance(live, list) and isinstance(config, list):
        kind, keys = schema.list_keys(node)
        if kind == "map" and all(isinstance(i, dict) for i in live + config):
            item_node = schema.items(node)
            out_list = list(live)
            for item in config:
                element = _key_element(item, keys)
                for i, existing in enumerate(out_list):
                    if _key_element(existing, keys) == element:
                        out_list[i] = merge(schema, existing, item, item_node)
                        break
                else:
                    out_list.append(item)
            return out_list
        if kind == "set":
            return live + [v for v in config if v not in live]
    return config


# --------------------------------------------------------------------------- operations


def _entries(obj: dict[str, Any] | None) -> list[dict[str, Any]]:
    meta = (obj or {}).get("metadata") or {}
    return [dict(e) for e in meta.get("managedFields") or [] if isinstance(e, dict)]


def _entry(manager: str, operation: str, api_version: str, paths: set[Path]) -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(paths),
    }


def _describe(entry: dict[str, Any]) -> str:
    name = json.dumps(entry.get("manager", ""))
    if entry.get("operation") == "Update":
        return f"{name} using {entry.get('apiVersion', '')}"
    return name


def _is_leaf(value: Any) -> bool:
    return not isinstance(value, dict) or not value


def apply(
    rt: ResourceType,
    live: dict[str, Any],
    config: dict[str, Any],
    manager: str,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """The object after ``manager`` applied ``config`` to ``live``, managedFields
    included. Raises :class:`ApplyConflict`."""
    schema = _Schema(rt)
    applied = field_set(rt, config)
    entries = _entries(live)
    mine = next(
        (e for e in entries if e.get("manager") == manager and e.get("operation") == "Apply"),
        None,
    )
    conflicts: list[tuple[str, str]] = []
    taken: set[Path] = set()
    for entry in entries:
        if entry is mine:
            continue
        theirs = from_fields_v1(entry.get("fieldsV1"))
        for path in sorted(applied & theirs):
            here, there = value_at(live, path), value_at(config, path)
            if _is_leaf(there) and here != there:
                conflicts.append((_describe(entry), path_string(path)))
                taken.add(path)
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    merged = merge(schema, live, config, schema.root)
    kept: list[dict[str, Any]] = []
    others: set[Path] = set()
    for entry in entries:
        if entry is mine:
            continue
        theirs = from_fields_v1(entry.get("fieldsV1")) - taken
        if theirs:
            kept.append(dict(entry, fieldsV1=to_fields_v1(theirs)))
            others |= theirs
    if mine is not None:
        dropped = from_fields_v1(mine.get("fieldsV1")) - applied
        for path in sorted(dropped, key=len, reverse=True):
            if path not in others and not any(o[: len(path)] == path for o in others):
                remove(merged, path)
    unchanged = mine is not None and from_fields_v1(mine.get("fieldsV1")) == applied
    own = (
        mine
        if unchanged and mine is not None
        else _entry(manager, "Apply", rt.api_version, applied)
    )
    out: dict[str, Any] = merged
    out.setdefault("metadata", {})["managedFields"] = [*kept, own]
    return out


def applied_entry(rt: ResourceType, config: dict[str, Any], manager: str) -> dict[str, Any]:
    """The Apply entry of ``manager`` when its apply created the object."""
    return _entry(manager, "Apply", rt.api_version, field_set(rt, config))


def track_update(
    rt: ResourceType, old: dict[str, Any] | None, new: dict[str, Any], manager: str
) -> list[dict[str, Any]]:
    """``new``'s managedFields after ``manager`` wrote it over ``old`` (None: created)."""
    now_fields = field_set(rt, new)
    before = field_set(rt, old) if old is not None else set()
    changed = {
        p
        for p in now_fields
        if p not in before or (_is_leaf(value_at(new, p)) and value_at(new, p) != value_at(old, p))
    }
    gone = before - now_fields
    entries = _entries(new) if old is not None else []
    out: list[dict[str, Any]] = []
    own: set[Path] = set()
    previous: dict[str, Any] | None = None
    for entry in entries:
        paths = from_fields_v1(entry.get("fieldsV1"))
        if entry.get("manager") == manager and entry.get("operation") == "Update":
            own, previous = paths, entry
            continue
        paths -= changed | gone
        if paths:
            out.append(dict(entry, fieldsV1=to_fields_v1(paths)))
    updated = (own - gone) | changed
    if previous is not None and updated == own:
        out.append(previous)
    elif updated:
        out.append(_entry(manager, "Update", rt.api_version, updated))
    return out
