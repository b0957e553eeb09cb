"""Watch requests of the sandbox API (``?watch=true``): JSON lines over a chunked response.

Semantics kubectl and client-go rely on: without a resourceVersion (or "0") the watch
starts with an ADDED event per existing object; with one, it replays every change after
it from the store's history (410 Expired as an ERROR event when the history no longer
reaches back, which makes clients relist) and then streams live changes, so "list, then
watch from the list's resourceVersion" (kubectl wait, rollout status, informers) misses
nothing. Label and field selectors apply to transitions too: an object modified out of
the selection is reported DELETED, into it ADDED. ``sendInitialEvents`` (streaming
lists) ends its initial events with the annotated BOOKMARK. ``timeoutSeconds`` ends the
stream.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from kubelab.sandbox.api_tables import to_table
from kubelab.sandbox.filters import Filter
from kubelab.sandbox.resources import ResourceType
from kubelab.sandbox.store import Change, Store

DEFAULT_TIMEOUT = 1800.0  # the API server's default min-request-timeout


def _with_version(rt: ResourceType, obj: dict[str, Any], rv: int | None = None) -> dict[str, Any]:
    """A shallow view of a stored object under ``rt``'s apiVersion (never mutates it)."""
    out = dict(obj, apiVersion=rt.api_version)
    if rv is not None:
        out["metadata"] = dict(obj.get("metadata") or {}, resourceVersion=str(rv))
    return out


def translate(change: Change, flt: Filter) -> tuple[str, dict[str, Any]] | None:
    """The event a watcher with this filter sees for ``change``, or None."""
    if change.resource.storage_key != flt.storage_key:
        return None
    now = change.type != "DELETED" and flt.matches(change.object)
    before = flt.matches(change.old)
    if change.type == "DELETED":
        return ("DELETED", change.object) if before else None
    if now:
        return ("MODIFIED" if before else "ADDED", change.object)
    if before and change.old is not None:
        # Modified out of the selection: gone for this watcher, as the API server reports it.
        meta = dict(change.old.get("metadata") or {}, resourceVersion=str(change.resource_version))
        return ("DELETED", dict(change.old, metadata=meta))
    return None


class _Writer:
    def __init__(
        self,
        response: web.StreamResponse,
        rt: ResourceType,
        table_version: str | None,
        include_object: str,
    ) -> None:
        self.response = response
        self.rt = rt
        self.table_version = table_version
        self.include_object = include_object
        self.first = True

    async def event(self, kind: str, obj: dict[str, Any]) -> None:
        payload = _with_version(self.rt, obj)
        if self.table_version and kind in ("ADDED", "MODIFIED", "DELETED"):
            payload = to_table(
                self.rt,
                [payload],
                include_object=self.include_object,
                with_columns=self.first,
                api_version=self.table_version,
            )
            self.first = False
        await self.raw({"type": kind, "object": payload})

    async def raw(self, event: dict[str, Any]) -> None:
        await self.response.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")


def _expired(resource_version: str, current: int) -> dict[str, Any]:
    return {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"too old resource version: {resource_version} ({current})",
            "reason": "Expired",
            "code": 410,
        },
    }


def _initial_events_end(rt: ResourceType, resource_version: int) -> dict[str, Any]:
    bookmark = {
        "kind": rt.kind,
        "apiVersion": rt.api_version,
        "metadata": {
            "resourceVersion": str(resource_version),
            "annotations": {"k8s.io/initial-events-end": "true"},
        },
    }
    return {"type": "BOOKMARK", "object": bookmark}


async def _live(
    writer: _Writer,
    queue: asyncio.Queue[Change],
    flt: Filter,
    seen: int,
    deadline: float,
    closing: asyncio.Event,
) -> None:
    """Forward the changes after ``seen`` until the deadline or ``closing``."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.ensure_future(closing.wait())
    try:
        while (remaining := deadline - loop.time()) > 0 and not closing.is_set():
            getting = asyncio.ensure_future(queue.get())
            try:
                await asyncio.wait(
                    {getting, stopping}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                # Also when this handler is cancelled (the client left): no stray getter.
                if not getting.done():
                    getting.cancel()
            if not getting.done() or getting.cancelled():
                return  # timeout or closing
            change = getting.result()
            event = translate(change, flt) if change.resource_version > seen else None
            if event is not None:
                await writer.event(*event)
    finally:
        stopping.cancel()


async def serve_watch(
    request: web.Request,
    store: Store,
    rt: ResourceType,
    flt: Filter,
    *,
    resource_version: str,
    timeout: float | None,
    table_version: str | None,
    include_object: str,
    send_initial_events: bool,
    closing: asyncio.Event,
) -> web.StreamResponse:
    """Stream watch events until the timeout, the client leaves or ``closing`` is set
    (the server stops: the stream then ends cleanly, as at a timeout)."""
    queue: asyncio.Queue[Change] = asyncio.Queue()
    stop_listening = store.listen(queue.put_nowait)
    try:
        # Everything up to "seen" comes from the snapshot or the history below; the
        # listener (registered first, same loop turn) delivers everything after it.
        seen = store.resource_version
        backlog: list[tuple[str, dict[str, Any]]] | None
        if send_initial_events or resource_version in ("", "0"):
            backlog = [("ADDED", obj) for obj in store.select(flt)]
        else:
            changes = store.changes_since(int(resource_version))
            seen = max(seen, int(resource_version))  # a resourceVersion from the future
            backlog = None
            if changes is not None:
                events = (translate(c, flt) for c in changes)
                backlog = [e for e in events if e is not None]
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        writer = _Writer(response, rt, table_version, include_object)
        try:
            if backlog is None:
                await writer.raw(_expired(resource_version, seen))
                return response
            for kind, obj in backlog:
                await writer.event(kind, obj)
            if send_initial_events:
                await writer.raw(_initial_events_end(rt, seen))
            deadline = asyncio.get_running_loop().time() + (
                timeout if timeout is not None else DEFAULT_TIMEOUT
            )
            await _live(writer, queue, flt, seen, deadline, closing)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away; nothing left to tell it
        return response
    finally:
        stop_listening()
