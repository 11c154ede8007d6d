"""The web page and the JSON API of ``captioning serve`` (FastAPI; the ``serve`` extra).

FastAPI because the API is the product as much as the page: typed routes, multipart uploads,
OpenAPI docs at ``/docs`` for free, and uvicorn's asyncio loop, on which many requests can wait
for the one worker thread that batches them (``batcher``). The page is one static HTML file with
plain JavaScript calling the same API, so the browser test exercises what ``curl`` does.

Routes: ``GET /`` the page; ``POST /caption`` photos as multipart form data (field ``images``, one
or more files) or one photo as the raw request body, with the decoding as query parameters
(``decoding`` = recommended | beam | greedy, ``beam`` = width); ``GET /run`` what the run is;
``GET /health``. Every refusal is a 4xx with ``{"error": "one sentence"}``.
"""

import asyncio
import contextlib
from importlib import resources

from fastapi import FastAPI, Request  # not lazily: FastAPI reads the routes' annotations from this module
from fastapi.responses import HTMLResponse, JSONResponse

from captioning.errors import CaptioningError
from captioning.serve.limits import ServeLimits

DECODINGS = ("recommended", "beam", "greedy")
OPTIONS = ("decoding", "beam")
ALTERNATIVES = 5  # shown per photo


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _recipe(params: dict):
    from captioning.inference import decoding
    unknown = sorted(set(params) - set(OPTIONS))
    if unknown:
        raise Refused(400, f"unknown option {unknown[0]!r}: the options are {', '.join(OPTIONS)}.")
    name = params.get("decoding", "recommended")
    if name not in DECODINGS:
        raise Refused(400, f"decoding={name!r} is not one of {', '.join(DECODINGS)}.")
    changes = {}
    if "beam" in params:
        try:
            changes["beam"] = int(params["beam"])
        except ValueError:
            raise Refused(400, f"beam={params['beam']!r} is not a whole number.") from None
        if not 1 <= changes["beam"] <= 64:
            raise Refused(400, f"beam={changes['beam']} is outside 1..64.")
        if name == "greedy":
            raise Refused(400, "beam has no effect with decoding=greedy; leave one of them out.")
    return decoding.get(name, **changes)


def describe(captioner) -> dict:
    run = captioner.run
    return {"run": [str(d) for d in captioner.run_dirs], "decoder": captioner.decoder.type,
            "features": captioner.feature_spec.describe(), "vocabulary": len(captioner.vocab),
            "max_length": captioner.decoder.max_length, "results": run.results,
            "default_decoding": "recommended (beam 16 + re-ranking)", "decodings": list(DECODINGS)}


def _result(name: str, caption) -> dict:
    out = {"name": name, "caption": caption.text, "log_prob": round(float(caption.log_prob), 4),
           "alternatives": [{"caption": text, "score": round(float(score), 4)}
                            for text, _, score in caption.alternatives[:ALTERNATIVES] if score is not None]}
    if caption.attention is not None:
        out["attention"] = {"words": caption.words, "maps": [[round(float(v), 4) for v in row]
                                                             for row in caption.attention[: len(caption.words)]]}
    return out


def make_app(captioner, limits: ServeLimits = ServeLimits()):
    from captioning.features.images import ImageError, load_image
    from captioning.serve.batcher import Batcher

    size = captioner.backbone[0].input_size  # the encoder is built before the first request
    batcher = Batcher(captioner, limits.batch_window_ms / 1000, limits.max_batch)
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()

    app = FastAPI(title="captioning", description="Captions for photos from a trained run.", lifespan=lifespan)
    app.state.batcher = batcher
    page = resources.files("captioning.serve").joinpath("page.html").read_text(encoding="utf-8")
    max_bytes = int(limits.max_upload_mb * 2 ** 20)

    @app.exception_handler(Refused)
    async def refused(request, e: Refused):
        return JSONResponse({"error": str(e)}, status_code=e.status)

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page

    @app.get("/health")
    async def health():
        sizes = list(batcher.batches)
        return {"status": "ok", "photos": sum(sizes), "batches": len(sizes), "largest_batch": max(sizes, default=0),
                "busy_seconds": round(batcher.busy, 3)}

    @app.get("/run")
    async def run():
        return describe(captioner)

    async def _uploads(request: Request) -> list:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_bytes:
            raise Refused(413, f"the request is {int(length) / 2 ** 20:.1f} MB; the limit is "
                               f"{limits.max_upload_mb:g} MB (--max-upload-mb).")
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            form = await request.form(max_files=limits.max_files + 1, max_part_size=max_bytes)
            extra = [k for k in form.keys() if k != "images"]
            if extra:
                raise Refused(400, f"unknown form field {extra[0]!r}: send the photos as 'images' and the "
                                   "decoding options as query parameters.")
            files = form.getlist("images")
            return [(f.filename or f"image {i + 1}", await f.read()) for i, f in enumerate(files)]
        body = await request.body()
        if len(body) > max_bytes:
            raise Refused(413, f"the request is {len(body) / 2 ** 20:.1f} MB; the limit is {limits.max_upload_mb:g} MB.")
        return [("image", body)] if body else []

    @app.post("/caption")
    async def caption(request: Request):
        recipe = _recipe(dict(request.query_params))
        try:
            uploads = await _uploads(request)
        except Refused:
            raise
        except Exception as e:  # noqa: BLE001 — a malformed multipart body: the client's to fix, said in one line
            if "exceed" in str(e).lower() or "too many" in str(e).lower():
                raise Refused(413, f"too many files or too large a part ({e}); the limits are {limits.max_files} "
                                   f"files and {limits.max_upload_mb:g} MB.") from None
            raise Refused(400, f"unreadable request body ({e}).") from None
        if not uploads:
            raise Refused(400, "no photo: send image files as multipart field 'images', or one image as the body.")
        if len(uploads) > limits.max_files:
            raise Refused(413, f"{len(uploads)} files in one request; the limit is {limits.max_files} (--max-files).")
        if sum(len(b) for _, b in uploads) > max_bytes:
            raise Refused(413, f"the photos add up to more than {limits.max_upload_mb:g} MB (--max-upload-mb).")
        loop = asyncio.get_running_loop()
        pixels = []
        for name, data in uploads:
            try:
                pixels.append(await loop.run_in_executor(None, load_image, data, size))
            except ImageError as e:
                raise Refused(415 if "not an image" in str(e) else 400, f"{name}: {e}.") from None
        futures = [asyncio.wrap_future(batcher.submit(p, recipe)) for p in pixels]
        try:
            captions = await asyncio.gather(*futures)
        except CaptioningError as e:
            raise Refused(422, str(e)) from None
        return {"decoding": recipe.describe(),
                "captions": [_result(name, c) for (name, _), c in zip(uploads, captions)]}

    return app
