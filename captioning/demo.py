"""``captioning demo``: the whole pipeline on the built-in sample set, offline, in minutes."""

from __future__ import annotations

import sys
from pathlib import Path

from captioning.errors import CaptioningError


def _say(text: str):
    print(f"\n== {text}", flush=True)


def sample_features(workdir="work", images: int = 300, backbone: str = "resnet50", seed: int = 0):
    """The sample set and its feature store under ``workdir``, made once and reused.

    ImageNet weights when Keras can load them, else a seeded random init (said in the output).
    Returns (data folder, ExtractionResult, weights description).
    """
    from captioning.data import make_sample
    from captioning.features import extract_features

    workdir = Path(workdir)
    data = workdir / "sample"
    if not (data / "Flickr8k.token.txt").exists():
        make_sample(data, images=images, seed=seed)
    from captioning.features.backbones import external
    label = Path(str(backbone).replace("hub:", "")).stem if external(backbone) else backbone
    store_path = workdir / "features" / f"sample_{label}.h5"
    if external(backbone):  # a .keras file or a keras-hub preset brings its own weights
        return data, extract_features(data / "Images", backbone=backbone, out=store_path), f"the weights of {backbone}"
    try:
        extraction = extract_features(data / "Images", backbone=backbone, weights="imagenet", out=store_path)
        weights_used = "ImageNet weights"
    except CaptioningError as e:
        print(f"ImageNet weights are not available ({str(e).splitlines()[0][:90]}…);\n"
              f"using a randomly initialised {backbone} instead (seeded): captions will still be learned on "
              "this synthetic data, but use ImageNet weights for real photos.")
        extraction = extract_features(data / "Images", backbone=backbone, weights="none", out=store_path,
                                      overwrite=True)
        weights_used = "random-init weights (no ImageNet weights offline)"
    return data, extraction, weights_used


def run_demo(out="demo", images: int = 300, backbone: str = "resnet50", epochs: int = 30, seed: int = 0) -> dict:
    """Make data → extract features → fit a merge decoder → evaluate → caption a few images.
    Returns the paths and scores it printed."""
    from captioning.data import load_captions
    from captioning.evaluation import evaluate
    from captioning.inference import Captioner
    from captioning.inference.captioner import empty_captions_note
    from captioning.training import FitOptions, fit

    out = Path(out)
    _say(f"1/5 sample data ({images} synthetic scenes with 5 captions each) and 2/5 {backbone} features")
    data, extraction, weights_used = sample_features(out, images, backbone, seed)
    print(extraction.summary())

    _say(f"3/5 training a merge decoder for up to {epochs} epochs (early stopping on validation loss)")
    run_dir = out / "runs" / "merge"
    if (run_dir / "model.keras").exists():
        print(f"{run_dir} is already trained: reusing it (delete the folder to train again)")
    else:
        interrupted = (run_dir / "checkpoints" / "state.json").exists()  # a demo killed mid-training
        fitted = fit(data, extraction.store.path, run_dir,
                     FitOptions(decoder="merge", epochs=epochs, batch_size=16, embed_dim=256, units=256, dropout=0.3,
                                min_count=1, patience=5, seed=seed),
                     resume=interrupted, verbose=1 if sys.stdout.isatty() else 2)
        print(fitted.summary())

    _say("4/5 evaluating on the test split (greedy, and the recommended decoding: beam 16 + re-ranking)")
    captioner = Captioner.load(run_dir)
    greedy = evaluate(run_dir, data, extraction.store.path, "test", "greedy", captioner=captioner,
                      out=run_dir / "eval-test-greedy")
    best = evaluate(run_dir, data, extraction.store.path, "test", "recommended", captioner=captioner,
                    out=run_dir / "eval-test")
    print(greedy.summary())
    print(best.summary())

    _say("5/5 captioning three test images straight from their files (the recommended decoding)")
    test_images = load_captions(data).images("test")[:3]
    captions = captioner.caption([data / "Images" / i for i in test_images])
    for name, cap in zip(test_images, captions):
        print(f"{data / 'Images' / name}\t{cap.text}")
    if empty_captions_note(captions, run_dir):
        print(f"  note: {empty_captions_note(captions, run_dir)}")

    print(f"\nDone. Features: {extraction.store.path} ({weights_used}). Run folder: {run_dir} (model.keras, "
          f"vocab.json, config.json, neighbours.h5, matcher.keras, history.csv, training_curves.png). "
          f"Test BLEU-4: greedy "
          f"{greedy.metrics['BLEU-4']:.3f}, {best.settings['decoding']} {best.metrics['BLEU-4']:.3f} (a constant "
          f"caption scores {greedy.baseline['BLEU-4']:.3f}). Figures: {run_dir / 'training_curves.png'}, "
          f"{best.out_dir / 'examples.png'}.\nNext: captioning caption YOUR_IMAGE.jpg --run {run_dir}")
    return {"data": data, "features": extraction.store.path, "run": run_dir, "weights": weights_used,
            "bleu4_greedy": greedy.metrics["BLEU-4"], "bleu4_recommended": best.metrics["BLEU-4"],
            "bleu4_constant": greedy.baseline["BLEU-4"]}
