"""``serve(run, host, port)``: the app of ``app.py`` under uvicorn, as ``captioning serve`` runs it."""

from __future__ import annotations

import sys

from captioning.errors import UsageError

INSTALL = 'pip install "captioning[serve]"  (in a checkout: pip install -e ".[serve]")'


def serve(run_dir, host: str = "127.0.0.1", port: int = 8000, weights=None, allow_partial: bool = False,
          limits=None) -> None:
    """Load the run, build the encoder, then serve until interrupted."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UsageError(f"captioning serve needs FastAPI and uvicorn, which are not installed: {INSTALL}") from None
    from captioning.inference.captioner import Captioner
    from captioning.serve.app import make_app
    from captioning.serve.limits import ServeLimits
    captioner = Captioner.load(run_dir, weights=weights, allow_partial=allow_partial)
    app = make_app(captioner, limits or ServeLimits())
    for note in captioner.notes:
        print(f"captioning serve: note: {note}", file=sys.stderr)
    print(f"Serving {', '.join(map(str, captioner.run_dirs))} at http://{host}:{port}/ (the page; the API: POST "
          f"/caption, GET /run, GET /health, docs at /docs). Ctrl-C stops.", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
