"""`imgcls serve`: the endpoints, request batching, bad uploads, TF Serving's REST API, and the real server.

The first part drives the app in-process (Starlette's test client) with a
stand-in model, so no model is fitted; the second starts `imgcls serve` as a
user does, on a trained run and on each export, and stops it with a signal.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_user_error, png_header, run_cli, truncated_jpeg
from PIL import Image

pytest.importorskip("starlette", reason="imgcls[serve] is not installed")
from starlette.testclient import TestClient  # noqa: E402

from imgcls.infer.classifier import Classifier  # noqa: E402
from imgcls.serve.app import create_app  # noqa: E402
from imgcls.serve.model import ServedModel  # noqa: E402

CLASSES = ["dark", "light"]


def brightness_model(fail_on=None):
    """A stand-in classifier: 'light' by mean brightness; raises on a batch holding an image of brightness `fail_on`."""
    def predict_batch(images: np.ndarray) -> np.ndarray:
        brightness = images.reshape(len(images), -1).mean(axis=1) / 255
        if fail_on is not None and np.any(np.abs(brightness * 255 - fail_on) < 1):
            raise RuntimeError("out of memory on the device")
        return np.stack([1 - brightness, brightness], axis=1)

    return Classifier(CLASSES, (8, 8), 3, predict_batch, "tflite", Path("brightness.tflite"), outputs=2)


def png(value: int, size=(20, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def client_of():
    """A test client for an app over a ServedModel of `classifier`, lifespan started; closed after the test."""
    clients = []

    def make(classifier=None, **limits) -> TestClient:
        served = ServedModel(classifier or brightness_model(), "brightness")
        served.warm_up(limits.get("max_batch", 32))
        client = TestClient(create_app(served, **limits))
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def assert_one_line_error(response, status: int, *fragments):
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    message = response.json()["error"]
    assert "\n" not in message and "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, message


# --------------------------------------------------------------------------- POST /predict


def test_predict_answers_with_the_fields_of_predict_json(client_of):
    response = client_of().post("/predict", files=[("file", ("white.png", png(250), "image/png")),
                                                   ("file", ("black.png", png(5), "image/png"))], data={"top_k": "2"})
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["path"] for p in predictions] == ["white.png", "black.png"]
    assert [p["label"] for p in predictions] == ["light", "dark"]
    assert set(predictions[0]) == {"path", "label", "confidence", "top_k"}
    assert [t["label"] for t in predictions[0]["top_k"]] == ["light", "dark"]
    assert predictions[0]["confidence"] == pytest.approx(250 / 255, abs=1e-3)


def test_predict_takes_base64_json_and_a_raw_image_body(client_of):
    client = client_of()
    as_json = client.post("/predict", json={"images": [b64(png(250)), {"name": "b.png", "b64": "data:image/png;base64,"
                                                                       + b64(png(5))}], "top_k": 2})
    assert [(p["path"], p["label"]) for p in as_json.json()["predictions"]] == [("images[0]", "light"), ("b.png", "dark")]
    raw = client.post("/predict", content=png(250), headers={"content-type": "image/png", "x-filename": "w.png"})
    assert raw.json()["predictions"][0]["label"] == "light"


BAD_UPLOADS = {
    "not an image": (b"just some text, not a picture", "image/png", 400, "not an image"),
    "truncated": (None, "image/jpeg", 400, "truncated"),
    "decompression bomb": (png_header(100_000, 100_000), "image/png", 413, "too large"),
    "empty body": (b"", "image/png", 400, "empty"),
    "wrong content type": (png(200), "text/plain", 415, "content type"),
    "invalid JSON": (b"{not json", "application/json", 400, "not valid JSON"),
    "JSON without images": (b'{"pictures": []}', "application/json", 400, '"images"'),
    "bad base64": (b'{"images": ["***"]}', "application/json", 400, "base64"),
}


@pytest.mark.parametrize("kind", list(BAD_UPLOADS))
def test_each_bad_upload_is_a_one_line_4xx_and_the_next_request_is_served(client_of, kind, tmp_path):
    contents, content_type, status, fragment = BAD_UPLOADS[kind]
    if contents is None:
        contents = truncated_jpeg(tmp_path / "cut.jpg").read_bytes()
    client = client_of()
    assert_one_line_error(client.post("/predict", content=contents, headers={"content-type": content_type}), status, fragment)
    assert client.post("/predict", content=png(250), headers={"content-type": "image/png"}).status_code == 200


def test_images_tensorflow_cannot_read_as_sent_are_converted_as_the_scan_converts_files(client_of, tmp_path):
    """WebP, CMYK JPEG, transparent PNG and an EXIF-rotated photo: each answered, not refused."""
    from conftest import exif_rotated_jpeg

    def encoded(image: Image.Image, fmt: str) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        return buffer.getvalue()

    light = Image.new("RGB", (16, 16), (240, 240, 240))
    uploads = {"webp": encoded(light, "WEBP"), "cmyk": encoded(light.convert("CMYK"), "JPEG"),
               "rgba": encoded(Image.new("RGBA", (16, 16), (0, 0, 0, 0)), "PNG"),  # see-through: white, as in training
               "exif": exif_rotated_jpeg(tmp_path / "rotated.jpg").read_bytes()}
    response = client_of().post("/predict", files=[("file", (name, data, "image/*")) for name, data in uploads.items()])
    assert response.status_code == 200, response.text
    labels = {p["path"]: p["label"] for p in response.json()["predictions"]}
    assert labels["webp"] == labels["cmyk"] == labels["rgba"] == "light"


@pytest.mark.parametrize("top_k", [0, -1, 2.7, True, "three", 1e400, float("-inf")], ids=str)
def test_a_top_k_that_is_not_a_whole_number_of_at_least_one_is_a_400(client_of, top_k):
    body = json.dumps({"images": [b64(png(250))], "top_k": top_k}).encode()  # 1e400 and -inf as JSON writes them
    assert_one_line_error(client_of().post("/predict", content=body, headers={"content-type": "application/json"}),
                          400, "top_k")


def test_more_files_than_one_request_takes_is_the_documented_413(client_of):
    files = [("file", (f"{i}.png", png(i % 256), "image/png")) for i in range(300)]
    assert_one_line_error(client_of().post("/predict", files=files), 413, "at most 256")


def test_a_utf8_file_name_comes_back_as_sent(client_of):
    response = client_of().post("/predict", content=png(250),
                                headers={"content-type": "image/png", "x-filename": "ünï😀.png".encode()})
    assert response.json()["predictions"][0]["path"] == "ünï😀.png"


def test_a_heic_upload_says_what_would_read_it(client_of):
    response = client_of().post("/predict", files=[("file", ("photo.heic", b"\0\0\0\x18ftypheic junk", "image/heic"))])
    assert_one_line_error(response, 400, "photo.heic", "HEIC")


def test_a_bad_file_among_good_ones_is_named(client_of):
    response = client_of().post("/predict", files=[("file", ("good.png", png(250), "image/png")),
                                                   ("file", ("notes.txt", b"hello", "text/plain"))])
    assert_one_line_error(response, 400, "notes.txt")


def test_an_upload_over_the_limit_is_413_whether_announced_or_streamed(client_of):
    client = client_of(max_upload_mb=0.5)
    big = np.random.default_rng(0).integers(0, 255, (600, 600, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, format="PNG")
    assert len(buffer.getvalue()) > 2**19
    assert_one_line_error(client.post("/predict", content=buffer.getvalue(), headers={"content-type": "image/png"}),
                          413, "upload limit of 0.5 MB", "--max-upload-mb")
    chunks = (buffer.getvalue()[i:i + 65536] for i in range(0, len(buffer.getvalue()), 65536))  # no Content-Length
    assert_one_line_error(client.post("/predict", content=chunks, headers={"content-type": "image/png"}), 413, "upload limit")
    assert client.post("/predict", content=png(250), headers={"content-type": "image/png"}).status_code == 200


def test_a_model_error_is_a_500_logged_and_the_server_goes_on(client_of, caplog):
    client = client_of(brightness_model(fail_on=128))
    assert_one_line_error(client.post("/predict", content=png(128), headers={"content-type": "image/png"}), 500,
                          "the model failed", "out of memory")
    assert any("out of memory" in record.getMessage() for record in caplog.records if record.name == "imgcls.serve")
    assert client.post("/predict", content=png(250), headers={"content-type": "image/png"}).json()["predictions"][0]["label"] == "light"


def test_unknown_paths_and_methods_are_one_line_json(client_of):
    client = client_of()
    assert_one_line_error(client.get("/nowhere"), 404, "no such endpoint")
    assert_one_line_error(client.get("/predict"), 405, "GET is not allowed")
    assert_one_line_error(client.post("/predict?top_k=lots", content=png(1), headers={"content-type": "image/png"}), 400, "top_k")


# --------------------------------------------------------------------------- batching


def test_requests_arriving_together_are_predicted_as_one_batch_each_getting_its_own_answer(client_of):
    client = client_of(max_batch=8, max_wait_ms=60_000)  # a full batch goes at once: no timing in this test
    values = [10, 240, 30, 220, 50, 200, 70, 180]
    answers = {}

    def ask(value):
        response = client.post("/predict", content=png(value), headers={"content-type": "image/png", "x-filename": str(value)})
        answers[value] = response.json()["predictions"][0]

    threads = [threading.Thread(target=ask, args=(v,)) for v in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for value in values:
        assert answers[value]["path"] == str(value)
        assert answers[value]["label"] == ("light" if value > 127 else "dark")
        assert answers[value]["confidence"] == pytest.approx(max(value, 255 - value) / 255, abs=1e-3)
    stats = client.get("/healthz").json()
    assert stats["largest_batch"] == 8 and stats["batches"] == 1  # the warm-up is not counted


def test_a_request_larger_than_max_batch_is_split_and_kept_in_order(client_of):
    client = client_of(max_batch=3, max_wait_ms=0)
    values = [10, 240, 30, 220, 50, 200, 70]
    response = client.post("/predict", files=[("file", (f"{v}.png", png(v), "image/png")) for v in values])
    assert [p["path"] for p in response.json()["predictions"]] == [f"{v}.png" for v in values]
    assert [p["label"] for p in response.json()["predictions"]] == ["light" if v > 127 else "dark" for v in values]
    assert client.get("/healthz").json()["largest_batch"] == 3


def test_the_model_only_ever_sees_the_few_batch_sizes_warmed_up_at_start(client_of):
    """Memory holds from the first request: TensorFlow keeps buffers per input shape (docs/benchmarks.md, Serve)."""
    from imgcls.serve.batcher import batch_sizes

    seen = []
    model = brightness_model()
    predict = model.predict_batch
    model.predict_batch = lambda images: seen.append(len(images)) or predict(images)
    client = client_of(model, max_batch=16, max_wait_ms=200)
    warm = list(seen)
    values = list(range(0, 256, 7))  # 37 images in one request, and 13 single ones at once
    threads = [threading.Thread(target=lambda v=v: client.post("/predict", content=png(v), headers={"content-type": "image/png"}))
               for v in values[:13]]
    for thread in threads:
        thread.start()
    answer = client.post("/predict", files=[("file", (f"{v}.png", png(v), "image/png")) for v in values])
    for thread in threads:
        thread.join()
    assert warm == batch_sizes(16) == [1, 2, 4, 8, 16]
    assert set(seen) <= set(warm) and sum(seen[len(warm):]) == 13 + len(values)
    assert [p["label"] for p in answer.json()["predictions"]] == ["light" if v > 127 else "dark" for v in values]


# --------------------------------------------------------------------------- TF Serving's REST API


def test_tf_serving_instances_of_encoded_images_and_of_pixels(client_of):
    client = client_of()
    encoded = client.post("/v1/models/brightness:predict", json={"instances": [{"b64": b64(png(250))}, {"b64": b64(png(5))}]})
    assert np.argmax(encoded.json()["predictions"], axis=1).tolist() == [1, 0]
    pixels = client.post("/v1/models/brightness:predict", json={"instances": np.full((2, 8, 8, 3), 255.0).tolist()})
    assert pixels.json() == {"predictions": [[0.0, 1.0], [0.0, 1.0]]}
    named = client.post("/v1/models/brightness/versions/1:predict",
                        json={"signature_name": "serving_default", "instances": [{"images": {"b64": b64(png(250))}}]})
    assert np.argmax(named.json()["predictions"], axis=1).tolist() == [1]


def test_tf_serving_columnar_inputs_are_answered_as_outputs(client_of):
    response = client_of().post("/v1/models/brightness:predict", json={"inputs": {"images": np.zeros((1, 8, 8, 3)).tolist()}})
    assert response.json() == {"outputs": [[1.0, 0.0]]}


def test_tf_serving_json_posted_as_curl_d_posts_it_is_taken(client_of):
    """TF Serving's own examples use `curl -d '{"instances": ...}'`, which says application/x-www-form-urlencoded."""
    response = client_of().post("/v1/models/brightness:predict", content=json.dumps({"instances": [{"b64": b64(png(250))}]}),
                                headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200 and np.argmax(response.json()["predictions"][0]) == 1


def test_tf_serving_mistakes_are_one_line_errors(client_of):
    client = client_of()
    assert_one_line_error(client.post("/v1/models/brightness:predict", json={"instances": [{"x": {"y": 1}}]}), 400, "b64")
    assert_one_line_error(client.post("/v1/models/other:predict", json={"instances": [{"b64": b64(png(1))}]}), 404,
                          "'other'", "'brightness'")
    assert_one_line_error(client.post("/v1/models/brightness:predict", json={"instances": np.zeros((1, 4, 4, 3)).tolist()}),
                          400, "shape [4, 4, 3]", "[8, 8, 3]")
    assert_one_line_error(client.post("/v1/models/brightness:predict", json={"rows": []}), 400, '"instances"')
    assert client.get("/v1/models/brightness").json()["model_version_status"][0]["state"] == "AVAILABLE"


# --------------------------------------------------------------------------- health, metadata, the page


def test_healthz_and_metadata_describe_the_model(client_of):
    client = client_of(max_batch=4)
    assert client.get("/healthz").json()["status"] == "ready"
    meta = client.get("/metadata").json()
    assert meta["classes"] == CLASSES and meta["input"] == {**meta["input"], "height": 8, "width": 8, "channels": 3}
    assert meta["server"]["max_batch"] == 4 and meta["versions"]["imgcls"]


def test_the_page_is_served_by_imgcls_and_fetches_nothing_from_elsewhere(client_of):
    page = client_of().get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text)
    assert "http://" not in page.text and "https://" not in page.text


