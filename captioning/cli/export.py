"""``export``: a run folder as one artifact to share or deploy (``captioning.export``)."""

from __future__ import annotations

import sys


def export(a):
    from captioning.export import export as write
    result = write(a.run, a.out, a.format, weights=a.weights, allow_partial=a.allow_partial, precision=a.precision)
    for note in result.notes:
        print(f"captioning export: note: {note}", file=sys.stderr)
    print(result.summary())


def add_commands(add):
    from captioning.export.formats import FORMATS
    p = add("export", help="a run as one self-contained artifact to share or deploy")
    p.add_argument("run", metavar="RUN_DIR", help="the run folder written by `captioning fit`")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write (replaced if an earlier export)")
    p.add_argument("--format", choices=FORMATS, default="bundle",
                   help="bundle: a run folder with its image encoder, for Captioner.load and `captioning caption` "
                        "(every decoding, re-ranking included); saved_model: a TensorFlow SavedModel, image bytes → "
                        "caption with beam search in the graph, for TensorFlow Serving (no re-ranking); tflite: the "
                        "encoder and the one-step decoder as LiteRT models, the search loop on the host")
    p.add_argument("--precision", choices=("float32", "float16", "int8"),
                   help="tflite: the weights' precision; int8 is dynamic-range quantization (default: float16)")
    p.add_argument("--weights", metavar="PATH", help="the backbone's weights file, if the recorded one has moved")
    p.add_argument("--allow-partial", action="store_true", help="export a run that a killed fit left half saved")
    p.set_defaults(func=export)
