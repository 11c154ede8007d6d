"""Benchmark: `captioning serve` under load, beside the CLI's folder rate on the same photos (not a test).

    python bench/serve.py --run RUN_DIR [--images DIR] [--photos 320] [--decoding recommended]

Starts `captioning serve` on a free port of 127.0.0.1 (nothing else is contacted), then for 1, 4
and 16 concurrent clients sends one photo per request (multipart), each level bounded to
``--photos`` requests (fewer at 1 client) and 5 minutes, and prints requests/s and the p50/p99
latency. In the same run, the folder rate: ``Captioner.caption_files`` over the same photos with the
same decoding, as ``captioning caption DIR`` captions a folder (model loading excluded for both).
RUN_DIR is best an exported bundle (``captioning export``), which needs no weights path.
"""

import argparse
import concurrent.futures
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from captioning.serve.batcher import PEAK_SECONDS  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run, port, extra):
    proc = subprocess.Popen([sys.executable, "-m", "captioning", "serve", "--run", str(run), "--port", str(port), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.5)
        if proc.poll() is not None:
            sys.exit("the server stopped; run `captioning serve --run RUN` by hand to see why")
    sys.exit("the server never answered")


def load(url, photos, clients, decoding, limit_s=300):
    # one connection pool, kept alive, as browsers and app clients do: a new client per request
    # (httpx.post) costs ~20 ms of this process's CPU for its TLS context, taken from the server's cores
    session = httpx.Client(limits=httpx.Limits(max_connections=clients), timeout=120)

    def one(path):
        start = time.perf_counter()
        r = session.post(f"{url}/caption", files=[("images", (path.name, path.read_bytes(), "image/jpeg"))],
                         params={"decoding": decoding})
        r.raise_for_status()
        return time.perf_counter() - start
    deadline = time.perf_counter() + limit_s
    started = time.perf_counter()
    latencies = []
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        pending = set()
        queue = list(photos)
        while queue or pending:
            while queue and len(pending) < clients and time.perf_counter() < deadline:
                pending.add(pool.submit(one, queue.pop()))
            if not pending:
                break
            done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            latencies += [f.result() for f in done]
    seconds = time.perf_counter() - started
    session.close()
    return len(latencies) / seconds, 1000 * np.percentile(latencies, 50), 1000 * np.percentile(latencies, 99)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--images", type=Path, default=SHARED / "flickr8k" / "Images224")
    ap.add_argument("--photos", type=int, default=320)
    ap.add_argument("--window-ms", type=float, help="the server's --batch-window-ms (default: its own)")
    ap.add_argument("--levels", default="1,4,16", help="numbers of concurrent clients")
    ap.add_argument("--decoding", default="recommended", choices=("recommended", "beam", "greedy"))
    a = ap.parse_args()
    photos = sorted(p for p in a.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: a.photos]

    from captioning.inference import Captioner
    captioner = Captioner.load(a.run)
    captioner.caption_files(photos[:32], a.decoding)  # warm: the encoder built, the searches compiled
    start = time.perf_counter()
    captioner.caption_files(photos, a.decoding)
    folder = len(photos) / (time.perf_counter() - start)
    del captioner

    proc, url = start_server(a.run, free_port(), ["--batch-window-ms", str(a.window_ms)] if a.window_ms else [])
    try:
        load(url, photos[:32], 4, a.decoding)  # warm the server the same way
        print(f"{len(photos)} photos from {a.images}, decoding {a.decoding}\n")
        print("| clients | requests | requests/s | p50 latency (ms) | p99 latency (ms) | / folder rate | "
              "photos per batch | worker busy |")
        print("|---|---|---|---|---|---|---|---|")
        for clients in map(int, a.levels.split(",")):
            n = len(photos) if clients > 1 else min(len(photos), 40)
            time.sleep(PEAK_SECONDS + 0.5)  # the server forgets the last level's load before this one
            before = httpx.get(f"{url}/health").json()
            started = time.perf_counter()
            rate, p50, p99 = load(url, photos[:n], clients, a.decoding)
            after, wall = httpx.get(f"{url}/health").json(), time.perf_counter() - started
            batches = after["batches"] - before["batches"]
            busy = (after["busy_seconds"] - before["busy_seconds"]) / wall
            print(f"| {clients} | {n} | {rate:.1f} | {p50:.0f} | {p99:.0f} | {rate / folder:.2f} | "
                  f"{n / max(batches, 1):.1f} | {busy:.0%} |", flush=True)
        health = httpx.get(f"{url}/health").json()
        print(f"\nfolder rate (Captioner.caption_files, as `captioning caption DIR`): {folder:.1f} photos/s; "
              f"the server ran {health['batches']} batches, the largest {health['largest_batch']} photos")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


if __name__ == "__main__":
    main()
