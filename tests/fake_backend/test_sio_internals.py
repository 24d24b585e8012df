"""The python-socketio / python-engineio internals the fake backend's fast emit path relies on.

``fake_backend/sio.py`` bypasses ``AsyncServer.emit`` and puts pre-encoded
Engine.IO packets straight into a socket's outgoing queue.  That leans on
attributes no public API promises; pyproject.toml caps both packages at the
versions this was tested with, and each test here names one internal, so an
upgrade that changes it fails by that name (not as a hang or a garbled
stream somewhere else).  The end-to-end behaviour is in ``test_sio.py``.
"""

from __future__ import annotations

import asyncio
import inspect
import tomllib
from importlib import metadata

import engineio
import pytest
import socketio
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket
from packaging.requirements import Requirement

from fake_backend.sio import NAMESPACE, SioOutlet, _message_packet
from tests.support import REPO


def _engineio_server() -> engineio.AsyncServer:
    return engineio.AsyncServer(async_mode="asgi", logger=False)


def test_installed_socketio_and_engineio_are_within_the_tested_bounds() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    bounded = {req.name: req for req in map(Requirement, project["dependencies"]) if req.name.startswith("python-")}
    for name in ("python-socketio", "python-engineio"):
        req = bounded[name]
        assert any(spec.operator == "<" for spec in req.specifier), f"{name} needs an upper bound: {req}"
        assert metadata.version(name) in req.specifier, f"{name} {metadata.version(name)} outside {req.specifier}"


def test_engineio_packet_message_type_is_4() -> None:
    assert eio_packet.MESSAGE == 4


def test_engineio_packet_fields_packet_type_data_binary_encode_cache() -> None:
    """``_message_packet`` fills these four fields on a Packet made without ``__init__``."""
    reference = eio_packet.Packet(eio_packet.MESSAGE, '2/UserSession,["l","hi"]')
    assert {"packet_type", "data", "binary", "encode_cache"} <= set(vars(reference))
    assert set(vars(_message_packet("x"))) == set(vars(reference))


def test_engineio_packet_encode_returns_encode_cache() -> None:
    """The writer sends ``pkt.encode()``; a filled ``encode_cache`` must be what goes on the wire."""
    text = '2/UserSession,["listener","chunk text"]'
    ours = _message_packet(text)
    assert ours.encode() == "4" + text
    assert ours.encode() == eio_packet.Packet(eio_packet.MESSAGE, text).encode()


def test_engineio_socket_queue_is_an_asyncio_queue_the_writer_drains() -> None:
    """``eio_socket.queue``: an asyncio.Queue whose consumer (``poll``, used by both the
    polling and the websocket writer) calls ``task_done``, so ``queue.join()`` (back-pressure) returns."""

    async def scenario() -> None:
        sock = AsyncSocket(_engineio_server(), "sid-1")
        assert isinstance(sock.queue, asyncio.Queue)
        pkt = _message_packet('2/UserSession,["l","a"]')
        sock.queue.put_nowait(pkt)
        assert await asyncio.wait_for(sock.poll(), 5) == [pkt]
        await asyncio.wait_for(sock.queue.join(), 5)

    asyncio.run(scenario())


def test_engineio_socket_flags_upgraded_closed_closing() -> None:
    sock = AsyncSocket(_engineio_server(), "sid-1")
    for name in ("upgraded", "closed", "closing"):
        assert getattr(sock, name) is False, name


def test_engineio_server_get_socket_returns_live_socket_or_raises_keyerror() -> None:
    server = _engineio_server()
    sock = AsyncSocket(server, "eio-1")
    server.sockets["eio-1"] = sock
    assert server._get_socket("eio-1") is sock
    with pytest.raises(KeyError):
        server._get_socket("nobody")
    sock.closed = True
    with pytest.raises(KeyError):
        server._get_socket("eio-1")


def test_socketio_manager_eio_sid_from_sid() -> None:
    async def scenario() -> None:
        sio = socketio.AsyncServer(async_mode="asgi", logger=False)
        sid = await sio.manager.connect("eio-7", NAMESPACE)
        assert sio.manager.eio_sid_from_sid(sid, NAMESPACE) == "eio-7"
        assert sio.manager.eio_sid_from_sid("unknown", NAMESPACE) is None

    asyncio.run(scenario())


def test_socketio_server_has_eio_server_and_manager() -> None:
    sio = socketio.AsyncServer(async_mode="asgi", logger=False)
    assert isinstance(sio.eio, engineio.AsyncServer)
    assert callable(sio.manager.eio_sid_from_sid)


def test_socketio_disconnect_takes_sid_and_namespace() -> None:
    """``SioOutlet.drop`` and the slow-consumer path call ``sio.disconnect(sid, namespace=...)``."""
    params = inspect.signature(socketio.AsyncServer.disconnect).parameters
    assert "namespace" in params
    assert inspect.iscoroutinefunction(SioOutlet.drop)
