"""Caption photos with a `captioning export --format saved_model` folder: TensorFlow alone.

    python caption_saved_model.py EXPORT_DIR [greedy | beam K] photo.jpg [more.jpg ...]

Without greedy or beam K: serving_default, beam search of the width export.json names. The image
files go in as they are (JPEG, PNG, GIF, BMP); decoding, resizing and the search run in the graph.
"""

import json
import sys

import tensorflow as tf

model = tf.saved_model.load(sys.argv[1])
args = sys.argv[2:]
if args[0] == "greedy":
    signature, extra, args = model.signatures["greedy"], {}, args[1:]
elif args[0] == "beam":
    signature, extra, args = model.signatures["beam"], {"beam_size": tf.constant(int(args[1]))}, args[2:]
else:
    signature, extra = model.signatures["serving_default"], {}
images = tf.constant([open(path, "rb").read() for path in args])
out = signature(images=images, **extra)
for path, caption, log_prob in zip(args, out["caption"].numpy(), out["log_prob"].numpy()):
    print(json.dumps({"image": path, "caption": caption.decode("utf-8"), "log_prob": float(log_prob)}))
