"""The playground's trainer and HTTP endpoints, checked against plain-numpy formulas."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request

import numpy as np
import pytest

from funcnn import data
from funcnn.__main__ import main
from funcnn.playground import ModelConfig, Session, Trainer, check_loopback, make_server, sessions
from funcnn.playground import server as srv

# --------------------------------------------------------------------------- numpy references


def np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_forward(params, x, activation):
    """The MLP of the playground in numpy: h = f(W h + b) per hidden layer, then logits."""
    f = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0.0), "sigmoid": np_sigmoid}[activation]
    h = np.asarray(x, np.float64)
    hidden = sorted(k for k in params if k.startswith("hidden_"))
    for k in hidden:
        h = f(h @ np.asarray(params[k]["w"], np.float64) + np.asarray(params[k]["b"], np.float64))
    out = params["output"]
    return h @ np.asarray(out["w"], np.float64) + np.asarray(out["b"], np.float64)


def np_softmax_ce(logits, y):
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(y)), y]


def np_logistic_gd(w, b, x, y, lr, steps):
    """Gradient descent on L = mean BCE(σ(xw + b), y): ∇w = xᵀ(σ − y)/n, ∇b = mean(σ − y)."""
    w, b = np.asarray(w, np.float64).copy(), np.asarray(b, np.float64).copy()
    for _ in range(steps):
        r = np_sigmoid(x @ w + b)[:, 0] - y
        w -= lr * (x.T @ r)[:, None] / len(y)
        b -= lr * np.array([r.mean()])
    return w, b


X5 = np.array([[0.5, -0.2], [-0.7, 0.9], [0.1, 0.3], [1.2, -1.1], [-0.4, -0.6]], np.float32)
Y5 = np.array([1, 0, 1, 0, 1], np.int32)
LOGISTIC_SGD = ModelConfig("logistic", 0, 0, "none", "sgd")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(srv.__file__))))


# --------------------------------------------------------------------------- the trainer


@pytest.mark.parametrize("activation,layers", [("tanh", 1), ("relu", 2), ("sigmoid", 3)])
def test_predictions_loss_accuracy_match_numpy(activation, layers):
    trainer = Trainer(ModelConfig("mlp", layers, 5, activation, "adam"), lr=0.01, seed=3)
    extent = (-2.0, 1.0, -0.5, 1.5)
    out = trainer.update(X5, Y5, steps=0, grid=4, extent=extent)
    logits = np_forward(trainer.params, X5, activation)
    assert out["loss"] == pytest.approx(np_softmax_ce(logits, Y5).mean(), rel=1e-5)
    assert out["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == Y5))
    # the grid: row i at y = ymax - (i + ½)·Δy, column j at x = xmin + (j + ½)·Δx
    xs = -2.0 + (np.arange(4) + 0.5) * 3.0 / 4
    ys = 1.5 - (np.arange(4) + 0.5) * 2.0 / 4
    pts = np.array([[x, y] for y in ys for x in xs])
    z = np_forward(trainer.params, pts, activation)
    p1 = np.exp(z[:, 1]) / np.exp(z).sum(axis=1)
    np.testing.assert_allclose(out["probs"], p1, atol=1e-4)
    assert out["steps_done"] == 0 and out["n"] == 5 and out["grid"] == 4


def test_scan_of_steps_is_gradient_descent_on_the_real_points_only():
    trainer = Trainer(LOGISTIC_SGD, lr=0.3, seed=0)
    w0, b0 = np.asarray(trainer.params["w"]), np.asarray(trainer.params["b"])
    out = trainer.update(X5, Y5, steps=3)  # 5 points padded to 64 with weight 0
    w, b = np_logistic_gd(w0, b0, X5, Y5, 0.3, 3)
    np.testing.assert_allclose(trainer.params["w"], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trainer.params["b"], b, rtol=1e-5, atol=1e-6)
    z = X5 @ w + b
    bce = np.mean(np.logaddexp(0, z[:, 0]) - Y5 * z[:, 0])
    assert out["loss"] == pytest.approx(bce, rel=1e-5)
    assert out["accuracy"] == pytest.approx(np.mean((z[:, 0] > 0) == (Y5 == 1)))
    assert out["steps_done"] == 3


def test_learning_rate_changes_without_a_new_model():
    trainer = Trainer(LOGISTIC_SGD, lr=0.1, seed=1)
    w, b = np.asarray(trainer.params["w"]), np.asarray(trainer.params["b"])
    trainer.update(X5, Y5, steps=3)
    trainer.update(X5, Y5, steps=3, lr=2.0)
    w, b = np_logistic_gd(w, b, X5, Y5, 0.1, 3)
    w, b = np_logistic_gd(w, b, X5, Y5, 2.0, 3)
    np.testing.assert_allclose(trainer.params["w"], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trainer.params["b"], b, rtol=1e-5, atol=1e-6)


def test_minibatches_draw_only_real_points():
    # three copies of one point: every minibatch of 1 is that point, never a padding row
    x = np.tile(np.array([[0.8, -0.3]], np.float32), (3, 1))
    y = np.ones(3, np.int32)
    trainer = Trainer(LOGISTIC_SGD, lr=0.5, seed=2)
    w, b = np.asarray(trainer.params["w"]), np.asarray(trainer.params["b"])
    trainer.update(x, y, steps=3, batch_size=1)
    w, b = np_logistic_gd(w, b, x[:1], y[:1], 0.5, 3)
    np.testing.assert_allclose(trainer.params["w"], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trainer.params["b"], b, rtol=1e-5, atol=1e-6)


def test_a_new_point_reuses_the_compiled_step_until_the_bucket_fills():
    config = ModelConfig("logistic", 0, 0, "none", "momentum")
    trainer = Trainer(config, lr=0.1)
    fn = sessions.compiled(config, 2, None)
    x = np.linspace(-1, 1, 140, dtype=np.float32).reshape(70, 2)
    y = (x[:, 0] > 0).astype(np.int32)
    for n in (5, 6, 40, 64):
        trainer.update(x[:n], y[:n], steps=2)
    assert fn._cache_size() == 1
    trainer.update(x, y, steps=2)
    assert fn._cache_size() == 2
    assert sessions.bucket(1) == 64 and sessions.bucket(65) == 128 and sessions.bucket(5000) == 8192


def test_no_points_means_no_step_and_no_loss():
    trainer = Trainer(LOGISTIC_SGD, lr=0.1)
    w = np.asarray(trainer.params["w"])
    out = trainer.update(np.zeros((0, 2), np.float32), np.zeros(0, np.int32), steps=10)
    assert out["loss"] is None and out["accuracy"] is None and out["steps_done"] == 0
    np.testing.assert_array_equal(trainer.params["w"], w)
    assert len(out["probs"]) == 50 * 50


def test_divergence_is_reported_not_raised():
    trainer = Trainer(ModelConfig("mlp", 1, 8, "relu", "sgd"), lr=10.0)
    x = np.array([[1e3, -1e3], [-1e3, 1e3]], np.float32)
    out = trainer.update(x, np.array([0, 1]), steps=3)
    assert out["loss"] is None or np.isfinite(out["loss"])
    assert all(np.isfinite(out["probs"]))
    json.dumps(out)  # the reply stays valid JSON


def test_session_tanh_network_learns_the_spirals():
    session = Session()
    model = session.create({"model": "mlp", "width": 16, "optimizer": "adam", "lr": 0.02})
    points = session.dataset({"name": "spirals", "n": 200})
    for _ in range(10):
        out = session.step({"id": model["id"], **points, "steps": 50})
    assert out["accuracy"] > 0.9 and out["steps_done"] == 500


def test_session_keeps_at_most_max_models():
    session = Session(max_models=2)
    ids = [
        session.create({"model": "logistic", "optimizer": "sgd", "lr": 0.1})["id"] for _ in "abc"
    ]
    assert list(session.trainers) == ids[1:]
    with pytest.raises(srv.RequestError, match="id: no model"):
        session.step({"id": ids[0], "points": [], "labels": []})


def test_concurrent_steps_on_one_model_are_serialized():
    session = Session()
    model_id = session.create({"model": "logistic", "optimizer": "sgd", "lr": 0.1})["id"]
    body = {"id": model_id, "points": X5.tolist(), "labels": Y5.tolist(), "steps": 3}
    threads = [threading.Thread(target=session.step, args=(body,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert session.trainers[model_id].steps_done == 12


# --------------------------------------------------------------------------- HTTP


def request(server, method, path, body=None, headers=None, raw=None):
    """``(status, headers, bytes)`` of one request to the test server."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    conn.request(method, path, body=payload, headers=headers or {})
    resp = conn.getresponse()
    out = resp.status, dict(resp.getheaders()), resp.read()
    conn.close()
    return out


