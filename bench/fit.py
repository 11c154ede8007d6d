"""Benchmark: one training epoch three ways on identical data (not a test).

    python bench/fit.py [--train-images N] [--dev-images 200]

By default one full Flickr8k training epoch (6,000 images, about 20 minutes on 2 cores, most
of it in (a) and (b)); ``--train-images 1000`` gives a 4-minute check.

Real Flickr8k captions from ../shared/flickr8k with stand-in features (one fixed random 2048-d
vector per image: the full image set is not on these machines; this measures training speed and
the language-model part of the loss). Same merge architecture, sizes and initial weights:
  (a) the common notebook generator: one image per step, Python loops, pad_sequences,
      to_categorical one-hot targets, categorical cross-entropy;
  (b) captioning's PairSequence (sparse targets, all pairs of --batch-images images per batch);
  (c) captioning's fast path (whole captions, teacher forcing, batches of captions of similar
      length, as many captions as --batch-images images have).
(a) keeps the tutorial's settings (Adam at Keras' default 1e-3); (b) and (c) use --lr, since
they make --batch-images times fewer, larger updates per epoch. Validation loss for all three:
the same next-word cross-entropy over every dev pair. A short warm-up fit runs first, so no
method pays TensorFlow's first-use costs.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from captioning.backend import import_keras  # noqa: E402
from captioning.data import Vocabulary, load_captions, max_caption_length, tokenize  # noqa: E402
from captioning.features.writer import FeatureStoreWriter  # noqa: E402
from captioning.decoders import DecoderConfig, caption_loss
from captioning.decoders import build as build_decoder  # noqa: E402
from captioning.training.sequences import CaptionSequence, EncodedCaptions, PairSequence  # noqa: E402

keras = import_keras()


def notebook_generator(enc, store, vocab_size, max_length):
    """The tutorial's data_generator, one photo per yield."""
    by_image = {}
    for img, ids in zip(enc.images, enc.ids):
        by_image.setdefault(img, []).append(ids)
    while True:
        for img, seqs in by_image.items():
            photo = store[img]
            x1, x2, y = [], [], []
            for seq in seqs:
                for i in range(1, len(seq)):
                    in_seq = keras.utils.pad_sequences([seq[:i]], maxlen=max_length - 1, padding="post")[0]
                    out = keras.utils.to_categorical([seq[i]], num_classes=vocab_size)[0]
                    x1.append(photo), x2.append(in_seq), y.append(out)
            yield (np.array(x1), np.array(x2)), np.array(y)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--captions", default=str(Path(__file__).resolve().parents[2] / "shared/flickr8k"))
    p.add_argument("--train-images", type=int, default=None, help="default: the whole train split")
    p.add_argument("--dev-images", type=int, default=200)
    p.add_argument("--batch-images", type=int, default=8, help="images per batch for (b) and (c)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate for (b) and (c)")
    p.add_argument("--repeats", type=int, default=5, help="runs of (c); the table shows their median")
    a = p.parse_args()
    ds = load_captions(a.captions)
    train_imgs, dev_imgs = ds.images("train")[: a.train_images], ds.images("dev")[: a.dev_images]
    train = ds.table[ds.table.image.isin(train_imgs)]
    dev = ds.table[ds.table.image.isin(dev_imgs)]
    tokens = [tokenize(c) for c in train.caption]
    vocab = Vocabulary.build(tokens, min_count=2)
    max_length = max_caption_length(tokens)
    tmp = Path(tempfile.mkdtemp())
    w = FeatureStoreWriter(tmp / "f.h5", {"backbone": "stand-in", "weights": "none", "pooling": "avg",
                                          "input_size": 0, "feature_shape": [2048], "dtype": "float32"})
    rng = np.random.default_rng(0)
    w.write_batch(train_imgs + dev_imgs, rng.normal(size=(len(train_imgs) + len(dev_imgs), 2048)))
    store = w.finalize(True)
    enc_tr, enc_dev = (EncodedCaptions.from_table(t, vocab, max_length) for t in (train, dev))
    cfg = DecoderConfig("merge", len(vocab), 2048, max_length)
    keras.utils.set_random_seed(0)
    init = build_decoder(cfg).get_weights()
    dev_pairs = PairSequence(enc_dev, store, 64, shuffle=False, fixed_length=max_length - 1)

    def val_loss(weights):
        m = build_decoder(cfg)
        m.set_weights(weights)
        m.compile(loss="sparse_categorical_crossentropy")
        return m.evaluate(dev_pairs, verbose=0)

    warm_up = build_decoder(cfg, sequences=True)
    warm_up.compile(keras.optimizers.Adam(), caption_loss())
    warm_up.fit(CaptionSequence(EncodedCaptions(enc_tr.images[:100], enc_tr.ids[:100]), store, 4), verbose=0)

    results = []
    # (a) notebook generator
    m = build_decoder(cfg)
    m.set_weights(init)
    m.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
    t = time.perf_counter()
    m.fit(notebook_generator(enc_tr, store, len(vocab), max_length), steps_per_epoch=len(train_imgs), epochs=1,
          verbose=0)
    results.append(("(a) notebook generator, one image/step, one-hot", time.perf_counter() - t, val_loss(m.get_weights())))
    # (b) pairs Sequence
    m = build_decoder(cfg)
    m.set_weights(init)
    m.compile(keras.optimizers.Adam(a.lr), "sparse_categorical_crossentropy")
    t = time.perf_counter()
    m.fit(PairSequence(enc_tr, store, a.batch_images, fixed_length=max_length - 1), epochs=1, verbose=0,
          shuffle=False)  # the Sequence shuffles itself, from its seed
    results.append((f"(b) captioning PairSequence, {a.batch_images} images/batch", time.perf_counter() - t, val_loss(m.get_weights())))
    # (c) fast path: short, so its time is the median of --repeats runs (this machine's speed drifts
    # by ±20 % over tens of seconds, and one run in a few can take twice as long; (a) and (b) run long
    # enough to average that out)
    times, losses = [], []
    for _ in range(a.repeats):
        m = build_decoder(cfg, sequences=True)
        m.set_weights(init)
        m.compile(keras.optimizers.Adam(a.lr), caption_loss())
        t = time.perf_counter()
        m.fit(CaptionSequence(enc_tr, store, a.batch_images), epochs=1, verbose=0, shuffle=False)
        times.append(time.perf_counter() - t)
        losses.append(val_loss(m.get_weights()))
    results.append((f"(c) captioning fast path, {a.batch_images} images/batch", float(np.median(times)),
                    float(np.median(losses))))
    spread = (f"(c) over {a.repeats} runs: median {np.median(times):.1f} s, mean {np.mean(times):.1f} s, "
              f"runs in order {', '.join(f'{t:.1f}' for t in times)} s; val loss {min(losses):.3f}–{max(losses):.3f}")

    print(f"\nmerge decoder, 1 epoch, {len(train_imgs)} Flickr8k train images ({len(train)} captions, "
          f"{sum(len(s) - 1 for s in enc_tr.ids)} pairs), vocab {len(vocab)}, max length {max_length}; "
          f"{os.cpu_count()} CPUs, Keras {keras.__version__} ({keras.backend.backend()})")
    print(f"(a) Adam 1e-3; (b), (c) Adam {a.lr:g}")
    print(f"{'method':<52}{'seconds':>9}{'images/s':>10}{'val loss':>10}")
    for name, secs, vl in results:
        print(f"{name:<52}{secs:>9.1f}{len(train_imgs) / secs:>10.1f}{vl:>10.3f}")
    ta, tb, tc = (r[1] for r in results)
    print(spread)
    print(f"ratios (speed): (b)/(a) = {ta / tb:.1f}   (c)/(a) = {ta / tc:.1f} (on the mean of (c): "
          f"{ta / np.mean(times):.1f})   (c)/(b) = {tb / tc:.1f}")


if __name__ == "__main__":
    main()
