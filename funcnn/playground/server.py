"""The playground's server: a small JSON API over ``http.server``.

The page (``static/index.html`` + ``static/app.js``) keeps the points; the server's
``Session`` keeps, for every model it created, the params and the optax state. Each
``/api/step`` request runs ``steps`` training steps ``θ ← update(θ, ∇L(θ))`` as ONE
jit-compiled ``lax.scan``, then predicts on a ``grid × grid`` lattice over the view and
sends back the masked loss ``L = Σ_i w_i l_i / Σ_i w_i``, the accuracy and the
probabilities as JSON. The training is in :mod:`funcnn.playground.sessions`, the checks of
the request fields in :mod:`funcnn.playground.fields`.

Endpoints (all replies JSON except the static files):

* ``GET /``, ``GET /app.js``: the page.
* ``GET /api/info``: the choices and limits.
* ``POST /api/dataset`` ``{"name", "n", "seed", "noise"?}``: a toy set of :mod:`funcnn.data`.
* ``POST /api/model`` ``{"model", "layers", "width", "activation", "optimizer", "lr",
  "seed"}``: a fresh model; replies with its ``id``.
* ``POST /api/step`` ``{"id", "points", "labels", "steps", "lr", "batch_size", "grid",
  "extent"}``: train and predict.

A malformed request (invalid or too deeply nested JSON, a bad field) gets
``400 {"error": "<field>: ..."}``; an unknown path ``404``; an unknown model id ``404``; any
other failure ``500`` with its message, and the server goes on.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import urlsplit

from .. import checks
from .fields import LIMITS, RequestError

# isort: off
# in the order the API reference lists them (it follows the imports)
from .sessions import OPTIMIZERS, ModelConfig, Trainer, Session

# isort: on

__all__ = [
    "LIMITS",
    "OPTIMIZERS",
    "ModelConfig",
    "RequestError",
    "Trainer",
    "Session",
    "PlaygroundServer",
    "check_loopback",
    "make_server",
    "serve",
]


# --------------------------------------------------------------------------- HTTP


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static").joinpath(name).read_bytes()


STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
    "/favicon.ico": ("favicon.svg", "image/svg+xml"),  # browsers ask for it unprompted
}


def _is_loopback_name(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    server: PlaygroundServer
    server_version = "funcnn-playground"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:
        if self.server.verbose:
            super().log_message(fmt, *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Mapping) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _fail(self, error: Exception) -> None:
        """Reply 500 with the error's text; a client already gone is not an error."""
        self.close_connection = True
        try:
            self._json(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(error).__name__}: {error}"}
            )
        except ConnectionError:
            pass

    def _host_ok(self) -> bool:
        host = self.headers.get("Host", "")
        try:
            name = urlsplit("//" + host).hostname or ""
        except ValueError:
            name = ""
        if _is_loopback_name(name):
            return True
        self.close_connection = True  # an unread body must not be parsed as a request
        self._json(HTTPStatus.FORBIDDEN, {"error": f"Host: only loopback names, got {host!r}"})
        return False

    def do_GET(self) -> None:  # noqa: N802
        try:
            self._get()
        except ConnectionError:  # the page went away mid-reply: nothing to tell it
            self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802
        try:
            self._post()
        except ConnectionError:
            self.close_connection = True

    do_HEAD = do_GET

    def _get(self) -> None:
        try:
            if not self._host_ok():
                return
            path = self.path.split("?", 1)[0]
            if path in STATIC:
                name, ctype = STATIC[path]
                self._send(HTTPStatus.OK, _static(name), ctype)
            elif path == "/api/info":
                self._json(HTTPStatus.OK, self.server.session.info())
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"path: no such page {path!r}"})
        except Exception as e:  # a failed request must not stop the server
            self._fail(e)

    def _body(self) -> dict:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RequestError("body: a Content-Length header is required", 411)
        if int(length) > LIMITS["body_bytes"]:
            raise RequestError(f"body: larger than {LIMITS['body_bytes']} bytes", 413)
        raw = self.rfile.read(int(length))
        try:
            body = json.loads(raw)  # NaN / Infinity parse; the field checks refuse them
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RequestError(f"body: not valid JSON ({e})") from None
        except RecursionError:  # [[[[...]]]] deeper than Python's stack: the client's fault
            raise RequestError("body: JSON nested too deeply") from None
        if not isinstance(body, dict):
            raise RequestError(f"body: expected a JSON object, got {type(body).__name__}")
        return body

    def _post(self) -> None:
        routes = {
            "/api/model": self.server.session.create,
            "/api/step": self.server.session.step,
            "/api/dataset": self.server.session.dataset,
        }
        try:
            if not self._host_ok():
                return
            path = self.path.split("?", 1)[0]
            if path not in routes:
                self.close_connection = True
                self._json(HTTPStatus.NOT_FOUND, {"error": f"path: no such endpoint {path!r}"})
                return
            self._json(HTTPStatus.OK, routes[path](self._body()))
        except RequestError as e:
            if e.status in (411, 413):
                self.close_connection = True  # the unread body must not be parsed as a request
            self._json(e.status, {"error": str(e)})
        except Exception as e:  # a failed request must not stop the server
            self._fail(e)


def check_loopback(host: str) -> str:
    """Return ``host`` as an address to bind if it is a loopback one, else raise ValueError.

    ``"localhost"`` becomes ``"127.0.0.1"``; ``127.0.0.0/8`` and ``::1`` are accepted.

    >>> check_loopback("localhost"), check_loopback("[::1]")
    ('127.0.0.1', '::1')
    >>> check_loopback("0.0.0.0")
    Traceback (most recent call last):
    ...
    ValueError: host: the playground listens on loopback only (127.0.0.1, ::1), got '0.0.0.0'
    """
    if not isinstance(host, str):
        raise TypeError(f"host: expected a string, got {host!r}")
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(
            f"host: expected a loopback address such as 127.0.0.1 or ::1, got {host!r}"
        ) from None
    if not address.is_loopback:
        raise ValueError(
            f"host: the playground listens on loopback only (127.0.0.1, ::1), got {host!r}"
        )
    return str(address)


class PlaygroundServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` bound to a loopback address, holding a :class:`Session`."""

    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False):
        host = check_loopback(host)
        port = checks.port(port)
        v6 = ipaddress.ip_address(host).version == 6
        self.address_family = socket.AF_INET6 if v6 else socket.AF_INET
        self.session = Session()
        self.verbose = verbose
        super().__init__((host, port), _Handler)

    def handle_error(self, request, client_address) -> None:
        """A browser that closes its connection mid-request (a reload, a closed tab) is
        no error: nothing is printed; anything else is reported as the base class does."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        assert isinstance(host, str)  # getsockname gives an IP socket's host as a str
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"


def make_server(host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False):
    """A playground server on ``host:port`` (``port=0``: a free one), not yet serving.

    >>> server = make_server()
    >>> server.url.startswith("http://127.0.0.1:")
    True
    >>> server.server_close()
    """
    return PlaygroundServer(host, port, verbose=verbose)


def serve(host: str = "127.0.0.1", port: int = 8000, *, verbose: bool = True) -> None:
    """Serve the playground until interrupted, printing its address."""
    server = make_server(host, port, verbose=verbose)
    print(f"funcnn playground: {server.url}  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
