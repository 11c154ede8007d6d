"""``serve``: a run behind a web page and a JSON API (``captioning.serve``)."""

from __future__ import annotations

from captioning.cli.common import add_run_option, ranged


def serve(a):
    from captioning.serve.limits import ServeLimits
    from captioning.serve.server import serve as run_server
    limits = ServeLimits(a.max_files, a.max_upload_mb, a.batch_window_ms, a.max_batch)
    run_server(a.run if len(a.run) > 1 else a.run[0], a.host, a.port, a.weights, a.allow_partial, limits)


def add_commands(add):
    from captioning.serve.limits import ServeLimits as L
    p = add("serve", help="a web page and a JSON API that caption uploaded photos (the serve extra)")
    add_run_option(p)
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on; 0.0.0.0 opens it to the network")
    p.add_argument("--port", type=ranged(int, 1, 65535), default=8000, help="the port to listen on")
    p.add_argument("--weights", metavar="PATH", help="the backbone's weights file, if the recorded one has moved")
    g = p.add_argument_group("limits")
    g.add_argument("--max-files", type=ranged(int, 1), default=L.max_files, help="photos in one request")
    g.add_argument("--max-upload-mb", type=ranged(float, 0, low_open=True), default=L.max_upload_mb,
                   help="megabytes in one request")
    g.add_argument("--batch-window-ms", type=ranged(float, 0), default=L.batch_window_ms,
                   help="how long to wait for more photos to caption in one batch")
    g.add_argument("--max-batch", type=ranged(int, 1), default=L.max_batch, help="photos in one batch")
    p.set_defaults(func=serve)
