"""Uploads: what a request carries, turned into model inputs, or a one-line 4xx.

    Upload                   one image as sent: a name and its encoded bytes
    BadRequest               the client's mistake: an HTTP status and one line
    prepare(uploads, decode) Upload -> checked like a training file (data.scan.check_bytes: content, size,
                             pixel limit, truncation) -> converted where TensorFlow would get it wrong ->
                             `decode`, the model's preprocessing -> uint8 [n, h, w, c]
    base64_upload            a base64 string (or data: URL) of a JSON body -> Upload
    tf_serving_instances     TF Serving's REST `instances` / `inputs` -> uploads or pixel arrays

The pixel-array form of TF Serving (the model's input as nested lists) skips
decoding: it is what the model takes, so its shape is checked and it goes
straight to the batch.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from imgcls.data.scan import check_bytes

IMAGE_KINDS = "JPEG, PNG, BMP, GIF, WebP or TIFF"


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Upload:
    name: str
    contents: bytes


def prepare(uploads: list[Upload], decode: Callable[[bytes], np.ndarray]) -> np.ndarray:
    """The uploads as one uint8 batch [n, h, w, c] through the model's preprocessing; the first bad one is a 4xx."""
    if not uploads:
        raise BadRequest(400, f"no image in the request: send one or more {IMAGE_KINDS} files")
    return np.stack([_decoded(upload, decode) for upload in uploads])


def _decoded(upload: Upload, decode: Callable[[bytes], np.ndarray]) -> np.ndarray:
    check, readable = check_bytes(upload.contents, upload.name)
    if check.kind != "image":
        reason = check.reason or "not an image"
        status = 413 if reason.startswith("too large") else 400
        raise BadRequest(status, f"{upload.name}: {reason}; send a {IMAGE_KINDS} image")
    try:
        return decode(readable)
    except Exception as exc:  # Pillow read it, the decoder did not: still the upload's fault, never the server's
        raise BadRequest(400, f"{upload.name}: cannot be decoded ({type(exc).__name__}); send a {IMAGE_KINDS} image") from None


_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,")


def base64_upload(text: Any, name: str) -> Upload:
    """A base64 string (standard or URL-safe alphabet, or a data: URL) as an Upload."""
    if not isinstance(text, str):
        raise BadRequest(400, f"{name}: expected a base64 string, got {type(text).__name__}")
    text = _DATA_URL.sub("", text.strip(), count=1)
    try:
        contents = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(400, f"{name}: not valid base64") from None
    return Upload(name, contents)


def json_uploads(body: Any) -> list[Upload]:
    """POST /predict's JSON: {"images": ["<base64>", {"name": "a.jpg", "b64": "<base64>"}, ...]} or {"image": "<base64>"}."""
    if not isinstance(body, dict) or not ({"images", "image"} & body.keys()):
        raise BadRequest(400, 'the JSON body needs "images": a list of base64 strings (or "image": one)')
    items = body["images"] if "images" in body else [body["image"]]
    if not isinstance(items, list):
        raise BadRequest(400, '"images" must be a list of base64 strings')
    uploads = []
    for i, item in enumerate(items):
        name = f"images[{i}]"
        if isinstance(item, dict):
            name = str(item.get("name") or name)
            item = item.get("b64", item.get("data"))
        uploads.append(base64_upload(item, name))
    return uploads


def tf_serving_instances(body: Any) -> tuple[list[Upload | np.ndarray], str]:
    """TF Serving's REST request: the instances (each encoded bytes or a pixel array) and the key to answer under.

    Row format {"instances": [...]} is answered as {"predictions": [...]},
    columnar {"inputs": ...} as {"outputs": ...}. An instance is {"b64": ...}
    (an encoded image), a nested list (the model's input for one image), or
    an object with one named input holding either.
    """
    if not isinstance(body, dict) or not ({"instances", "inputs"} & body.keys()):
        raise BadRequest(400, 'a TF Serving request needs "instances" (a list, one per image) or "inputs"')
    if "instances" in body and "inputs" in body:
        raise BadRequest(400, 'give "instances" or "inputs", not both')
    key, answer = ("instances", "predictions") if "instances" in body else ("inputs", "outputs")
    items = body[key]
    if isinstance(items, dict):  # columnar with a named input: {"inputs": {"images": [...]}}
        items = _only_value(items, key)
    if not isinstance(items, list) or not items:
        raise BadRequest(400, f'"{key}" must be a non-empty list, one entry per image')
    return [_instance(item, f"{key}[{i}]") for i, item in enumerate(items)], answer


def _instance(item: Any, name: str) -> Upload | np.ndarray:
    if isinstance(item, dict) and "b64" not in item:
        item = _only_value(item, name)
    if isinstance(item, dict):
        if "b64" not in item:
            raise BadRequest(400, f'{name}: an object is an encoded image, {{"b64": "<base64>"}}, or one named input '
                                  "holding an image")
        return base64_upload(item["b64"], name)
    if isinstance(item, str):
        raise BadRequest(400, f'{name}: an encoded image is sent as {{"b64": "<base64>"}}')
    try:
        return np.asarray(item, dtype=np.float32)
    except (ValueError, TypeError):
        raise BadRequest(400, f"{name}: not an array of numbers (ragged, or holds text)") from None


def _only_value(named: dict, where: str) -> Any:
    if len(named) != 1:
        raise BadRequest(400, f"{where}: the model has one input, but {len(named)} were named ({', '.join(map(str, named))})")
    return next(iter(named.values()))


def pixel_batch(arrays: list[np.ndarray], shape: tuple[int, int, int]) -> np.ndarray:
    """Pixel-array instances as one float32 batch, each checked against the model's input [h, w, c]."""
    rows = []
    for i, array in enumerate(arrays):
        if array.shape == shape[:2] and shape[2] == 1:
            array = array[..., None]
        if array.shape != shape:
            raise BadRequest(400, f"instance {i}: shape {list(array.shape)}, but the model takes {list(shape)} "
                                  '(raw 0-255 pixels); or send the encoded image as {"b64": "<base64>"}')
        if not np.isfinite(array).all():
            raise BadRequest(400, f"instance {i}: holds NaN or infinite values")
        rows.append(array)
    return np.stack(rows)