def post(server, path, body=None, **kw):
    status, _, content = request(server, "POST", path, body, **kw)
    return status, json.loads(content)


def test_listens_on_loopback_only(server):
    assert server.server_address[0] == "127.0.0.1"
    assert server.url == f"http://127.0.0.1:{server.server_address[1]}/"


def test_serves_the_page_and_its_script(server):
    status, headers, page = request(server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    html = page.decode()
    assert "<canvas" in html and 'src="app.js"' in html and "http" not in html.split("<body>")[1]
    status, headers, script = request(server, "GET", "/app.js")
    assert status == 200 and "javascript" in headers["Content-Type"]
    assert b"/api/step" in script and b"http://" not in script and b"https://" not in script
    status, _, info = request(server, "GET", "/api/info")
    info = json.loads(info)
    assert info["activations"] == ["tanh", "relu", "sigmoid"] and "spirals" in info["datasets"]


@pytest.mark.parametrize("path", ["/nope", "/api", "/static/app.js", "/../pyproject.toml"])
def test_unknown_paths_are_404(server, path):
    status, _, content = request(server, "GET", path)
    assert status == 404 and "error" in json.loads(content)
    assert post(server, path, {})[0] == 404


def test_dataset_endpoint_returns_the_toy_set(server):
    status, reply = post(server, "/api/dataset", {"name": "moons", "n": 30, "seed": 4})
    x, y = data.moons(30, key=4)
    assert status == 200 and reply["labels"] == y.tolist()
    np.testing.assert_allclose(reply["points"], x, atol=1e-5)


def test_model_then_step_round_trip(server):
    status, model = post(
        server,
        "/api/model",
        {"model": "mlp", "layers": 2, "width": 6, "activation": "relu", "optimizer": "rmsprop",
         "lr": 0.01, "seed": 7},
    )  # fmt: skip
    assert status == 200 and model["params"] == (2 * 6 + 6) + (6 * 6 + 6) + (6 * 2 + 2)
    body = {"id": model["id"], "points": X5.tolist(), "labels": Y5.tolist(), "steps": 5,
            "lr": 0.02, "batch_size": 2, "grid": 8, "extent": [-2, 2, -1, 1]}  # fmt: skip
    status, reply = post(server, "/api/step", body)
    assert status == 200, reply
    assert (
        reply["steps_done"] == 5 and len(reply["probs"]) == 64 and reply["extent"] == [-2, 2, -1, 1]
    )
    assert all(0.0 <= p <= 1.0 for p in reply["probs"]) and 0.0 <= reply["accuracy"] <= 1.0
    trainer = server.session.trainers[model["id"]]
    logits = np_forward(trainer.params, X5, "relu")
    assert reply["loss"] == pytest.approx(np_softmax_ce(logits, Y5).mean(), rel=1e-5)


MODEL = {
    "model": "mlp",
    "layers": 1,
    "width": 4,
    "activation": "tanh",
    "optimizer": "sgd",
    "lr": 0.1,
}
BAD_MODELS = [
    ({"width": 0}, "width"),
    ({"width": 257}, "width"),
    ({"width": "8"}, "width"),
    ({"width": 4.5}, "width"),
    ({"width": True}, "width"),
    ({"layers": 4}, "layers"),
    ({"layers": 0}, "layers"),
    ({"lr": 0}, "lr"),
    ({"lr": -0.1}, "lr"),
    ({"lr": 10.5}, "lr"),
    ({"lr": None}, "lr"),
    ({"lr": "0.1"}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"lr": float("inf")}, "lr"),
    ({"model": "cnn"}, "model"),
    ({"activation": "gelu"}, "activation"),
    ({"optimizer": "lbfgs"}, "optimizer"),
    ({"seed": -1}, "seed"),
]


