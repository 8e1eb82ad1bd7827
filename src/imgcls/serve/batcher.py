"""Batcher: images of requests that arrive together, predicted as one batch.

A model predicts a batch of 32 images in far less than 32 times the time of
one (docs/benchmarks.md, "Serve"), so under load the server gathers what
is waiting: after the first image of a batch arrives it waits at most
`max_wait_ms` for more, and takes at most `max_batch` images, in one of a
few batch sizes (`batch_sizes`) so the model's memory holds still. The model runs
in one thread of its own, so the event loop keeps accepting, parsing and
decoding requests while a batch is predicted; only that thread touches the
model.
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


def batch_sizes(max_batch: int) -> list[int]:
    """The batch sizes the model ever sees: powers of two up to max_batch, and max_batch.

    TensorFlow keeps buffers and kernels per input shape: a server that fed
    every size from 1 to 32 grew by 260 MB after warm-up (a 224x224
    EfficientNetB0, docs/benchmarks.md, "Serve"). With six sizes, all warmed up
    at start, memory holds from the first request.
    """
    sizes = [1 << i for i in range(max_batch.bit_length()) if 1 << i <= max_batch]
    return sizes if sizes[-1] == max_batch else [*sizes, max_batch]


class ModelFailed(Exception):
    """The model raised on a batch: a server error, not the client's."""


@dataclass
class BatchStats:
    batches: int = 0
    images: int = 0
    largest: int = 0

    def to_dict(self) -> dict:
        mean = self.images / self.batches if self.batches else 0.0
        return {"batches": self.batches, "images": self.images, "mean_batch": round(mean, 2), "largest_batch": self.largest}


@dataclass
class _Request:
    images: np.ndarray
    result: asyncio.Future
    arrived: float  # the event loop's clock
    done: int = 0  # images of this request already predicted
    outputs: list[np.ndarray] = field(default_factory=list)


class Batcher:
    def __init__(self, predict_batch: Callable[[np.ndarray], np.ndarray], max_batch: int = 32, max_wait_ms: float = 5.0):
        self.predict_batch = predict_batch
        self.max_batch = max_batch
        self.sizes = batch_sizes(max_batch)
        self.max_wait = max_wait_ms / 1000
        self.stats = BatchStats()
        self._waiting: deque[_Request] = deque()
        self._queued_images = 0
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="imgcls-model")
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """After the server has drained its requests: end the worker and the model thread."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._model_thread.shutdown(wait=True)

    async def run_in_model_thread(self, function, *args):
        """Anything else that uses the model (Grad-CAM) runs in its thread, between batches."""
        return await asyncio.get_running_loop().run_in_executor(self._model_thread, function, *args)

    async def predict(self, images: np.ndarray) -> np.ndarray:
        """The model's outputs for `images` [n, h, w, c], predicted with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        request = _Request(images, loop.create_future(), loop.time())
        self._waiting.append(request)
        self._queued_images += len(images)
        self._arrived.set()
        if self._queued_images >= self.max_batch:
            self._full.set()
        return await request.result

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            # The oldest waiting image waits at most max_wait in all: time it spent behind the last batch counts.
            left = self._waiting[0].arrived + self.max_wait - loop.time()
            if self._queued_images < self.max_batch and left > 0:
                try:
                    await asyncio.wait_for(self._full.wait(), left)
                except (asyncio.TimeoutError, TimeoutError):
                    pass
            taken = self._take()
            if not self._waiting:
                self._arrived.clear()
            if self._queued_images < self.max_batch:
                self._full.clear()
            await self._predict(taken)

    def _take(self) -> list[tuple[_Request, int, int]]:
        """(request, first, end) slices of the waiting requests' images: the largest of `batch_sizes` that they fill
        (what is left over goes in the next batch, at once: it has waited its turn)."""
        taken, room = [], max(size for size in self.sizes if size <= max(1, self._queued_images))
        while self._waiting and room:
            request = self._waiting[0]
            end = min(len(request.images), request.done + room)
            taken.append((request, request.done, end))
            room -= end - request.done
            self._queued_images -= end - request.done
            request.done = end
            if end == len(request.images):
                self._waiting.popleft()
        return taken

    async def _predict(self, taken: list[tuple[_Request, int, int]]) -> None:
        try:
            batch = np.concatenate([request.images[first:end] for request, first, end in taken])
            outputs = await self.run_in_model_thread(self.predict_batch, batch)
            if len(outputs) != len(batch):
                raise ValueError(f"{len(outputs)} outputs for a batch of {len(batch)} images")
        except Exception as exc:  # the client's request was fine: its answer is a 500, and the next batch goes on
            for request, _, _ in taken:
                if not request.result.done():
                    request.result.set_exception(ModelFailed(f"{type(exc).__name__}: {exc}"))
            return
        self.stats.batches += 1
        self.stats.images += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        start = 0
        for request, first, end in taken:
            request.outputs.append(np.asarray(outputs[start:start + end - first]))
            start += end - first
            if end == len(request.images) and not request.result.done():
                request.result.set_result(np.concatenate(request.outputs))
