"""Caption photos with a `captioning export --format tflite` folder: LiteRT models, the loop on the host.

    python caption_tflite.py EXPORT_DIR photo.jpg [more.jpg ...]

Needs numpy, Pillow and a LiteRT interpreter (`pip install ai-edge-litert`, or TensorFlow's
tf.lite.Interpreter); not the captioning package. Greedy decoding: the likeliest word at each step.
"""

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:
    import tensorflow as tf
    Interpreter = tf.lite.Interpreter

folder = Path(sys.argv[1])
meta = json.loads((folder / "export.json").read_text())
words = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))["tokens"]
encode = Interpreter(model_path=str(folder / "encoder.tflite")).get_signature_runner("encode")
step = Interpreter(model_path=str(folder / "step.tflite")).get_signature_runner("step")
size = meta["image_size"]

for path in sys.argv[2:]:
    with Image.open(path) as image:  # as the feature store resized its photos
        image = ImageOps.exif_transpose(image).convert("RGB").resize((size, size), Image.BILINEAR)
    state = encode(pixels=np.asarray(image, np.float32)[None])
    token, caption, log_prob = meta["start_id"], [], 0.0
    for _ in range(meta["max_length"] - 1):
        out = step(token=np.array([token], np.int32), **state)
        log_probs = out.pop("log_probs")[0].astype(np.float64)
        log_probs[meta["never_emit"]] = -np.inf  # padding, unknown word, start marker
        token = int(np.argmax(log_probs))
        log_prob += log_probs[token]
        if token == meta["end_id"]:
            break
        caption.append(words[token])
        state = out
    print(json.dumps({"image": path, "caption": " ".join(caption), "log_prob": log_prob}))