@pytest.mark.parametrize("change,field", BAD_MODELS)
def test_bad_model_requests_are_400_naming_the_field(server, change, field):
    status, reply = post(server, "/api/model", {**MODEL, **change})
    assert status == 400 and reply["error"].startswith(field + ":"), reply


@pytest.mark.parametrize("field", ["model", "optimizer", "lr"])
def test_missing_model_fields_are_400(server, field):
    body = {k: v for k, v in MODEL.items() if k != field}
    status, reply = post(server, "/api/model", body)
    assert status == 400 and reply["error"] == f"{field}: missing field"


@pytest.fixture(scope="module")
def model_id(server):
    return post(server, "/api/model", MODEL)[1]["id"]


BAD_STEPS = [
    ({"points": [[0, 0]] * 5001, "labels": [0] * 5001}, "points"),
    ({"points": "0,0"}, "points"),
    ({"points": [[0, 0, 0]], "labels": [0]}, "points[0]"),
    ({"points": [[0, float("nan")]], "labels": [0]}, "points[0]"),
    ({"points": [[0, 1e9]], "labels": [0]}, "points[0]"),
    ({"points": [[0, "a"]], "labels": [0]}, "points[0]"),
    ({"points": [[0, 0]], "labels": [2]}, "labels[0]"),
    ({"points": [[0, 0]], "labels": [True]}, "labels[0]"),
    ({"points": [[0, 0]], "labels": [0, 1]}, "labels"),
    ({"steps": 1001}, "steps"),
    ({"steps": -1}, "steps"),
    ({"lr": 100}, "lr"),
    ({"lr": None}, "lr"),
    ({"batch_size": 0}, "batch_size"),
    ({"grid": 1000}, "grid"),
    ({"extent": [1, -1, -1, 1]}, "extent"),
    ({"extent": [0, 1]}, "extent"),
    ({"extent": [0, 1, 0, float("inf")]}, "extent"),
]


