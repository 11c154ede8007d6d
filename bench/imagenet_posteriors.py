"""Experiment: the backbone's own ImageNet class posteriors as extra decoder input (not a test).

    python bench/imagenet_posteriors.py --out work/posteriors.h5
    python bench/quality.py --decoders init-inject --out work/posteriors --features work/posteriors.h5

The shared MobileNetV2 files with and without the classifier hold the same convolutional weights,
so the 1000-way softmax of each stored 1,280-number vector is exactly what the network would
have said about the photo. This writes a copy of the shared store with the square roots of those
posteriors appended (2,280 numbers per image): explicit "what is in the picture" inputs in the
spirit of Wu et al. 2016 and Yao et al. 2017, learned from 1.2 million ImageNet photos rather
than from the 6,000 captioned ones. The result is in docs/experiments.md.
"""

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captioning.features import FeatureStore  # noqa: E402
from captioning.features.writer import FeatureStoreWriter  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", default=str(SHARED / "flickr8k" / "features" / "flickr8k_mobilenet_v2_trainval.h5"))
    p.add_argument("--classifier", default=str(SHARED / "weights" / "mobilenet_v2_1.0_224_tf2ptq_imagenet.h5"),
                   help="the with-top weights file of the network that made --features")
    p.add_argument("--out", default="work/posteriors.h5")
    a = p.parse_args()
    with h5py.File(a.classifier, "r") as f:
        kernel, bias = f["predictions/predictions/kernel"][:], f["predictions/predictions/bias"][:]
    store = FeatureStore.open(a.features)
    ids = list(store.ids)
    pooled = store[ids].astype(np.float32)
    logits = pooled @ kernel + bias
    posteriors = np.exp(logits - logits.max(axis=1, keepdims=True))
    posteriors /= posteriors.sum(axis=1, keepdims=True)
    features = np.concatenate([pooled, np.sqrt(posteriors)], axis=1)
    attrs = {k: v for k, v in store.attrs.items() if k not in ("completed", "n_images")}
    attrs.update(feature_dim=features.shape[1], feature_shape=[features.shape[1]], dtype="float32",
                 pooling=f"{store.attrs['pooling']}+sqrt_imagenet_posteriors")
    writer = FeatureStoreWriter(a.out, attrs, overwrite=True)
    writer.write_batch(ids, features)
    print(writer.finalize(True).describe())


if __name__ == "__main__":
    main()
