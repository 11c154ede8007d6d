"""Requests gathered into batches: one encoder call and one search for many photos.

A single worker thread owns the ``Captioner`` (Keras models and re-ranking caches are not shared
between threads). Requests put their decoded photos on a queue and wait on a future; the worker
takes the first waiting photo and those that follow (``_gather``), up to ``max_batch`` photos, and
captions those that share a decoding recipe together. Alone, a request waits ``window`` longer.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import queue
import threading
import time

import numpy as np

MAX_WAIT = 0.25  # seconds a photo may wait for others, at most


@dataclasses.dataclass
class _Job:
    pixels: np.ndarray  # (S, S, 3) uint8, as load_image gives
    recipe: object  # a Decoding
    future: concurrent.futures.Future


class Batcher:
    def __init__(self, captioner, window: float = 0.01, max_batch: int = 32):
        self.captioner, self.window, self.max_batch = captioner, window, max_batch
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="captioning-batcher", daemon=True)
        self.batches = []  # sizes of the batches run (for tests and the benchmark)
        self.busy = 0.0  # seconds spent captioning
        self.last_seconds = 0.0  # the last batch's
        self._thread.start()

    def submit(self, pixels: np.ndarray, recipe) -> concurrent.futures.Future:
        future = concurrent.futures.Future()
        self._queue.put(_Job(pixels, recipe, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _gather(self, first: _Job, backlog: bool) -> list:
        """``first`` and the photos that follow it: while they keep coming less than ``window`` apart
        (a burst of requests), and, when photos were already waiting (a loaded server, whose clients
        answered last time send their next photos now), for up to a quarter of the last batch's time,
        so one batch takes them all instead of two half batches alternating."""
        jobs, now = [first], time.monotonic()
        end = now + (max(self.window, min(0.25 * self.last_seconds, MAX_WAIT)) if backlog else self.window)
        limit = now + MAX_WAIT
        while len(jobs) < self.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # stop after this batch
                break
            jobs.append(job)
            if not backlog:
                end = min(time.monotonic() + self.window, limit)
        return jobs

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = self._gather(first, backlog=not self._queue.empty())
            by_recipe: dict = {}
            for job in jobs:
                by_recipe.setdefault(job.recipe, []).append(job)
            for recipe, group in by_recipe.items():
                self.batches.append(len(group))
                started = time.monotonic()
                try:
                    features = self.captioner.image_features([j.pixels for j in group])
                    captions = self.captioner.caption_features(features, recipe)
                except Exception as e:  # noqa: BLE001 — handed to every waiting request, which reports it
                    for job in group:
                        job.future.set_exception(e)
                    continue
                finally:
                    self.last_seconds = time.monotonic() - started
                    self.busy += self.last_seconds
                for job, caption in zip(group, captions):
                    job.future.set_result(caption)