@pytest.mark.parametrize("change,field", BAD_STEPS)
def test_bad_step_requests_are_400_naming_the_field(server, model_id, change, field):
    body = {"id": model_id, "points": [[0.0, 0.0]], "labels": [1], **change}
    status, reply = post(server, "/api/step", body)
    assert status == 400 and reply["error"].startswith(field + ":"), reply


def test_unknown_model_id_is_404(server):
    status, reply = post(server, "/api/step", {"id": "0" * 12, "points": [], "labels": []})
    assert status == 404 and reply["error"].startswith("id:")


@pytest.mark.parametrize(
    "change,field",
    [({"name": "mnist"}, "name"), ({"n": 1}, "n"), ({"n": 10**6}, "n"), ({"noise": -1}, "noise")],
)
def test_bad_dataset_requests_are_400(server, change, field):
    status, reply = post(server, "/api/dataset", {"name": "xor", **change})
    assert status == 400 and reply["error"].startswith(field + ":"), reply


@pytest.mark.parametrize(
    "raw,status,prefix",
    [
        (b"not json", 400, "body:"),
        (b"[1, 2]", 400, "body:"),
        (b"\xff\xfe", 400, "body:"),
        (b'{"model": "logistic", "optimizer": "sgd", "lr": NaN}', 400, "lr:"),
        (b'{"model": "logistic", "optimizer": "sgd", "lr": Infinity}', 400, "lr:"),
        (b'{"model": "logistic", "optimizer": "sgd", "lr": 1e999}', 400, "lr:"),
    ],
)
def test_malformed_bodies_are_400(server, raw, status, prefix):
    code, reply = post(server, "/api/model", raw=raw, headers={"Content-Type": "application/json"})
    assert code == status and reply["error"].startswith(prefix), reply


def test_body_size_and_length_are_checked(server):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.putrequest("POST", "/api/model")
    conn.putheader("Content-Length", str(10**9))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error"].startswith("body:")
    conn.close()
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.putrequest("POST", "/api/model")
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 411
    conn.close()


def test_foreign_host_header_is_refused(server):
    status, _, content = request(server, "GET", "/api/info", headers={"Host": "evil.example:80"})
    assert status == 403 and json.loads(content)["error"].startswith("Host:")
    assert request(server, "GET", "/", headers={"Host": "localhost:1234"})[0] == 200


def test_a_failing_request_does_not_stop_the_server(server, monkeypatch):
    def boom(body):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(server.session, "dataset", boom)
    status, reply = post(server, "/api/dataset", {"name": "xor"})
    assert status == 500 and "disk on fire" in reply["error"]
    monkeypatch.undo()
    assert post(server, "/api/dataset", {"name": "xor", "n": 4})[0] == 200


def test_a_client_that_hangs_up_mid_request_does_not_stop_the_server(server):
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(b"POST /api/step HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
    assert post(server, "/api/dataset", {"name": "xor", "n": 4})[0] == 200


def test_server_is_alive_after_all_the_bad_requests(server):
    with urllib.request.urlopen(server.url + "api/info", timeout=10) as resp:
        assert resp.status == 200


# --------------------------------------------------------------------------- host and CLI


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts_are_accepted(host):
    assert check_loopback(host) in ("127.0.0.1", "127.0.0.2", "::1")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.com", ""])
def test_other_hosts_are_refused(host):
    with pytest.raises(ValueError, match="host:"):
        check_loopback(host)
    with pytest.raises(ValueError, match="host:"):
        make_server(host, 0)


def test_bad_port_is_refused():
    with pytest.raises(ValueError, match="port:"):
        make_server("127.0.0.1", 70000)


def test_cli_refuses_a_public_host(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["playground", "--host", "0.0.0.0", "--port", "0"])
    assert exc.value.code == 2 and "loopback" in capsys.readouterr().err


def test_cli_serves_and_prints_its_address():
    proc = subprocess.Popen(
        [sys.executable, "-m", "funcnn", "playground", "--port", "0", "--quiet"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")},
    )
    try:
        line = proc.stdout.readline()
        url = line.split()[2]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "api/info", timeout=30) as resp:
            assert json.loads(resp.read())["models"] == ["logistic", "mlp"]
    finally:
        proc.terminate()
        proc.wait(10)
