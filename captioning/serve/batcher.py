"""Requests gathered into batches: one encoder call and one search for many photos.

A single worker thread owns the ``Captioner`` (Keras models and re-ranking caches are not shared
between threads). Requests put their decoded photos on a queue and wait on a future; the worker
takes the first waiting photo and those that follow (``_gather``), up to ``max_batch`` photos, and
captions those that share a decoding recipe together.

How long to wait for more: a server's load is its clients, each with a request or two out at a time.
When a batch is answered, its clients send their next photos over the following tens of milliseconds
(each request is parsed and decoded in turn), so a worker that took only what had arrived would
alternate small half batches. The worker therefore waits, at most ``MAX_WAIT``, until it holds as
many photos as were out at once in the last ``PEAK_SECONDS`` (the clients it expects back), and
then for any that follow less than ``window`` apart (a burst). A lone client is answered without
waiting for others; when clients leave, a batch waits at most ``MAX_WAIT`` for them, for a couple
of seconds.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import queue
import threading
import time

import numpy as np

MAX_WAIT = 0.25  # seconds a photo may wait for others, at most
PEAK_SECONDS = 2.0  # how far back the photos out at once are remembered


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
        self._lock = threading.Lock()
        self._out = 0  # photos submitted and not yet answered
        self._peaks: collections.deque = collections.deque()  # (time, photos out) at each submit
        self.batches = []  # sizes of the batches run (for tests and the benchmark)
        self.busy = 0.0  # seconds spent captioning
        self._thread.start()

    def submit(self, pixels: np.ndarray, recipe) -> concurrent.futures.Future:
        future = concurrent.futures.Future()
        with self._lock:
            self._out += 1
            self._peaks.append((time.monotonic(), self._out))
        self._queue.put(_Job(pixels, recipe, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def expected(self) -> int:
        """The most photos out at once in the last ``PEAK_SECONDS``: how many a batch can expect."""
        with self._lock:
            while self._peaks and self._peaks[0][0] < time.monotonic() - PEAK_SECONDS:
                self._peaks.popleft()
            return max((out for _, out in self._peaks), default=1)

    def _gather(self, first: _Job) -> list:
        """``first`` and the photos that follow: until there are as many as ``expected`` (at most
        ``MAX_WAIT`` after the first), then while they keep coming less than ``window`` apart."""
        jobs, start = [first], time.monotonic()
        target, limit = min(self.max_batch, self.expected()), start + MAX_WAIT
        burst_end = start + self.window
        while len(jobs) < self.max_batch:
            until = limit if len(jobs) < target else burst_end
            try:
                job = self._queue.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # stop after this batch
                break
            jobs.append(job)
            burst_end = min(time.monotonic() + self.window, limit)
        return jobs

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = self._gather(first)
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
                    self._answered(group, [e] * len(group))
                    continue
                finally:
                    self.busy += time.monotonic() - started
                self._answered(group, captions)

    def _answered(self, group: list, outcomes: list) -> None:
        with self._lock:
            self._out -= len(group)
        for job, outcome in zip(group, outcomes):
            if isinstance(outcome, Exception):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)