# --------------------------------------------------------------------------- the command's own errors


def test_serve_without_its_extra_names_the_extra(cli, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert_user_error(cli("serve", "--model", "x.tflite"), "uvicorn", "pip install 'imgcls[serve]'")


def test_serve_on_a_port_in_use_says_so(cli, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_user_error(cli("serve", "--model", tmp_path / "m.tflite", "--port", port), f"port {port}", "in use", "--port")


def test_serve_a_missing_model_is_one_line(cli, tmp_path):
    assert_user_error(cli("serve", "--model", tmp_path / "nothing.keras", "--port", 0), "nothing.keras", "no such")


def test_serve_a_text_file_named_keras_says_it_is_not_a_model(cli, tmp_path):
    (tmp_path / "model.keras").write_text("not a model")
    assert_user_error(cli("serve", "--model", tmp_path / "model.keras", "--port", 0), "model.keras", "not a .keras model file")


def test_serve_a_run_without_runs_is_one_line(cli, tmp_path):
    assert_user_error(cli("serve", "--runs-dir", tmp_path, "--port", 0), "no runs yet")


# --------------------------------------------------------------------------- the real server (slow: a trained run)


class RunningServer:
    """`imgcls serve ARGS --port 0` as a process of its own, as a user starts it; the port read from its start line."""

    def __init__(self, *args, python=sys.executable):
        self.process = subprocess.Popen([str(python), "-m", "imgcls", "serve", *map(str, args), "--port", "0"],
                                        stderr=subprocess.PIPE, text=True)
        self.lines = []
        for line in self.process.stderr:
            self.lines.append(line)
            found = re.search(r"http://[^:/]+:(\d+)/", line)
            if found:
                self.url = f"http://127.0.0.1:{found.group(1)}"
                break
        else:
            raise AssertionError("the server did not start: " + "".join(self.lines))

    def post(self, path: str, body: bytes, content_type: str, timeout: float = 60) -> tuple[int, dict]:
        request = urllib.request.Request(self.url + path, data=body, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    @contextlib.contextmanager
    def half_sent_request(self, path: str, body: bytes, content_type: str):
        """A request that is inside the app, its body not yet sent: the server has asked for it (100 Continue)."""
        port = int(self.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
            connection.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                               f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode())
            assert connection.recv(100).startswith(b"HTTP/1.1 100")
            yield connection

    def wait_for_line(self, text: str) -> str:
        for line in self.process.stderr:
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r}: " + "".join(self.lines))

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=60)
        finally:
            self.rest = self.process.stderr.read()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def read_response(connection: socket.socket) -> tuple[int, dict]:
    response = http.client.HTTPResponse(connection)
    response.begin()
    return response.status, json.loads(response.read())


def multipart(files: list[Path]) -> tuple[bytes, str]:
    boundary = "imgcls-test-boundary"
    parts = []
    for path in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + path.read_bytes() + b"\r\n")
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n3\r\n--{boundary}--\r\n'.encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory) -> dict:
    """The trained run and its exports: {what `imgcls serve` is given: the arguments}."""
    run = tmp_path_factory.mktemp("serve") / trained_run.name
    shutil.copytree(trained_run, run)
    targets = {"run": [run]}
    for fmt in ("keras", "savedmodel", "tflite"):
        out = run.parent / f"export-{fmt}"
        result = run_cli("export", run, "--format", fmt, "--out", out)
        assert result.exit_code == 0, result.output
        targets[fmt] = ["--model", out]
    return targets


