"""How the sandbox store keeps its objects so that reads scale.

* :class:`Bucket` holds one resource's objects by namespace, then by name. Listing a
  namespace only looks at that namespace. The sorted order of keys is cached until the
  next insert or delete, so the pages of a paged LIST (kubectl asks 500 at a time) cost
  the page, not the whole collection.
* :class:`Dependents` indexes ``ownerReferences`` by owner uid, so garbage collection
  finds an object's dependents without looking at every object.

Stored objects are never mutated (every write stores a new dict), so both hold them as
they are.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Any

ObjectKey = tuple[str, str]  # (namespace or "", name)
StorageKey = tuple[str, str]  # (group, plural)


class Bucket:
    """One resource's objects: ``{namespace: {name: object}}``, keys sorted on demand."""

    def __init__(self) -> None:
        self._by_namespace: dict[str, dict[str, dict[str, Any]]] = {}
        self._sorted: list[ObjectKey] | None = []
        self._sorted_in: dict[str, list[str]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, key: ObjectKey) -> bool:
        return key[1] in self._by_namespace.get(key[0], {})

    def get(self, key: ObjectKey) -> dict[str, Any] | None:
        return self._by_namespace.get(key[0], {}).get(key[1])

    def __getitem__(self, key: ObjectKey) -> dict[str, Any]:
        return self._by_namespace[key[0]][key[1]]

    def __setitem__(self, key: ObjectKey, obj: dict[str, Any]) -> None:
        names = self._by_namespace.setdefault(key[0], {})
        if key[1] not in names:
            self._size += 1
            self._sorted = None
            self._sorted_in.pop(key[0], None)
        names[key[1]] = obj

    def __delitem__(self, key: ObjectKey) -> None:
        names = self._by_namespace[key[0]]
        del names[key[1]]
        if not names:
            del self._by_namespace[key[0]]
        self._size -= 1
        self._sorted = None
        self._sorted_in.pop(key[0], None)

    def __iter__(self) -> Iterator[ObjectKey]:
        return iter(self.keys())

    def keys(self, namespace: str | None = None) -> list[ObjectKey]:
        """The keys in order, of one namespace or of all."""
        if namespace is not None:
            names = self._sorted_in.get(namespace)
            if names is None:
                names = self._sorted_in[namespace] = sorted(self._by_namespace.get(namespace, {}))
            return [(namespace, n) for n in names]
        if self._sorted is None:
            self._sorted = sorted(
                (ns, name) for ns, names in self._by_namespace.items() for name in names
            )
        return self._sorted

    def values(self) -> list[dict[str, Any]]:
        return [obj for names in self._by_namespace.values() for obj in names.values()]

    def scan(
        self, namespace: str | None = None, after: ObjectKey | None = None
    ) -> Iterator[tuple[ObjectKey, dict[str, Any]]]:
        """(key, object) in key order, of one namespace or of all, after ``after``."""
        if namespace is not None:
            if after is not None and after[0] > namespace:
                return
            self.keys(namespace)  # sorts it once
            ordered = self._sorted_in[namespace]
            start = 0
            if after is not None and after[0] == namespace:
                start = bisect.bisect_right(ordered, after[1])
            objects = self._by_namespace.get(namespace, {})
            for name in ordered[start:]:
                yield (namespace, name), objects[name]
            return
        keys = self.keys()
        start = bisect.bisect_right(keys, after) if after else 0
        for key in keys[start:]:
            yield key, self._by_namespace[key[0]][key[1]]


class Dependents:
    """Owner uid -> the objects whose ownerReferences name it."""

    def __init__(self) -> None:
        self._by_owner: dict[str, set[tuple[StorageKey, ObjectKey]]] = {}

    @staticmethod
    def _owners(obj: dict[str, Any] | None) -> set[str]:
        refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
        return {str(r.get("uid")) for r in refs if isinstance(r, dict) and r.get("uid")}

    def update(
        self,
        storage_key: StorageKey,
        key: ObjectKey,
        old: dict[str, Any] | None,
        new: dict[str, Any] | None,
    ) -> None:
        before, after = self._owners(old), self._owners(new)
        for uid in before - after:
            entries = self._by_owner.get(uid)
            if entries is not None:
                entries.discard((storage_key, key))
                if not entries:
                    del self._by_owner[uid]
        for uid in after - before:
            self._by_owner.setdefault(uid, set()).add((storage_key, key))

    def of(self, uid: str) -> list[tuple[StorageKey, ObjectKey]]:
        return sorted(self._by_owner.get(uid, ()))
