"""CURVE with a client allow-list, and the IP allow-list for plain imagezmq senders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from edgeagent.publisher import Publisher
from edgeagent.wire import encode_native
from tests.helpers import run_cli, wait_until

IMG = np.random.default_rng(11).integers(0, 256, (224, 224, 3), dtype=np.uint8)


def keys(tmp_path: Path, name: str, sub: str) -> tuple[Path, Path]:
    out = run_cli("keys", "generate", str(tmp_path / sub), "--name", name, timeout=60)
    assert out.returncode == 0, out.stderr
    public, secret = (tmp_path / sub / f"{name}.key", tmp_path / sub / f"{name}.key_secret")
    assert public.exists() and secret.exists() and (secret.stat().st_mode & 0o777) == 0o600
    assert "curve" in public.read_text() and "secret-key" in secret.read_text()
    return public, secret


def test_curve_allows_listed_clients_only(start_agent: Any, tmp_path: Path) -> None:
    server_pub, server_sec = keys(tmp_path, "server", "server")
    client_pub, client_sec = keys(tmp_path, "cam", "clients")
    _, stranger_sec = keys(tmp_path, "stranger", "strangers")
    agent = start_agent("--curve-secret-key", str(server_sec), "--curve-allow-dir", str(client_pub.parent))
    agent.wait_for("event=security mechanism=curve")
    with Publisher(
        agent.listen,
        source="trusted",
        mode="req",
        timeout_s=10,
        curve_server_key=str(server_pub),
        curve_client_key=str(client_sec),
    ) as p:
        reply = p.send(IMG)
    assert isinstance(reply, dict) and reply["status"] == "ok"
    with Publisher(
        agent.listen,
        source="stranger",
        mode="req",
        timeout_s=1.5,
        curve_server_key=str(server_pub),
        curve_client_key=str(stranger_sec),
    ) as p:
        assert p.send(IMG) is None  # handshake refused: no reply, ever
    with Publisher(agent.listen, source="plain", mode="req", timeout_s=1.5) as p:
        assert p.send(IMG) is None  # no CURVE at all
    # A push is fire and forget: watch its handshake, so that the check below comes after the agent
    # refused it, not merely before the frame could have arrived.
    push: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.curve_serverkey = zmq.auth.load_certificate(server_pub)[0]
    push.curve_publickey, push.curve_secretkey = zmq.auth.load_certificate(stranger_sec)
    monitor = push.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    push.connect(agent.pull)
    try:  # never blocks: once the handshake is refused there is no pipe to queue it on
        push.send_multipart(encode_native("stranger-push", 0, IMG), zmq.NOBLOCK)
    except zmq.Again:
        pass
    assert monitor.poll(30_000), "the agent did not refuse a CURVE client that is not on its list"
    assert recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    push.disable_monitor()
    monitor.close()
    push.close()
    st = agent.scrape()
    assert st["edgeagent_auth_refused_total"] >= 1
    sources = st["sources"]
    assert set(sources) == {"trusted"}  # nothing from the refused peers reached the agent
    agent.wait_for("event=peer_refused")


def test_ip_allow_list_for_plain_senders(start_agent: Any) -> None:
    agent = start_agent("--allow-ip", "127.0.0.2")
    port = agent.listen.rsplit(":", 1)[1]
    # imagezmq wire format over REQ, as an unmodified ImageSender sends it, from two source addresses.
    with Publisher(
        f"tcp://127.0.0.2:0;127.0.0.1:{port}", source="allowed", mode="req", fmt="imagezmq", timeout_s=10
    ) as p:
        reply = p.send(IMG)
    assert isinstance(reply, dict) and reply["status"] == "ok"
    with Publisher(agent.listen, source="denied", mode="req", fmt="imagezmq", timeout_s=1.5) as p:
        assert p.send(IMG) is None

    # The refusal is counted by the agent's ZAP thread: wait for it rather than assume it is done.
    def refused() -> dict[str, Any] | None:
        st = agent.scrape()
        return st if st["edgeagent_auth_refused_total"] >= 1 else None

    st = wait_until(refused, 30, "the refusal to be counted", agent.log)
    assert set(st["sources"]) == {"allowed"}


def test_bad_security_config_is_a_config_error(tmp_path: Path) -> None:
    public, _ = keys(tmp_path, "server", "k")
    out = run_cli("run", "--curve-secret-key", str(public), "--curve-allow-dir", str(tmp_path / "k"), "--metrics", "")
    assert out.returncode == 78 and "public certificate" in out.stderr
