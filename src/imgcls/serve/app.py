"""The HTTP app: a Starlette application over one ServedModel.

    GET  /                              the page: drop images, see top-k bars and where the model looked
    POST /predict                       images (multipart files, one raw image body, or base64 JSON) ->
                                        {"predictions": [...]}, the fields of `imgcls predict --json`
    POST /explain                       one image -> its prediction and Grad-CAM heatmap (Keras models)
    POST /v1/models/<name>:predict      TF Serving's REST API (`instances` or `inputs`), so its clients work
    GET  /v1/models/<name>              TF Serving's model status
    GET  /healthz                       ready (the model is loaded and warmed up before the port opens)
    GET  /metadata                      classes, input size, model kind, source and versions

Every error is one line of JSON, {"error": "..."}: 4xx for what the client
sent (nothing the client sends can stop the server), 500 for a model that
failed (logged with its traceback; the next request is served).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from importlib import resources

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from imgcls.infer.predict import to_predictions
from imgcls.serve.batcher import Batcher, ModelFailed
from imgcls.serve.model import ServedModel
from imgcls.serve.uploads import BadRequest, Upload, json_uploads, pixel_batch, prepare, tf_serving_instances

log = logging.getLogger("imgcls.serve")

MAX_IMAGES_PER_REQUEST = 256
DEFAULT_MAX_UPLOAD_MB = 50


def create_app(served: ServedModel, max_batch: int = 32, max_wait_ms: float = 5.0,
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> Starlette:
    batcher: Batcher | None = None
    page = resources.files("imgcls.serve").joinpath("page.html").read_text(encoding="utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        nonlocal batcher
        batcher = Batcher(served.classifier.predict_batch, max_batch, max_wait_ms)
        batcher.start()
        yield
        await batcher.stop()  # after uvicorn has answered every request in flight

    async def decoded(uploads: list[Upload]) -> np.ndarray:
        if len(uploads) > MAX_IMAGES_PER_REQUEST:
            raise _too_many_images()
        return await _in_thread(prepare, uploads, served.decode)

    async def outputs_of(images: np.ndarray) -> np.ndarray:
        try:
            return await batcher.predict(images)
        except ModelFailed as exc:
            log.error("the model failed on a batch: %s", exc)
            raise ServerError(f"the model failed on this request ({str(exc)[:200]}); the server goes on") from None

    async def predict(request: Request):
        uploads, top_k = await _uploads(request)
        probabilities = await outputs_of(await decoded(uploads))
        predictions = to_predictions([u.name for u in uploads], probabilities, served.classifier.class_names, top_k)
        return JSONResponse({"model": served.name, "predictions": [p.to_dict() for p in predictions]})

    async def explain(request: Request):
        if not served.can_explain:
            raise BadRequest(400, f"Grad-CAM needs a Keras model (a run or a .keras file); this server has a "
                                  f"{served.classifier.kind} model")
        uploads, top_k = await _uploads(request)
        if len(uploads) != 1:
            raise BadRequest(400, f"/explain takes one image, got {len(uploads)}")
        image = (await decoded(uploads))[0]
        try:
            result = await batcher.run_in_model_thread(served.explain, image)
        except Exception as exc:
            log.exception("Grad-CAM failed")
            raise ServerError(f"Grad-CAM failed on this image ({type(exc).__name__}); the server goes on") from None
        [prediction] = to_predictions([uploads[0].name], result["probabilities"][None], served.classifier.class_names, top_k)
        return JSONResponse({**prediction.to_dict(), "heatmap": result["heatmap"]})

    async def tf_serving_predict(request: Request):
        _check_model_name(request, served.name)
        instances, answer = tf_serving_instances(await _json(request, check_type=False))
        encoded = [item for item in instances if isinstance(item, Upload)]
        if encoded and len(encoded) != len(instances):
            raise BadRequest(400, 'mix of encoded ({"b64": ...}) and pixel-array instances; send one kind per request')
        images = await decoded(encoded) if encoded else pixel_batch(instances, served.input_shape)
        outputs = await outputs_of(images)
        return JSONResponse({answer: np.asarray(outputs, dtype=np.float64).tolist()})

    async def tf_serving_status(request: Request):
        _check_model_name(request, served.name)
        return JSONResponse({"model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})

    async def healthz(request: Request):
        return JSONResponse({"status": "ready", "model": served.name, **batcher.stats.to_dict()})

    async def metadata(request: Request):
        limits = {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "max_upload_mb": max_upload_mb,
                  "max_images_per_request": MAX_IMAGES_PER_REQUEST}
        return JSONResponse({**served.metadata(), "server": limits})

    async def index(request: Request):
        return HTMLResponse(page)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/predict", predict, methods=["POST"]),
        Route("/explain", explain, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metadata", metadata, methods=["GET"]),
        Route("/v1/models/{name}:predict", tf_serving_predict, methods=["POST"]),
        Route("/v1/models/{name}/versions/{version}:predict", tf_serving_predict, methods=["POST"]),
        Route("/v1/models/{name}", tf_serving_status, methods=["GET"]),
    ]
    handlers = {BadRequest: _bad_request, HTTPException: _http_error, ServerError: _server_error,
                ClientDisconnect: _client_gone, Exception: _unexpected}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    return UploadLimit(app, int(max_upload_mb * 2**20))


def _too_many_images() -> BadRequest:  # a new one each time: a raised instance keeps its traceback's frames
    return BadRequest(413, f"more than {MAX_IMAGES_PER_REQUEST} images in one request; send at most {MAX_IMAGES_PER_REQUEST}")


class ServerError(Exception):
    """A 500 the server explains in one line (and has logged)."""


async def _uploads(request: Request) -> tuple[list[Upload], int]:
    """The images a /predict or /explain request carries, and its top_k (query, form field or JSON key; default 1)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    top_k = request.query_params.get("top_k")
    if kind == "multipart/form-data":
        form = await _form(request)
        uploads = [Upload(value.filename or key, await value.read()) for key, value in form.multi_items()
                   if not isinstance(value, str)]
        if not uploads:
            raise BadRequest(400, "no file in the multipart body (a body cut short, without its closing boundary, "
                                  "holds none): send each image as a file part")
        top_k = form.get("top_k", top_k)
    elif kind == "application/json":
        body = await _json(request)
        uploads = json_uploads(body)
        top_k = body.get("top_k", top_k)
    elif kind.startswith("image/") or kind == "application/octet-stream":
        uploads = [Upload(_header_text(request.headers.get("x-filename", "image")), await request.body())]
    else:
        raise BadRequest(415, f"content type {kind or '(none)'!r} is not accepted: send multipart/form-data files, "
                              "an image/* body, or JSON with base64 images")
    return uploads, _top_k(top_k)


