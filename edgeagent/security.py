"""ZeroMQ CURVE encryption + client allow-list, and an IP allow-list for plain (NULL) peers.

Both go through ZAP (ZeroMQ's authentication protocol) with pyzmq's ``ThreadAuthenticator``: a refused
peer never completes its handshake, so none of its messages reach the agent's sockets, let alone
the model. Refusals are counted (``edgeagent_auth_refused_total``) and logged, rate-limited, by the
I/O thread from socket monitors (``EVENT_HANDSHAKE_FAILED_AUTH``, a public libzmq event) on the
guarded sockets: no private pyzmq method is overridden.

Unmodified imagezmq senders cannot do CURVE; for them the documented option is ``allow_ips`` on the
ROUTER (``curve_exempt = ["listen"]`` keeps that socket plain while the others use CURVE).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from edgeagent.config import SecurityConfig
from edgeagent.errors import ConfigError

log = logging.getLogger("edgeagent.security")
ZAP_DOMAIN = "edgeagent"


class Guard:
    """Applies the security settings to the agent's bound sockets."""

    def __init__(self, ctx: zmq.Context[Any], cfg: SecurityConfig) -> None:
        self.cfg = cfg
        self.auth: ThreadAuthenticator | None = None
        self.public: bytes | None = None
        self.secret: bytes | None = None
        if cfg.curve_secret_key:
            path = Path(cfg.curve_secret_key)
            try:
                self.public, self.secret = zmq.auth.load_certificate(path)
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"security.curve_secret_key = {str(path)!r}: cannot load a CURVE secret "
                    f"certificate ({exc}); make one with `edgeagent keys generate`"
                ) from None
            if self.secret is None:
                raise ConfigError(
                    f"security.curve_secret_key = {str(path)!r}: this is a public certificate; "
                    "give the .key_secret file"
                )
            allow = Path(cfg.curve_allow_dir or "")
            if not cfg.curve_allow_dir or not allow.is_dir() or not list(allow.glob("*.key")):
                raise ConfigError(
                    f"security.curve_allow_dir = {cfg.curve_allow_dir!r}: expected a directory of "
                    "allowed client public certificates (*.key)"
                )
        if self.secret is not None or cfg.allow_ips:
            self.auth = ThreadAuthenticator(ctx, log=logging.getLogger("edgeagent.zap"))
            self.auth.start()
            if cfg.allow_ips:
                self.auth.allow(*cfg.allow_ips)
            if self.secret is not None:
                self.auth.configure_curve(domain="*", location=str(cfg.curve_allow_dir))

    def describe(self) -> str:
        mech = "curve" if self.secret is not None else "null"
        ips = ",".join(self.cfg.allow_ips) or "-"
        return f"mechanism={mech} allow_ips={ips} exempt={','.join(self.cfg.curve_exempt) or '-'}"

    def apply(self, sock: zmq.Socket[Any], kind: str) -> None:
        """Before bind: CURVE server for this socket kind, or a ZAP domain for the IP allow-list."""
        if self.secret is not None and kind not in self.cfg.curve_exempt:
            sock.curve_secretkey = self.secret
            sock.curve_publickey = self.public
            sock.curve_server = True
        elif self.cfg.allow_ips:
            sock.zap_domain = ZAP_DOMAIN.encode()  # NULL mechanism: ZAP still checks the address

    def stop(self) -> None:
        if self.auth is not None:
            self.auth.stop()
            self.auth = None


def generate_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """``edgeagent keys generate``: a CURVE key pair in ZeroMQ's certificate format."""
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(directory), name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)
