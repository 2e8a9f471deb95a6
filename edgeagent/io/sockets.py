"""The agent's ZeroMQ sockets: bind/connect, replies, results, refused peers, close.

One vocabulary for socket kinds, the config's own key names: ``listen`` (a ROUTER bound for imagezmq
REQ/REP senders and native REQ), ``pull`` (a PULL bound for native PUSH), ``connect`` (a SUB connected
to imagezmq PUB/SUB senders and native PUB), ``frigate`` (a ROUTER bound for Frigate's ZMQ detector)
and ``publish`` (the results PUB). ``security.curve_exempt``
uses the same names.

Owner: :meth:`Sockets.bind` runs on the main thread before the I/O thread starts; from then on only
the I/O thread touches the sockets (pyzmq sockets are not thread-safe) until :meth:`Sockets.close`.
"""

from __future__ import annotations

import itertools
import os
import socket
from dataclasses import dataclass
from typing import Any, Literal

import zmq
from zmq.utils.monitor import recv_monitor_message

from edgeagent.config import Config
from edgeagent.errors import EndpointError
from edgeagent.security import Guard

Kind = Literal["listen", "pull", "connect", "publish", "frigate"]
_monitor_ids = itertools.count()
PUB_SNDHWM = 256  # results per subscriber buffered before PUB drops (it never blocks)

# The hot path calls pyzmq's compiled socket methods directly, with plain int flags: the Python layer of
# send_multipart/recv_multipart (a type check per part, enum arithmetic per flag, getsockopt(RCVMORE) per
# part) cost more than the sends and receives themselves (`edgeagent bench hotpath`).
_BACKEND: Any = next(c for c in zmq.Socket.__mro__[1:] if "send" in vars(c))  # the compiled socket class
_send = _BACKEND.send
_recv = _BACKEND.recv
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE) | _NOBLOCK
COPY_BELOW_BYTES = 65536  # smaller parts are copied into the message (cheaper than tracking a buffer)


