"""The server side of SPDY/3.1, as much of it as ``kubectl port-forward`` uses.

kubectl 1.31 forwards ports over a WebSocket whose subprotocol is
``SPDY/3.1+portforward.k8s.io``: its binary messages carry a SPDY byte stream (the
"tunneling" of KEP-4006). :class:`Session` reads that stream and answers:

* SYN_STREAM with a SYN_REPLY;
* DATA to the stream's handler, FIN as its end;
* PING with the same PING;
* RST_STREAM and GOAWAY as ends.

It writes DATA (with FIN at the end) and RST_STREAM. Header blocks are zlib streams
over the dictionary of the SPDY/3 specification (draft 3, section 2.6.10.1). Flow control
(WINDOW_UPDATE) is not enforced, as kubectl's spdystream does not enforce it either.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1,
    2,
    3,
    4,
    6,
    7,
    8,
    9,
)
FLAG_FIN = 0x01
RST_CANCEL = 5

_NAMES = (
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
)
_NAMES_WITH_SPACES = ("200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie")
_LAST_NAMES = ("keep-alive", "origin")
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, "
    "Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
#: The header compression dictionary of SPDY/3 (1423 bytes, Adler-32 0xe3c6a7c2).
DICTIONARY = (
    b"".join(
        struct.pack(">I", len(n)) + n.encode() for n in (*_NAMES, *_NAMES_WITH_SPACES, *_LAST_NAMES)
    )
    + _TAIL.encode()
)


class ProtocolError(Exception):
    pass


@dataclass
class Stream:
    id: int
    headers: dict[str, str]
    data: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    closed_by_peer: bool = False
    closed_by_us: bool = False


OnStream = Callable[["Session", Stream], Awaitable[None]]


class Session:
    """One SPDY connection: feed it the bytes read, it writes its answers with ``send``."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]], on_stream: OnStream) -> None:
        self._send = send
        self._on_stream = on_stream
        self._buffer = b""
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(
            9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, DICTIONARY
        )
        self._lock = asyncio.Lock()
        self.streams: dict[int, Stream] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.gone = False

    async def feed(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 8:
            length = int.from_bytes(self._buffer[5:8], "big")
            if len(self._buffer) < 8 + length:
                return
            frame, self._buffer = self._buffer[: 8 + length], self._buffer[8 + length :]
            await self._frame(frame)

    async def _frame(self, frame: bytes) -> None:
        flags, payload = frame[4], frame[8:]
        if not frame[0] & 0x80:  # a data frame
            stream = self.streams.get(int.from_bytes(frame[0:4], "big") & 0x7FFFFFFF)
            if stream is None:
                return
            if payload:
                stream.data.put_nowait(payload)
            if flags & FLAG_FIN:
                stream.closed_by_peer = True
                stream.data.put_nowait(None)
                self._forget_if_done(stream)
            return
        version = int.from_bytes(frame[0:2], "big") & 0x7FFF
        kind = int.from_bytes(frame[2:4], "big")
        if version != VERSION:
            raise ProtocolError(f"SPDY version {version} is not supported")
        if kind == SYN_STREAM:
            stream_id = int.from_bytes(payload[0:4], "big") & 0x7FFFFFFF
            headers = self._headers(payload[10:])
            stream = Stream(stream_id, headers)
            self.streams[stream_id] = stream
            await self._control(SYN_REPLY, 0, struct.pack(">I", stream_id) + self._block({}))
            if flags & FLAG_FIN:
                stream.closed_by_peer = True
                stream.data.put_nowait(None)
            task = asyncio.ensure_future(self._on_stream(self, stream))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif kind == RST_STREAM:
            stream = self.streams.pop(int.from_bytes(payload[0:4], "big") & 0x7FFFFFFF, None)
            if stream is not None:
                stream.closed_by_peer = stream.closed_by_us = True
                stream.data.put_nowait(None)
        elif kind == PING:
            await self._control(PING, 0, payload[:4])
        elif kind == GOAWAY:
            self.close()
        elif kind == HEADERS:
            self._headers(payload[4:])  # keeps the zlib stream in step
        # SETTINGS and WINDOW_UPDATE: nothing to do (no flow control, see above).

    def _headers(self, block: bytes) -> dict[str, str]:
        raw = self._inflate.decompress(block)
        count = int.from_bytes(raw[0:4], "big")
        offset, out = 4, {}
        for _ in range(count):
            size = int.from_bytes(raw[offset : offset + 4], "big")
            name = raw[offset + 4 : offset + 4 + size].decode()
            offset += 4 + size
            size = int.from_bytes(raw[offset : offset + 4], "big")
            value = raw[offset + 4 : offset + 4 + size].decode()
            offset += 4 + size
            out[name.lower()] = value.split("\0")[0]
        return out

    def _block(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers))
        for name, value in headers.items():
            raw += struct.pack(">I", len(name)) + name.encode()
            raw += struct.pack(">I", len(value)) + value.encode()
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    async def _control(self, kind: int, flags: int, payload: bytes) -> None:
        head = struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload))
        await self._write(head + payload)

    async def _write(self, data: bytes) -> None:
        if self.gone:
            return
        async with self._lock:  # frames are never interleaved
            try:
                await self._send(data)
            except (ConnectionError, RuntimeError):
                self.gone = True

    async def write(self, stream: Stream, data: bytes, *, fin: bool = False) -> None:
        """DATA on ``stream`` (in frames of at most 64 KiB); ``fin`` ends our side."""
        if stream.closed_by_us:
            return
        chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)] or [b""]
        for i, chunk in enumerate(chunks):
            last = fin and i == len(chunks) - 1
            head = struct.pack(">II", stream.id, ((FLAG_FIN if last else 0) << 24) | len(chunk))
            await self._write(head + chunk)
        if fin:
            stream.closed_by_us = True
            self._forget_if_done(stream)

    def _forget_if_done(self, stream: Stream) -> None:
        """A stream both sides ended is dropped (a long port-forward opens many)."""
        if stream.closed_by_us and stream.closed_by_peer:
            self.streams.pop(stream.id, None)

    async def reset(self, stream: Stream) -> None:
        if not stream.closed_by_us:
            stream.closed_by_us = True
            await self._control(RST_STREAM, 0, struct.pack(">II", stream.id, RST_CANCEL))

    def close(self) -> None:
        self.gone = True
        for stream in self.streams.values():
            stream.data.put_nowait(None)
        for task in list(self.tasks):
            task.cancel()
