"""The serve batcher's gathering, with a stand-in captioner that takes a fixed time per batch: clients
that come back after each answer get full batches, and a lone client is not kept waiting."""

import random
import threading
import time

import numpy as np

from captioning.serve.batcher import MAX_WAIT, Batcher


class _SlowCaptioner:
    """Captions each photo with its own first pixel, 100 ms per batch whatever its size."""

    def image_features(self, pixels):
        return np.array([p[0, 0, 0] for p in pixels])

    def caption_features(self, features, recipe):
        time.sleep(0.1)
        return [f"photo {int(f)}" for f in features]


def _photo(i):
    return np.full((2, 2, 3), i, np.uint8)


def test_clients_that_come_back_after_each_answer_fill_the_batches():
    batcher = Batcher(_SlowCaptioner(), window=0.005, max_batch=32)
    answers, rng = {}, random.Random(0)

    def client(c):
        for r in range(6):
            i = c * 10 + r
            answers[i] = batcher.submit(_photo(i), "greedy").result(timeout=10)
            time.sleep(rng.uniform(0.01, 0.06))  # the next request's upload and decoding, each client its own pace

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert answers == {i: f"photo {i}" for i in answers} and len(answers) == 48
    # the first batch takes what the burst brought; from then on, the 8 clients come back together
    assert batcher.batches[-4:] == [8, 8, 8, 8], batcher.batches


def test_a_lone_client_is_answered_without_waiting_for_others():
    batcher = Batcher(_SlowCaptioner(), window=0.005, max_batch=32)
    started = time.monotonic()
    for i in range(3):
        assert batcher.submit(_photo(i), "greedy").result(timeout=10) == f"photo {i}"
    batcher.close()
    assert batcher.batches == [1, 1, 1]
    assert time.monotonic() - started < 3 * 0.1 + MAX_WAIT  # no batch waited MAX_WAIT
