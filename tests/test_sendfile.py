"""BlobSender on a real socket pair: header then body, from a file or from memory."""

from __future__ import annotations

import asyncio
import socket

import pytest

from prism.sendfile import BlobSender
from prism.store.base import BlobRef


class _Proto(asyncio.Protocol):
    sender: BlobSender

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.sender = BlobSender(transport, send_timeout=5, cork=True)

    def pause_writing(self) -> None:
        self.sender.pause_writing()

    def resume_writing(self) -> None:
        self.sender.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.sender.connection_lost()


async def _send(ref: BlobRef, start: int, count: int) -> bytes:
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    transport, proto = await loop.create_connection(_Proto, sock=a)
    reader, writer = await asyncio.open_connection(sock=b)
    try:
        with ref:
            await proto.sender.send(b"HEAD\n", ref, start, count)
        transport.close()
        return await asyncio.wait_for(reader.read(-1), 10)
    finally:
        writer.close()


@pytest.mark.parametrize("on_disk", [False, True])
@pytest.mark.parametrize(("start", "count"), [(0, 3_000_000), (10, 20), (2_999_990, 10)])
async def test_head_then_the_asked_bytes(tmp_path, on_disk, start, count):
    data = bytes(range(256)) * (3_000_000 // 256) + bytes(3_000_000 % 256)
    if on_disk:
        path = tmp_path / "blob"
        path.write_bytes(data)
        ref = BlobRef("h", len(data), file=open(path, "rb"))
    else:
        ref = BlobRef("h", len(data), data=data)
    assert await _send(ref, start, count) == b"HEAD\n" + data[start : start + count]


async def test_a_file_shorter_than_its_ref_is_an_error(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 100)
    ref = BlobRef("h", 200, file=open(path, "rb"))
    with pytest.raises(OSError, match="file ended after 100 of 200 bytes"):
        await _send(ref, 0, 200)


async def _pair(send_timeout: float | None = 5) -> tuple[asyncio.Transport, _Proto, socket.socket]:
    """A served socket (with its BlobSender) and the raw client end, both with small buffers so
    a 3 MB body cannot go out in one call."""
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    transport, proto = await loop.create_connection(lambda: _Proto(), sock=a)
    for s in (a, b):  # after the BlobSender asked for its large buffer
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    proto.sender.send_timeout = send_timeout
    b.setblocking(False)
    return transport, proto, b


async def _read_all(sock: socket.socket, until: int) -> bytes:
    loop = asyncio.get_running_loop()
    got = bytearray()
    while len(got) < until:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            break
        got += chunk
    return bytes(got)


def _blob_file(tmp_path, size: int = 3_000_000) -> tuple[bytes, BlobRef]:
    data = bytes(range(256)) * (size // 256)
    path = tmp_path / "blob"
    path.write_bytes(data)
    return data, BlobRef("h", len(data), file=open(path, "rb"))


async def test_a_slow_reader_gets_the_body_without_loop_sendfile(tmp_path, monkeypatch):
    """The rest of a partial send goes out from the writable callback, never loop.sendfile."""
    loop = asyncio.get_running_loop()

    async def no_loop_sendfile(*args, **kwargs):
        raise AssertionError("loop.sendfile must not be used")

    monkeypatch.setattr(loop, "sendfile", no_loop_sendfile)
    data, ref = _blob_file(tmp_path)
    transport, proto, client = await _pair()
    file = ref.file
    with client, ref:
        reading = asyncio.ensure_future(_read_all(client, 5 + len(data) * 2))
        await proto.sender.send(b"HEAD\n", ref, 0, len(data))
        await proto.sender.send(b"HEAD\n", ref, 0, len(data))  # the writer was given back
        transport.close()
        assert await asyncio.wait_for(reading, 10) == (b"HEAD\n" + data) * 2
    assert file is not None and file.closed


async def test_header_waiting_in_the_transport_goes_first(tmp_path):
    """Bytes the transport still holds go out before the header and the sendfile body."""
    data, ref = _blob_file(tmp_path)
    transport, proto, client = await _pair()
    earlier = b"E" * 1_000_000
    with client, ref:
        transport.write(earlier)  # the socket is full: most of it waits in the transport
        assert transport.get_write_buffer_size() > 0
        reading = asyncio.ensure_future(_read_all(client, len(earlier) + 5 + len(data)))
        await proto.sender.send(b"HEAD\n", ref, 0, len(data))
        transport.close()
        assert await asyncio.wait_for(reading, 10) == earlier + b"HEAD\n" + data


async def test_the_peer_going_away_mid_body_ends_the_send(tmp_path):
    errors: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
    data, ref = _blob_file(tmp_path)
    transport, proto, client = await _pair()
    with ref:
        sending = asyncio.ensure_future(proto.sender.send(b"HEAD\n", ref, 0, len(data)))
        await _read_all(client, 100_000)
        client.close()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(sending, 10)
    await asyncio.sleep(0.05)
    assert transport.is_closing()
    assert errors == []


async def test_a_reader_that_stops_reading_times_the_send_out(tmp_path):
    data, ref = _blob_file(tmp_path)
    transport, proto, client = await _pair(send_timeout=0.3)
    with client, ref:
        sending = asyncio.ensure_future(proto.sender.send(b"HEAD\n", ref, 0, len(data)))
        await _read_all(client, 10_000)  # then nothing more
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sending, 10)
        transport.abort()


def _resume(proto: _Proto) -> tuple[list[BaseException | None], asyncio.Future[None]]:
    """Start the rest of a send without a task; what `done` was called with, and when."""
    calls: list[BaseException | None] = []
    called: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def done(error: BaseException | None) -> None:
        calls.append(error)
        if not called.done():
            called.set_result(None)

    proto.sender.resume(done)
    assert calls == []  # never before resume returns
    return calls, called


async def test_resume_sends_the_rest_without_a_task_and_tells_once(tmp_path):
    data, ref = _blob_file(tmp_path)
    transport, proto, client = await _pair()
    with client, ref:
        assert not proto.sender.start(b"HEAD\n", ref, 0, len(data))  # the socket took part
        tasks = len(asyncio.all_tasks())
        calls, called = _resume(proto)
        assert len(asyncio.all_tasks()) == tasks
        received = await asyncio.wait_for(_read_all(client, 5 + len(data)), 10)
        await asyncio.wait_for(called, 10)
        assert received == b"HEAD\n" + data and calls == [None]
        transport.close()
        await asyncio.sleep(0.05)
        assert calls == [None]


async def test_resume_tells_a_stalled_send_that_it_timed_out(tmp_path):
    data, ref = _blob_file(tmp_path)
    transport, proto, client = await _pair(send_timeout=0.3)
    with client, ref:
        assert not proto.sender.start(b"HEAD\n", ref, 0, len(data))
        calls, called = _resume(proto)
        await _read_all(client, 10_000)  # then nothing more
        await asyncio.wait_for(called, 10)
        assert len(calls) == 1 and isinstance(calls[0], TimeoutError)
        transport.abort()
        await asyncio.sleep(0.05)
        assert len(calls) == 1


async def test_resume_tells_a_lost_connection_once(tmp_path):
    data, ref = _blob_file(tmp_path)
    transport, proto, client = await _pair()
    with client, ref:
        assert not proto.sender.start(b"HEAD\n", ref, 0, len(data))
        calls, _called = _resume(proto)
        transport.abort()  # the loss is reported to the protocol soon after
        await asyncio.sleep(0.05)
        assert len(calls) == 1 and isinstance(calls[0], ConnectionResetError)


async def test_resume_after_bytes_waiting_in_the_transport_sends_them_first(tmp_path):
    data, ref = _blob_file(tmp_path)
    transport, proto, client = await _pair()
    earlier = b"E" * 1_000_000
    with client, ref:
        transport.write(earlier)
        assert not proto.sender.start(b"HEAD\n", ref, 0, len(data))
        calls, called = _resume(proto)
        received = await asyncio.wait_for(_read_all(client, len(earlier) + 5 + len(data)), 10)
        await asyncio.wait_for(called, 10)
        assert received == earlier + b"HEAD\n" + data and calls == [None]
        transport.close()