@pytest.fixture(scope="module")
def sample_images(tiny_data) -> list[Path]:
    return sorted(tiny_data.rglob("*.png"))[::7][:6]


@pytest.mark.parametrize("what", ["run", "keras", "savedmodel", "tflite"])
def test_serve_answers_as_imgcls_predict_does(exported, sample_images, what):
    model = ["--run", exported["run"][0]] if what == "run" else exported[what]
    result = run_cli("predict", *sample_images, *model, "--json", "--top-k", "3")
    assert result.exit_code == 0, result.output
    expected = [(Path(p["path"]).name, p["label"], p["confidence"]) for p in json.loads(result.stdout)]
    with RunningServer(*exported[what]) as server:
        status, answer = server.post("/predict", *multipart(sample_images))
        assert status == 200, answer
        got = [(p["path"], p["label"], p["confidence"]) for p in answer["predictions"]]
        assert [g[:2] for g in got] == [e[:2] for e in expected]
        assert [g[2] for g in got] == pytest.approx([e[2] for e in expected], abs=0.02)
        meta = server.get("/metadata")
        assert meta["kind"] == ("keras" if what == "run" else what)
        # the name in /v1/models/<name>: the run's without its time stamp, or the export folder's
        assert meta["model"] == ("tiny" if what == "run" else f"export-{what}")
        if what == "tflite":  # LiteRT and data.lite_image: TensorFlow is never loaded into the server
            assert "tensorflow" not in Path(f"/proc/{server.process.pid}/maps").read_text()
        assert server.stop() == 0


