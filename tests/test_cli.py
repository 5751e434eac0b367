"""The command line reads as plain text, names itself, and refuses bad ports cleanly; the
playground serves its icon and stays quiet when a browser hangs up."""

from __future__ import annotations

import argparse
import contextlib
import io
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from funcnn import __main__ as cli
from funcnn.playground import make_server

ROOT = Path(__file__).resolve().parents[1]


def _help(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli.main([*argv, "--help"])
    return out.getvalue()


@pytest.mark.parametrize("argv", [(), ("demo",), ("playground",)])
def test_help_is_plain_text_and_every_option_says_what_it_does(argv):
    text = _help(*argv)
    assert "``" not in text and ":func:" not in text and ":mod:" not in text
    parser = cli._parser()
    sub = {a.dest: a for a in parser._actions}.get("command")
    target = sub.choices[argv[0]] if argv else parser
    for action in target._actions:
        if not isinstance(action, argparse._SubParsersAction):
            assert action.help, f"{argv}: {action.option_strings} has no help"


def test_the_installed_command_names_itself_funcnn(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/funcnn"])
    assert _help().startswith("usage: funcnn ")
    monkeypatch.setattr(sys, "argv", ["-m"])
    assert _help().startswith("usage: python -m funcnn ")


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_a_bad_port_is_a_usage_error_not_a_traceback(port):
    proc = subprocess.run(
        [sys.executable, "-m", "funcnn", "playground", "--port", port],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "--port" in proc.stderr


def test_the_playground_serves_a_favicon_and_ignores_a_hang_up(capsys):
    server = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(server.url + "favicon.ico", timeout=10) as reply:
            assert reply.headers["Content-Type"] == "image/svg+xml"
            assert reply.read().startswith(b"<svg")
        page = urllib.request.urlopen(server.url, timeout=10).read().decode()
        assert 'rel="icon"' in page
        host, port = server.server_address[:2]
        with socket.create_connection((host, port), timeout=10) as s:  # a request cut short
            s.sendall(b"GET /app.js HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        with urllib.request.urlopen(server.url + "api/info", timeout=10) as reply:
            assert reply.status == 200  # still serving
    finally:
        server.shutdown()
        server.server_close()
    assert "Traceback" not in capsys.readouterr().err
