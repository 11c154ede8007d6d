"""``captioning serve``, the way people use it: the real command in its own process on a free local
port, spoken to over HTTP — one photo, several, raw bytes, bad uploads, many clients at once — and
a real headless Chromium uploading a photo through the page (skipped where no Chromium is installed;
``.ci/run`` installs Debian's).
"""

import concurrent.futures
import contextlib
import io
import json
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib

import httpx
import pytest

from captioning.inference import Captioner


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serving(run, log, *options):
    """``captioning serve --run RUN`` in its own process on a free port, until the block ends."""
    port = _free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "captioning", "serve", "--run", str(run), "--port", str(port),
                                 *options], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
            assert proc.poll() is None, log.read_text()
        else:
            pytest.fail(f"the server never answered: {log.read_text()}")
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(learnable, tmp_path_factory):
    base = learnable  # a run that has learned words: empty captions would prove little
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with _serving(base["run"], log, "--batch-window-ms", "300", "--max-files", "4", "--max-upload-mb", "5") as (url, proc):
        yield {"url": url, "proc": proc, "log": log, "images": sorted((base["data"] / "Images").iterdir()),
               "run": base["run"]}


def _post(server, *paths, params=None):
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    return httpx.post(f"{server['url']}/caption", files=files, params=params, timeout=120)


def test_the_api_captions_photos_as_the_library_does(server):
    images = server["images"][:2]
    answer = _post(server, *images)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = Captioner.load(server["run"]).caption(images)
    assert [c["caption"] for c in body["captions"]] == [c.text for c in expected] and all(c.text for c in expected)
    assert [c["name"] for c in body["captions"]] == [p.name for p in images]
    assert body["decoding"] == "beam 16 + re-ranking"
    raw = httpx.post(f"{server['url']}/caption", content=images[0].read_bytes(), params={"decoding": "greedy"},
                     headers={"content-type": "image/jpeg"}, timeout=120).json()
    assert raw["decoding"] == "greedy" and raw["captions"][0]["caption"] == \
        Captioner.load(server["run"]).caption(images[:1], "greedy")[0].text
    run = httpx.get(f"{server['url']}/run").json()
    assert run["decoder"] == "merge" and run["vocabulary"] > 0
    assert "Drop photos" in httpx.get(server["url"]).text


def _bomb_png(side=20_000) -> bytes:
    """A valid 1×1 PNG whose header claims side × side pixels: Pillow refuses it before decoding."""
    from PIL import Image
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data[12:29]  # type + body of the first chunk
    ihdr[4:12] = struct.pack(">II", side, side)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def test_bad_uploads_get_a_one_sentence_error_and_the_server_keeps_serving(server):
    photo = server["images"][0].read_bytes()
    cases = {
        "not an image": ([("images", ("notes.txt", b"hello", "text/plain"))], {}, 415, "not an image"),
        "truncated": ([("images", ("cut.jpg", photo[: len(photo) // 3], "image/jpeg"))], {}, 400, "truncated"),
        "bomb": ([("images", ("bomb.png", _bomb_png(), "image/png"))], {}, 400, "too large"),
        "unknown option": ([("images", ("a.jpg", photo, "image/jpeg"))], {"colour": "red"}, 400, "unknown option"),
        "bad width": ([("images", ("a.jpg", photo, "image/jpeg"))], {"beam": "0"}, 400, "outside"),
        "too many": ([("images", (f"{i}.jpg", photo, "image/jpeg")) for i in range(5)], {}, 413, "limit is 4"),
        "nothing": ([], {}, 400, "no photo"),
    }
    for name, (files, params, status, words) in cases.items():
        answer = httpx.post(f"{server['url']}/caption", files=files or None, params=params, timeout=60)
        assert answer.status_code == status, (name, answer.text)
        error = answer.json()["error"]
        assert words in error and "\n" not in error and "Traceback" not in error, (name, error)
    big = httpx.post(f"{server['url']}/caption", content=b"\0" * (50 * 2 ** 20), timeout=60,
                     headers={"content-type": "image/jpeg"})
    assert big.status_code == 413 and "limit is 5 MB" in big.json()["error"]
    assert _post(server, server["images"][1]).status_code == 200
    assert "Traceback" not in server["log"].read_text()


def test_concurrent_requests_are_batched_and_each_gets_its_own_caption(server):
    images = server["images"][:8]
    expected = {p.name: c.text for p, c in zip(images, Captioner.load(server["run"]).caption(images, "greedy"))}
    before = httpx.get(f"{server['url']}/health").json()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda p: _post(server, p, params={"decoding": "greedy"}), images))
    assert all(a.status_code == 200 for a in answers)
    got = {a.json()["captions"][0]["name"]: a.json()["captions"][0]["caption"] for a in answers}
    assert got == expected
    after = httpx.get(f"{server['url']}/health").json()
    assert after["photos"] - before["photos"] == 8
    assert after["batches"] - before["batches"] < 8 and after["largest_batch"] > 1  # gathered, not one by one


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium); .ci/run installs it")
def test_a_person_drops_a_photo_on_the_page_and_reads_its_caption(server, tmp_path):
    from playwright.sync_api import sync_playwright
    image = server["images"][2]
    expected = Captioner.load(server["run"]).caption([image])[0].text
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(server["url"])
        page.wait_for_selector("#run:not(:text('loading'))")
        page.set_input_files("#files", str(image))
        page.wait_for_selector(".photo .caption", state="attached", timeout=120_000)
        shown = page.inner_text(".photo .caption")
        page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
        alternatives = page.locator(".alternatives li").count()
        browser.close()
    assert shown == expected and alternatives >= 1
    assert (tmp_path / "serve.png").stat().st_size > 10_000
    print(f"screenshot: {tmp_path / 'serve.png'}")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium); .ci/run installs it")
def test_an_attention_run_shows_where_it_looked_for_each_word(attention_run, sample_dir, tmp_path):
    from playwright.sync_api import sync_playwright
    image = sorted((sample_dir / "Images").iterdir())[0]
    with _serving(attention_run[0], tmp_path / "serve.log") as (url, _):
        answer = httpx.post(f"{url}/caption", files=[("images", (image.name, image.read_bytes(), "image/jpeg"))],
                            params={"decoding": "beam"}, timeout=120).json()["captions"][0]
        words, maps = answer["attention"]["words"], answer["attention"]["maps"]
        assert len(words) > 1 and words == answer["caption"].split() and len(maps) == len(words)
        assert all(len(m) == 49 and abs(sum(m) - 1) < 0.01 for m in maps)  # a 7×7 grid, a distribution over it
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(url)
            page.select_option("#decoding", "beam")
            page.set_input_files("#files", str(image))
            page.wait_for_selector(".photo .maps figure", state="attached", timeout=120_000)
            shown = page.locator(".maps figcaption").all_inner_texts()
            page.wait_for_function(f"document.querySelectorAll('.maps canvas').length == {len(words)}")
            # each map: the photo, darkened where the word did not look, so no two corners alike on a map that is not flat
            corners = page.locator(".maps canvas").evaluate_all(
                "cs => cs.map(c => { const d = c.getContext('2d'); const s = c.width - 1;"
                " return [[0, 0], [s, 0], [0, s], [s, s]].map(([x, y]) => Array.from(d.getImageData(x, y, 1, 1).data)); })")
            page.screenshot(path=str(tmp_path / "attention.png"), full_page=True)
            browser.close()
    assert shown == words and len(corners) == len(words)
    assert all(len({tuple(c) for c in four}) > 1 for four in corners)
    print(f"screenshot: {tmp_path / 'attention.png'}")