def test_serve_speaks_tf_serving_rest_for_a_savedmodel(exported, sample_images):
    with RunningServer(*exported["savedmodel"], "--name", "colours") as server:
        status, by_file = server.post("/predict", *multipart(sample_images))
        instances = [{"b64": b64(p.read_bytes())} for p in sample_images]
        status, answer = server.post("/v1/models/colours:predict", json.dumps({"instances": instances}).encode(),
                                     "application/json")
        assert status == 200, answer
        classes = server.get("/metadata")["classes"]
        assert [classes[int(np.argmax(row))] for row in answer["predictions"]] == [p["label"] for p in by_file["predictions"]]
        pixels = [np.asarray(Image.open(p).convert("RGB").resize((32, 32))).tolist() for p in sample_images[:2]]
        status, answer = server.post("/v1/models/colours:predict", json.dumps({"instances": pixels}).encode(),
                                     "application/json")
        assert status == 200 and len(answer["predictions"]) == 2
        assert server.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_drains_the_request_in_flight_and_exits_0(exported, sample_images, sig):
    with RunningServer(*exported["run"]) as server:
        body = sample_images[0].read_bytes()
        with server.half_sent_request("/predict", body, "image/png") as upload:
            server.process.send_signal(sig)
            assert "1 request in flight" in server.wait_for_line("stopping")
            upload.sendall(body)  # the rest of the request, after the signal: still answered
            status, answer = read_response(upload)
        assert status == 200 and answer["predictions"][0]["label"]
        assert server.stop(signal.SIGTERM) == 0  # the first signal's drain ends the process; this one finds it gone
        assert "Traceback" not in server.rest