async def _form(request: Request):
    """The multipart form, its parser's complaints as one-line 4xx (too many files: the documented 413)."""
    try:
        return await request.form(max_files=MAX_IMAGES_PER_REQUEST, max_fields=100)
    except HTTPException as exc:
        if "too many files" in str(exc.detail).lower():
            raise _too_many_images() from None
        raise BadRequest(400, f"malformed multipart body ({exc.detail})") from None


def _header_text(value: str) -> str:
    """A header as the client wrote it: HTTP headers arrive as Latin-1, clients send UTF-8 file names."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _top_k(value) -> int:
    """top_k from a query, form field (text) or JSON (a whole number, not 2.7, true or 1e400)."""
    if value is None:
        return 1
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(400, f"top_k: expected a whole number, got {str(value)[:40]!r}")
    if value < 1:
        raise BadRequest(400, f"top_k: at least 1, got {value}")
    return value


async def _json(request: Request, check_type: bool = True):
    """The body as JSON. TF Serving's own examples post JSON with `curl -d` (form-encoded by name), which TF Serving
    takes: its endpoint passes check_type=False."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if check_type and kind not in ("application/json", ""):
        raise BadRequest(415, "send JSON with Content-Type: application/json")
    body = await request.body()
    if not body:
        raise BadRequest(400, "empty body: send JSON")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(400, f"the body is not valid JSON ({str(exc)[:120]})") from None


def _check_model_name(request: Request, name: str) -> None:
    asked = request.path_params["name"]
    if asked != name:
        raise BadRequest(404, f"no model {asked!r} here; this server has {name!r} (imgcls serve --name sets it)")
    version = request.path_params.get("version")
    if version is not None and version != "1":
        raise BadRequest(404, f"model {name!r} has version 1 only, not {version!r}")


async def _in_thread(function, *args):
    """Decoding is CPU work: off the event loop, so other requests go on."""
    import anyio

    return await anyio.to_thread.run_sync(function, *args)


def _one_line(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


async def _bad_request(request: Request, exc: BadRequest):
    return _one_line(exc.status, exc.message)


async def _http_error(request: Request, exc: HTTPException):
    messages = {404: f"no such endpoint: {request.method} {request.url.path} (see GET /metadata and the README)",
                405: f"{request.method} is not allowed on {request.url.path}"}
    return _one_line(exc.status_code, messages.get(exc.status_code, exc.detail))


async def _client_gone(request: Request, exc: ClientDisconnect):
    """The client hung up mid-upload: nobody reads an answer, and it is not the server's fault (no log)."""
    return _one_line(400, "the client disconnected before the request was complete")


async def _server_error(request: Request, exc: ServerError):
    return _one_line(500, str(exc))


async def _unexpected(request: Request, exc: Exception):
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _one_line(500, f"internal error ({type(exc).__name__}); the server goes on, and logged it")


class UploadLimit:
    """A request body over the limit is a 413 before it is read (Content-Length), or as soon as it passes the
    limit (a chunked body): the server never holds more than the limit of one request."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes
        self.message = (f"the request is larger than the server's upload limit of {max_bytes / 2**20:g} MB "
                        "(imgcls serve --max-upload-mb sets it)")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _one_line(413, self.message)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BadRequest(413, self.message)  # answered by the app's handler, as any bad request
            return message

        try:
            await self.app(scope, limited_receive, send)
        except asyncio.CancelledError:  # the drain's 30 s ran out: say so once, not a traceback
            log.warning("%s %s: cut off by the shutdown before it was answered", scope.get("method"), scope.get("path"))
