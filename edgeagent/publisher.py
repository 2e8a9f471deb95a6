"""``edgeagent.Publisher``: send frames to an agent from an application.

Modes: ``push`` (connects a PUSH socket to the agent's ``pull`` endpoint: fire and forget, newest
frame wins at the agent), ``pub`` (binds a PUB socket; the agent connects with ``--connect``) and
``req`` (connects a REQ socket to the agent's ``listen`` ROUTER and waits for the result).

Unlike plain imagezmq, ``req`` mode has a timeout: when no reply comes in ``timeout_s`` (the agent
restarted mid-request, say), the socket is closed and re-created (the "lazy pirate" pattern), the
call returns None, and the next frame goes out on the fresh connection.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
import zmq
import zmq.auth

from edgeagent.wire import encode_imagezmq, encode_native


class Publisher:
    def __init__(
        self,
        endpoint: str,
        source: str = "camera0",
        mode: Literal["push", "pub", "req"] = "push",
        fmt: Literal["native", "imagezmq"] = "native",
        timeout_s: float = 5.0,
        context: zmq.Context[Any] | None = None,
        curve_server_key: str | None = None,
        curve_client_key: str | None = None,
    ) -> None:
        """``curve_server_key``: the agent's public certificate file; ``curve_client_key``: this
        publisher's certificate with its secret key (both from ``edgeagent keys generate``)."""
        if mode not in ("push", "pub", "req"):
            raise ValueError(f"mode {mode!r}: expected push, pub or req")
        if fmt not in ("native", "imagezmq"):
            raise ValueError(f"fmt {fmt!r}: expected native or imagezmq")
        self.endpoint = endpoint
        self.source = source
        self.mode = mode
        self.fmt = fmt
        self.timeout_s = timeout_s
        self.ctx = context or zmq.Context.instance()
        self.seq = 0
        self.timeouts = 0
        self.dropped = 0
        self._curve: tuple[bytes, bytes, bytes] | None = None
        if curve_server_key or curve_client_key:
            if not (curve_server_key and curve_client_key):
                raise ValueError("CURVE needs both curve_server_key and curve_client_key")
            server_public, _ = zmq.auth.load_certificate(curve_server_key)
            public, secret = zmq.auth.load_certificate(curve_client_key)
            if secret is None:
                raise ValueError(f"{curve_client_key}: a public certificate; give the .key_secret file")
            self._curve = (server_public, public, secret)
        self._sock = self._open()

    def _open(self) -> zmq.Socket[Any]:
        kind = {"push": zmq.PUSH, "pub": zmq.PUB, "req": zmq.REQ}[self.mode]
        s: zmq.Socket[Any] = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        if self._curve is not None:
            if self.mode == "pub":
                raise ValueError("CURVE is for push and req modes (the agent is the CURVE server)")
            s.curve_serverkey, s.curve_publickey, s.curve_secretkey = self._curve
        if self.mode == "push":
            # Never block the camera loop: a full pipe means the agent is behind; drop here too.
            s.setsockopt(zmq.SNDHWM, 4)
        if self.mode == "req":
            # A REQ with no connection to send on (the agent refused the handshake, or is down) blocks
            # in send: bounded by the same timeout as the reply.
            s.setsockopt(zmq.SNDTIMEO, max(1, int(self.timeout_s * 1000)))
        if self.mode == "pub":
            s.bind(self.endpoint)
        else:
            s.connect(self.endpoint)
        return s

    @property
    def bound_endpoint(self) -> str:
        return self._sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def send(self, image: np.ndarray | None = None, jpeg: bytes | None = None) -> dict[str, Any] | bytes | None:
        """Send one frame (HxWx3 uint8 BGR ``image`` or encoded ``jpeg``).

        Returns the agent's reply in ``req`` mode (parsed JSON, or raw bytes such as b"OK"), None on a
        timeout (the socket has been reset) and None in the other modes. In ``push`` mode a frame that
        cannot be queued at once is dropped here (returns None, counted in ``self.dropped``).
        """
        if self.fmt == "native":
            parts = encode_native(self.source, self.seq, image, jpeg)
        else:
            parts = encode_imagezmq(self.source, image, jpeg)
        self.seq += 1
        if self.mode != "req":
            try:
                self._sock.send_multipart(parts, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self.dropped += 1
            return None
        try:
            self._sock.send_multipart(parts, copy=False)
        except zmq.Again:  # not even sent in time: the same as no reply
            sent = False
        else:
            sent = True
        if sent and self._sock.poll(int(self.timeout_s * 1000), zmq.POLLIN):
            reply = self._sock.recv()
            try:
                parsed = json.loads(reply)
            except ValueError:
                return reply
            return parsed if isinstance(parsed, dict) else reply
        self.timeouts += 1
        self._sock.close(linger=0)
        self._sock = self._open()
        return None

    def close(self) -> None:
        self._sock.close(linger=0 if self.mode == "req" else 200)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