def test_a_second_ctrl_c_stops_at_once_with_130(exported, sample_images):
    with RunningServer(*exported["run"]) as server:
        with server.half_sent_request("/predict", sample_images[0].read_bytes(), "image/png"):
            server.process.send_signal(signal.SIGINT)
            assert "Ctrl-C again stops at once" in server.wait_for_line("stopping")
            assert server.stop(signal.SIGINT) == 130
        assert "stopped at once" in server.rest and "Traceback" not in server.rest


def test_the_page_shows_where_a_keras_model_looked(exported, sample_images):
    with RunningServer(*exported["run"]) as server:
        status, answer = server.post("/explain", sample_images[0].read_bytes(), "image/png")
        assert status == 200 and answer["heatmap"].startswith("data:image/png;base64,")
        heatmap = Image.open(io.BytesIO(base64.b64decode(answer["heatmap"].split(",", 1)[1])))
        assert heatmap.mode == "RGBA" and heatmap.size == (32, 32)
        server.stop()
    with RunningServer(*exported["tflite"]) as server:
        status, answer = server.post("/explain", sample_images[0].read_bytes(), "image/png")
        assert status == 400 and "Keras model" in answer["error"]
        server.stop()


def test_bench_serve_holds_under_load_with_bad_uploads(exported):
    """The load test of scripts/bench_serve.py, bounded: every good upload answered, every bad one a 4xx, no 5xx."""
    script = Path(__file__).parents[1] / "scripts" / "bench_serve.py"
    result = subprocess.run([sys.executable, script, "--run", exported["run"][0], "--seconds", "3", "--warmup", "0.5",
                             "--clients", "1,4", "--bad-every", "3", "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for level in report["levels"]:
        assert level["server_5xx"] == 0 and level["failed_connections"] == 0, level
        assert level["bad_not_4xx"] == 0 and level["good_not_200"] == 0, level
        assert set(level["answers"]) >= {"good", "not an image", "truncated", "decompression bomb"}, level
    assert report["ratios"]


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture
def browser(tmp_path):
    """Headless Debian Chromium driven by Selenium (.ci/run installs both; nothing is downloaded)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (it is in imgcls[dev])")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver; "
                    ".ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1000,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))
    yield driver
    driver.quit()


def test_the_page_in_a_real_browser_shows_the_label_imgcls_predict_gives(exported, sample_images, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = sample_images[-1]
    result = run_cli("predict", image, "--run", exported["run"][0], "--json")
    expected = json.loads(result.stdout)[0]["label"]
    with RunningServer(*exported["run"]) as server:
        browser.get(server.url + "/")
        WebDriverWait(browser, 30).until(lambda b: "classes" in b.find_element(By.ID, "about").text)
        browser.find_element(By.ID, "files").send_keys(str(image))
        card = WebDriverWait(browser, 60).until(lambda b: b.find_element(By.CSS_SELECTOR, ".card[data-state]"))
        assert card.get_attribute("data-state") == "done", card.text
        assert card.find_element(By.CSS_SELECTOR, ".label").text == expected
        WebDriverWait(browser, 60).until(lambda b: "explained" in card.get_attribute("class"))  # the Grad-CAM overlay
        bars = card.find_elements(By.CSS_SELECTOR, ".bar")
        assert len(bars) == 3 and expected in bars[0].text  # the tiny run has three classes: top-5 shows them all
        screenshot = Path(os.environ.get("IMGCLS_SCREENSHOTS", tmp_path)) / "serve_page.png"
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(screenshot))
        assert Image.open(screenshot).size[0] > 500
        assert server.stop() == 0


def test_the_listening_socket_is_tcp_so_answers_are_not_held_by_nagle():
    """asyncio turns Nagle's algorithm off only on sockets created as TCP; without that a keep-alive client's every
    request waited for a delayed ACK (40 ms), as scripts/bench_serve.py showed."""
    import socket

    from imgcls.serve.server import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_listening_beyond_this_machine_is_said_at_start(exported):
    with RunningServer(*exported["tflite"], "--host", "0.0.0.0") as server:
        assert server.get("/healthz")["status"] == "ready"
        assert server.stop() == 0
    said = "".join(server.lines) + server.rest
    assert "other machines can reach this server" in said and "no authentication" in said


def test_a_tflite_is_served_from_an_install_without_tensorflow(exported, sample_images, tmp_path):
    """A small container: `pip install imgcls[lite,serve]` (no TensorFlow, no Keras) serves a .tflite export."""
    venv = tmp_path / "serve-venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)  # nothing borrowed from this environment
    python = venv / "bin" / "python"
    repo = Path(__file__).parents[1]
    installed = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                f"{repo}[lite,serve]"], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr
    listed = subprocess.run([python, "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, check=True)
    assert not {p["name"].lower() for p in json.loads(listed.stdout)} & {"tensorflow", "keras", "tensorboard"}
    with RunningServer(*exported["run"]) as reference:
        expected = reference.post("/predict", *multipart(sample_images))[1]["predictions"]
        reference.stop()
    with RunningServer(*exported["tflite"], python=python) as server:
        status, answer = server.post("/predict", *multipart(sample_images))
        assert status == 200, answer
        assert [p["label"] for p in answer["predictions"]] == [p["label"] for p in expected]
        assert server.get("/metadata")["versions"].get("tensorflow") is None
        assert server.stop() == 0
