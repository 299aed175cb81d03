"""Hardening of the served dashboard (issue 13, case 3): a real `streamlit run` refuses a
foreign Host header (DNS rebinding), and uncaught errors show no details in the browser."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlparse


from test_e2e_browser import server  # noqa: F401  (the fixture: a fresh loopback server)

ROOT = Path(__file__).resolve().parent.parent


def _websocket_handshake(base: str, host_header: str) -> str:
    """The status line the server answers to a WebSocket upgrade of /_stcore/stream."""
    url = urlparse(base)
    request = (f"GET /_stcore/stream HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: streamlit\r\n\r\n")
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(request.encode())
        return sock.recv(4096).decode(errors="replace").split("\r\n", 1)[0]


def test_loopback_server_refuses_a_foreign_host_header(server):  # noqa: F811
    base, _ = server
    port = urlparse(base).port
    assert " 101 " in _websocket_handshake(base, f"127.0.0.1:{port}") + " "
    assert " 101 " in _websocket_handshake(base, f"localhost:{port}") + " "
    refused = _websocket_handshake(base, f"attacker.example:{port}")
    assert " 101" not in refused, refused


def test_error_details_are_hidden_from_the_browser(monkeypatch):
    from streamlit import config

    monkeypatch.chdir(ROOT)
    config.get_config_options(force_reparse=True)
    try:
        assert config.get_option("client.showErrorDetails") == "none"
        assert "localhost" in config.get_option("server.allowedHosts")
    finally:
        monkeypatch.undo()
        config.get_config_options(force_reparse=True)
