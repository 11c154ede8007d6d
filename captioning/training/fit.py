"""``fit``: learn to caption from cached features, into a self-contained run folder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from captioning.console import import_keras
from captioning.data import Vocabulary, load_captions, max_caption_length, tokenize
from captioning.data.text import CleaningOptions
from captioning.errors import CaptioningError
from captioning.features import FeatureStore
from captioning.training.decoders import DecoderConfig, build_decoder, caption_loss
from captioning.training.layers import feature_statistics
from captioning.training.runs import load_config, plot_history, save_config
from captioning.training.sequences import CaptionSequence, EncodedCaptions, PairSequence

keras = import_keras()


@dataclasses.dataclass
class FitOptions:
    decoder: str = "merge"
    epochs: int = 20
    batch_size: int = 64  # images per batch
    embed_dim: int = 256
    units: int = 256
    dropout: float = 0.5
    rnn: str = "lstm"
    bidirectional: bool = False
    learning_rate: float = 1e-3
    min_count: int = 1
    max_length_percentile: float | None = None
    patience: int = 5
    seed: int = 0
    pairs: bool = False  # train on partial-caption pairs instead of the fast path
    on_missing: str = "skip"  # captioned images absent from the feature store
    attention_dim: int = 256  # attention decoder only
    doubly_stochastic: float = 0.02  # attention decoder only: λ
    cleaning: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class FitResult:
    run_dir: Path
    epochs_run: int
    best_val_loss: float
    unigram_val_loss: float
    vocab_size: int
    train_images: int
    dev_images: int
    notes: list

    def summary(self) -> str:
        notes = "".join(f"\n  note: {n}" for n in self.notes)
        return (f"Trained {self.epochs_run} epochs on {self.train_images} images (validated on "
                f"{self.dev_images}); best validation loss {self.best_val_loss:.3f} nats/word vs "
                f"{self.unigram_val_loss:.3f} for a unigram baseline; vocabulary {self.vocab_size} "
                f"tokens. Run folder {self.run_dir}: model.keras, vocab.json, config.json, "
                f"history.csv, training_curves.png, checkpoints/.{notes}")


def unigram_loss(train: EncodedCaptions, dev: EncodedCaptions, vocab_size: int) -> float:
    """Cross-entropy of the best context-free guess: train word frequencies (add-one smoothed)."""
    counts = np.ones(vocab_size)
    for s in train.ids:
        np.add.at(counts, s[1:], 1)
    logp = np.log(counts / counts.sum())
    targets = np.concatenate([s[1:] for s in dev.ids])
    return float(-logp[targets].mean())


def _check_store(store: FeatureStore, table, split: str, on_missing: str, notes: list):
    missing = sorted(set(table["image"]) - set(store.index))
    if missing:
        msg = (f"{len(missing)} {split} images have no features in {store.path} "
               f"(e.g. {', '.join(missing[:3])})")
        if on_missing == "error":
            raise CaptioningError(msg + ". Run extract-features on them, or pass --on-missing skip.")
        notes.append(msg + ": skipped.")
        table = table[~table["image"].isin(set(missing))]
    if table.empty:
        raise CaptioningError(f"the {split} split is empty after matching captions to {store.path}; "
                              "check that the features were extracted from this data set's images.")
    return table


class _LearningRateLog(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class _EpochState(keras.callbacks.Callback):
    """Writes the last finished epoch and the data order seed for --resume."""

    def __init__(self, path, seqs):
        super().__init__()
        self.path, self.seqs = Path(path), seqs

    def on_epoch_begin(self, epoch, logs=None):
        for s in self.seqs:  # the epoch number, not call count, decides the shuffle
            s.set_epoch(epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.path.write_text(json.dumps({"epochs_done": epoch + 1}))


def fit(captions, features, out, options: FitOptions = FitOptions(), format=None, resume: bool = False,
        verbose="auto") -> FitResult:
    """Train a decoder on the train split, validate on dev, write the run folder ``out``."""
    out = Path(out)
    notes = []
    if resume:
        saved = load_config(out)
        # The run's own settings win, except --epochs: the total number of epochs to reach.
        known = {f.name for f in dataclasses.fields(FitOptions)}
        kept = {k: v for k, v in saved["training"].items() if k in known and k != "epochs"}
        options = dataclasses.replace(options, **kept)
    elif (out / "model.keras").exists() or (out / "checkpoints" / "last.keras").exists():
        raise CaptioningError(f"{out} already holds a run. Use --resume to continue it, or another --out.")
    keras.utils.set_random_seed(options.seed)
    dataset = load_captions(captions, format=format)
    store = FeatureStore.open(features)
    if resume and store.attrs.get("backbone") != saved["features"]["backbone"]:
        raise CaptioningError(f"{features} was made with {store.attrs.get('backbone')}, but the run in {out} "
                              f"was trained on {saved['features']['backbone']} features.")
    spatial = len(store.feature_shape) == 2
    if options.decoder == "attention" and not spatial:
        raise CaptioningError(f"{features} holds pooled vectors {store.feature_shape}; the attention decoder needs "
                              "the convolutional grid: extract with --spatial.")
    if options.decoder != "attention" and spatial:
        raise CaptioningError(f"{features} holds spatial features {store.feature_shape}; the {options.decoder} "
                              "decoder needs pooled vectors (extract without --spatial), or use --model attention.")
    train = _check_store(store, dataset.split("train"), "train", options.on_missing, notes)
    dev = _check_store(store, dataset.split("dev"), "dev", options.on_missing, notes)

    cleaning = CleaningOptions.from_dict(options.cleaning)
    train_tokens = [tokenize(c, cleaning) for c in train["caption"]]
    vocab = (Vocabulary.load(out / "vocab.json") if resume
             else Vocabulary.build(train_tokens, options.min_count, cleaning))
    max_length = (saved["decoder"]["max_length"] if resume
                  else max_caption_length(train_tokens, options.max_length_percentile))
    cfg = DecoderConfig(options.decoder, len(vocab), store.feature_shape[-1], max_length, options.embed_dim,
                        options.units, options.dropout, options.rnn, options.bidirectional,
                        grid_size=store.feature_shape[0] if spatial else 0, attention_dim=options.attention_dim,
                        doubly_stochastic=options.doubly_stochastic)
    fast = cfg.causal and not options.pairs
    enc_train = EncodedCaptions.from_table(train, vocab, max_length)
    enc_dev = EncodedCaptions.from_table(dev, vocab, max_length)
    if fast:
        seqs = [CaptionSequence(e, store, options.batch_size, options.seed, shuffle=s,
                                output_offset=cfg.output_offset)
                for e, s in ((enc_train, True), (enc_dev, False))]
    else:
        seqs = [PairSequence(e, store, options.batch_size, options.seed, shuffle=s, fixed_length=max_length - 1)
                for e, s in ((enc_train, True), (enc_dev, False))]

    ckpt = out / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    initial_epoch = 0
    if resume:
        model = keras.models.load_model(ckpt / "last.keras", safe_mode=True)
        initial_epoch = json.loads((ckpt / "state.json").read_text())["epochs_done"]
        history = pd.read_csv(out / "history.csv")  # drop rows of an epoch killed before its end
        history[history["epoch"] < initial_epoch].to_csv(out / "history.csv", index=False)
    else:
        model = build_decoder(cfg, sequences=fast)
        model.get_layer("image_norm").set_statistics(
            *feature_statistics(store, [store.index[i] for i in train["image"].unique()]))
        model.compile(optimizer=keras.optimizers.Adam(options.learning_rate),
                      loss=caption_loss(),
                      weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                                        keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5")])
        vocab.save(out / "vocab.json")
    config = {
        "decoder": cfg.to_dict(),
        "features": {k: store.attrs.get(k) for k in ("backbone", "weights", "pooling", "input_size", "preprocessing",
                                                     "resize", "color", "feature_shape", "dtype", "grid")},
        "feature_store": str(Path(features).resolve()),
        "cleaning": cleaning.to_dict(),
        "data": {"source": str(dataset.source.resolve()), "format": dataset.format,
                 "train_images": train["image"].nunique(), "dev_images": dev["image"].nunique()},
        "training": {**dataclasses.asdict(options), "fast_path": fast},
        "keras_version": keras.__version__,
    }
    save_config(out, config)

    callbacks = [
        _LearningRateLog(),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(1, options.patience // 2),
                                          min_lr=1e-5),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=options.patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(ckpt / "best.keras", monitor="val_loss", save_best_only=True),
        keras.callbacks.ModelCheckpoint(ckpt / "last.keras"),
        keras.callbacks.CSVLogger(out / "history.csv", append=resume),
        _EpochState(ckpt / "state.json", seqs),  # last: an epoch counts once everything is saved
    ]
    # shuffle=False: the Sequence reshuffles itself from (seed, epoch), which --resume can repeat;
    # Keras' own shuffle of a PyDataset's batch order draws from Python's global random state
    history = model.fit(seqs[0], validation_data=seqs[1], epochs=options.epochs, initial_epoch=initial_epoch,
                        callbacks=callbacks, verbose=verbose, shuffle=False)
    epochs_run = initial_epoch + len(history.history.get("loss", []))

    next_word = model
    if fast:  # save the classic next-word model: same layers, same order, the fast path's weights
        next_word = build_decoder(cfg, sequences=False)
        next_word.set_weights(model.get_weights())
    next_word.save(out / "model.keras")
    plot_history(out / "history.csv", out / "training_curves.png")
    val = pd.read_csv(out / "history.csv")["val_loss"]
    result = FitResult(out, epochs_run, float(val.min()), unigram_loss(enc_train, enc_dev, len(vocab)), len(vocab),
                       train["image"].nunique(), dev["image"].nunique(), notes + dataset.notes)
    config["results"] = {"epochs_run": epochs_run, "best_val_loss": result.best_val_loss,
                         "unigram_val_loss": result.unigram_val_loss}
    save_config(out, config)
    return result
