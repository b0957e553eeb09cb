"""The sandbox's SPDY/3.1 session (kubelab.sandbox.spdy), fed frames as kubectl sends them.

kubectl itself is the end-to-end test (tests/integration/test_sandbox_terminal.py); these
pin the framing: a client's SYN_STREAM (headers compressed over the SPDY/3 dictionary)
gets a SYN_REPLY, data and FIN reach the stream, PING is answered, and our DATA frames
carry the stream id and FIN.
"""

from __future__ import annotations

import asyncio
import struct
import zlib

from kubelab.sandbox import spdy


def _block(compressor: zlib._Compress, headers: dict[str, str]) -> bytes:
    raw = struct.pack(">I", len(headers))
    for name, value in headers.items():
        raw += struct.pack(">I", len(name)) + name.encode()
        raw += struct.pack(">I", len(value)) + value.encode()
    return compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH)


def _control(kind: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | 3, kind, (flags << 24) | len(payload)) + payload


def _frames(data: bytes) -> list[tuple[bool, int, int, bytes]]:
    """(control?, type or stream id, flags, payload) of each frame."""
    out = []
    while data:
        length = int.from_bytes(data[5:8], "big")
        head, payload, data = data[:8], data[8 : 8 + length], data[8 + length :]
        control = bool(head[0] & 0x80)
        ident = int.from_bytes(head[2:4] if control else head[0:4], "big") & 0x7FFFFFFF
        out.append((control, ident, head[4], payload))
    return out


def test_the_dictionary_is_the_specifications():
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2


def test_a_stream_is_replied_fed_and_ended():
    async def scenario() -> tuple[list[bytes], dict[str, str], list[bytes | None]]:
        sent: list[bytes] = []
        seen: dict[str, str] = {}
        received: list[bytes | None] = []

        async def send(data: bytes) -> None:
            sent.append(data)

        async def on_stream(session: spdy.Session, stream: spdy.Stream) -> None:
            seen.update(stream.headers)
            while (chunk := await stream.data.get()) is not None:
                received.append(chunk)
            received.append(None)
            await session.write(stream, b"pong", fin=True)

        session = spdy.Session(send, on_stream)
        client = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, spdy.DICTIONARY)
        headers = {"streamtype": "data", "port": "8080", "requestid": "0"}
        syn = struct.pack(">IIH", 1, 0, 0) + _block(client, headers)
        # Frames split across reads, as a WebSocket may deliver them.
        stream = _control(spdy.SYN_STREAM, 0, syn)
        data = struct.pack(">II", 1, 4) + b"ping" + struct.pack(">II", 1, spdy.FLAG_FIN << 24)
        ping = _control(spdy.PING, 0, struct.pack(">I", 7))
        wire = stream + data + ping
        for i in range(0, len(wire), 5):
            await session.feed(wire[i : i + 5])
        await asyncio.wait_for(asyncio.gather(*session.tasks), 2)
        return sent, seen, received

    sent, seen, received = asyncio.run(scenario())
    frames = _frames(b"".join(sent))
    assert seen == {"streamtype": "data", "port": "8080", "requestid": "0"}
    assert received == [b"ping", None]
    kinds = [(control, ident) for control, ident, _flags, _payload in frames]
    assert (True, spdy.SYN_REPLY) in kinds and (True, spdy.PING) in kinds
    reply = next(p for c, i, _f, p in frames if c and i == spdy.SYN_REPLY)
    assert int.from_bytes(reply[0:4], "big") == 1
    headers = zlib.decompressobj(zdict=spdy.DICTIONARY).decompress(reply[4:])
    assert headers == struct.pack(">I", 0)  # an empty header block
    ping = next(p for c, i, _f, p in frames if c and i == spdy.PING)
    assert ping == struct.pack(">I", 7)
    assert (False, 1, spdy.FLAG_FIN, b"pong") in frames


def test_a_reset_stream_ends_its_reader_and_another_version_is_refused():
    async def scenario() -> list[bytes | None]:
        ended: list[bytes | None] = []

        async def send(_data: bytes) -> None:
            return None

        async def on_stream(_session: spdy.Session, stream: spdy.Stream) -> None:
            ended.append(await stream.data.get())

        session = spdy.Session(send, on_stream)
        client = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, spdy.DICTIONARY)
        syn = struct.pack(">IIH", 3, 0, 0) + _block(client, {"streamtype": "error"})
        await session.feed(_control(spdy.SYN_STREAM, 0, syn))
        await session.feed(_control(spdy.RST_STREAM, 0, struct.pack(">II", 3, 5)))
        await asyncio.wait_for(asyncio.gather(*session.tasks), 2)
        old = struct.pack(">HHI", 0x8000 | 2, spdy.PING, 4) + b"\0\0\0\1"
        try:
            await session.feed(old)
        except spdy.ProtocolError as error:
            ended.append(str(error).encode())
        return ended

    assert asyncio.run(scenario()) == [None, b"SPDY version 2 is not supported"]
