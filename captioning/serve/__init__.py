"""``captioning serve``: a web page and a JSON API over a run, photos batched across requests
(``app``, ``batcher``; the ``serve`` extra: FastAPI and uvicorn). Serving reads a finished run
through inference; nothing below imports it."""

from captioning.lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "ServeLimits": "captioning.serve.limits",
    "make_app": "captioning.serve.app",
    "Batcher": "captioning.serve.batcher",
    "serve": "captioning.serve.server",
})