class Sockets:
    def __init__(
        self, cfg: Config, max_message_bytes: int, guard: Guard | None = None, ctx: zmq.Context[Any] | None = None
    ) -> None:
        self.cfg = cfg
        self.max_message_bytes = max_message_bytes
        self.guard = guard
        self.ctx: zmq.Context[Any] = ctx or zmq.Context.instance()  # inproc:// endpoints need the peer's context
        self.ingest: list[tuple[zmq.Socket[Any], Kind]] = []
        self.pub: zmq.Socket[Any] | None = None
        # Socket monitors: peers accepted and disconnected on ingest sockets, refused handshakes (a CURVE
        # key or address ZAP refused) on bound ones. monitor → (its socket, kind, configured endpoint).
        self.monitors: dict[zmq.Socket[Any], tuple[zmq.Socket[Any], Kind, str]] = {}
        self._peers: dict[int, str] = {}  # file descriptor → peer address, from ACCEPTED events

    def bind(self) -> None:
        """Create, bind and connect every socket. Raises EndpointError naming the endpoints."""
        ic = self.cfg.ingest
        fc = self.cfg.frigate

        def make(kind: Kind, zmq_type: int, ep: str) -> zmq.Socket[Any]:
            s: zmq.Socket[Any] = self.ctx.socket(zmq_type)
            if self.guard is not None and kind != "connect":
                self.guard.apply(s, kind)
            self._monitor(s, kind, ep)
            s.setsockopt(zmq.LINGER, 0)
            if kind != "publish":
                s.setsockopt(zmq.RCVHWM, ic.rcvhwm)
                cap = self.max_message_bytes
                if kind == "frigate" and fc.accept_models:  # a pushed model file is one message
                    cap = max(cap, fc.max_model_bytes + (1 << 16))
                s.setsockopt(zmq.MAXMSGSIZE, cap)
                self.ingest.append((s, kind))
            return s

        try:
            for ep in ic.listen:
                unlink_stale_ipc(ep)
                make("listen", zmq.ROUTER, ep).bind(ep)
            for ep in ic.pull:
                unlink_stale_ipc(ep)
                make("pull", zmq.PULL, ep).bind(ep)
            for ep in fc.endpoints:
                unlink_stale_ipc(ep)
                make("frigate", zmq.ROUTER, ep).bind(ep)
            for ep in ic.connect:
                s = make("connect", zmq.SUB, ep)
                s.setsockopt(zmq.SUBSCRIBE, b"")
                s.connect(ep)
            if self.cfg.results.publish:
                unlink_stale_ipc(self.cfg.results.publish)
                self.pub = make("publish", zmq.PUB, self.cfg.results.publish)
                self.pub.setsockopt(zmq.SNDHWM, PUB_SNDHWM)
                self.pub.bind(self.cfg.results.publish)
        except zmq.ZMQError as exc:
            self.close()
            raise EndpointError(f"cannot open endpoint: {exc} ({', '.join(all_endpoints(self.cfg))})") from None

    def _monitor(self, sock: zmq.Socket[Any], kind: Kind, ep: str) -> None:
        events = 0
        if self.guard is not None and self.guard.auth is not None and kind != "connect":
            events |= zmq.EVENT_HANDSHAKE_FAILED_AUTH
        if kind != "publish":
            events |= zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
        if events:
            # A name of our own: pyzmq's default is derived from the socket's file descriptor, which a
            # socket closed moments ago may still hold in the context (its close is asynchronous).
            addr = f"inproc://edgeagent-monitor-{os.getpid()}-{next(_monitor_ids)}"
            self.monitors[sock.get_monitor_socket(events, addr)] = (sock, kind, ep)

    def endpoints(self) -> dict[str, list[str]]:
        """Actual endpoints by kind (after binding port 0 or wildcards), for logs and tests."""
        out: dict[str, list[str]] = {}
        socks: list[tuple[zmq.Socket[Any], Kind]] = list(self.ingest)
        if self.pub is not None:
            socks.append((self.pub, "publish"))
        for s, kind in socks:
            out.setdefault(kind, []).append(s.getsockopt_string(zmq.LAST_ENDPOINT))
        return out

    def events(self, monitor: zmq.Socket[Any]) -> list[PeerEvent]:
        """Read a monitor's pending events: refused handshakes and disconnected peers. A connecting
        socket (SUB to a camera's PUB) whose peer libzmq dropped is connected again at once: after a
        message above the size cap libzmq would not reconnect by itself, and the camera would be lost."""
        sock, kind, configured = self.monitors[monitor]
        out = []
        while monitor.poll(0):
            ev = recv_monitor_message(monitor, zmq.NOBLOCK)
            endpoint = ev["endpoint"].decode(errors="replace")
            if ev["event"] == zmq.EVENT_ACCEPTED:
                self._peers[ev["value"]] = _peer_address(ev["value"])
                continue
            if ev["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                out.append(PeerEvent("refused", kind, endpoint, self._peers.get(ev["value"], "?")))
                continue
            peer = configured if kind == "connect" else self._peers.pop(ev["value"], "?")
            if kind == "connect":
                try:
                    sock.disconnect(configured)
                    sock.connect(configured)
                except zmq.ZMQError:
                    pass  # not connected any more (a reload) or closing: nothing to re-establish
            out.append(PeerEvent("disconnected", kind, endpoint, peer))
        return out

    @staticmethod
    def reply(sock: zmq.Socket[Any], envelope: list[Any], body: bytes | list[bytes]) -> None:
        """Answer a REQ/DEALER peer on the ROUTER its request came in on; raises zmq.ZMQError when the
        peer is gone or its pipe is full (the caller counts and logs)."""
        for part in envelope:
            _send(sock, part, _SNDMORE_NOBLOCK, True)
        if isinstance(body, list):
            send_parts(sock, body)
        else:
            _send(sock, body, _NOBLOCK, True)

    def publish(self, parts: list[Any]) -> None:
        """Send a result to subscribers; never blocks (a full subscriber pipe drops it)."""
        if self.pub is not None:
            try:
                send_parts(self.pub, parts)
            except zmq.Again:
                pass

    def close(self) -> None:
        """Close sockets; ROUTER and PUB linger briefly so the last replies and results go out."""
        for s, kind in self.ingest:
            if not s.closed:
                s.close(linger=500 if kind == "listen" else 0)
        if self.pub is not None and not self.pub.closed:
            self.pub.close(linger=500)
        for m in self.monitors:
            m.close(linger=0)


@dataclass(frozen=True)
class PeerEvent:
    what: Literal["refused", "disconnected"]
    kind: Kind
    endpoint: str  # the local endpoint (bound sockets) or the endpoint connected to
    peer: str  # the peer's address when known, else "?"


def _peer_address(fd: int) -> str:
    """The remote address of a just-accepted connection (it may already be closed: "?")."""
    try:
        with socket.socket(fileno=os.dup(fd)) as s:
            addr = s.getpeername()
    except OSError:
        return "?"
    if isinstance(addr, tuple):
        return f"[{addr[0]}]:{addr[1]}" if ":" in str(addr[0]) else f"{addr[0]}:{addr[1]}"
    return str(addr) or "?"


def recv_message(sock: zmq.Socket[Any]) -> list[Any] | None:
    """The next whole message on ``sock`` as zero-copy frames, None when none is waiting. A multipart
    message arrives atomically: once its first part is read, the others are there."""
    try:
        parts = [_recv(sock, _NOBLOCK, False)]
    except zmq.Again:
        return None
    while parts[-1].more:
        parts.append(_recv(sock, _NOBLOCK, False))
    return parts


def send_parts(sock: zmq.Socket[Any], parts: list[Any]) -> None:
    """Send ``parts`` as one message without blocking (raises zmq.Again when the peer's pipe is full).
    Parts of COPY_BELOW_BYTES or more go zero-copy: libzmq keeps a reference to the buffer until sent."""
    last = len(parts) - 1
    for i, part in enumerate(parts):
        copy = type(part) is bytes or getattr(part, "nbytes", 0) < COPY_BELOW_BYTES
        _send(sock, part, _NOBLOCK if i == last else _SNDMORE_NOBLOCK, copy)


def split_envelope(parts: list[Any]) -> tuple[list[Any], list[Any]]:
    """ROUTER messages: [identity, b"", body...] from REQ, [identity, body...] from DEALER."""
    if len(parts) > 2 and not len(parts[1]):  # a REQ peer's: the common case first
        return parts[2:], [parts[0].bytes, b""]
    for i, p in enumerate(parts[:4]):
        if len(p) == 0:
            return parts[i + 1 :], [bytes(x.bytes) for x in parts[: i + 1]]
    return parts[1:], [bytes(parts[0].bytes)] if parts else []


def unlink_stale_ipc(endpoint: str) -> None:
    """ipc:// socket files outlive a crashed process; binding over one fails, so remove it first."""
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        try:
            if os.path.exists(path) and not os.path.isdir(path):
                os.unlink(path)
        except OSError:
            pass


def all_endpoints(cfg: Config) -> list[str]:
    eps = [*cfg.ingest.listen, *cfg.ingest.pull, *cfg.ingest.connect, *cfg.frigate.endpoints]
    if cfg.results.publish:
        eps.append(cfg.results.publish)
    return eps
