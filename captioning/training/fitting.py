"""``fit``: learn to caption from cached features, into a self-contained run folder.

Four steps a reader can follow: ``plan`` (read the data and the store, check that they belong
together, build the vocabulary and the decoder's configuration), ``train`` (Keras ``fit`` with
crash-safe checkpoints), ``tune`` (self-critical epochs on CIDEr-D) and ``export`` (the next-word
``model.keras``, the re-ranking files, curves and results). The options: ``training.options``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np

from captioning import atomic, decoders, interrupt
from captioning.backend import import_keras, set_random_seed
from captioning.console import count
from captioning.data import Vocabulary, load_captions, max_caption_length, tokenize
from captioning.data.summary import drop_wordless
from captioning.data.text import CleaningOptions
from captioning.decoders import DecoderConfig, caption_loss
from captioning.errors import CaptioningError, UsageError
from captioning.features import FeatureStore
from captioning.lock import WriterLock
from captioning.run import CROSS_ENTROPY_FILE, Run, load_model, save_model
from captioning.training.checkpoints import RunCheckpoints, read_state, recorded_rows, write_csv
from captioning.training.curves import plot_history
from captioning.distribute import Placement, feed, place, prepare, release
from captioning.training import matching
from captioning.training.options import DEFAULT_EPOCHS, FitOptions
from captioning.training.warmup import LinearWarmup
from captioning.training.sequences import CaptionSequence, EncodedCaptions, PairSequence

keras = import_keras()


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
    placement: str = "one device"
    self_critical: list = dataclasses.field(default_factory=list)  # (epoch, dev CIDEr-D greedy), epoch 0 = before
    self_critical_kept: int = 0  # the epoch model.keras holds; 0: the cross-entropy model
    has_matcher: bool = True  # False with --matcher-epochs 0

    def summary(self) -> str:
        notes = "".join(f"\n  note: {n}" for n in self.notes)
        where = "" if self.placement == "one device" else f" ({self.placement})"
        if self.self_critical:
            (_, before), (last, after) = self.self_critical[0], self.self_critical[-1]
            kept = dict(self.self_critical)[self.self_critical_kept]
            notes = (f"\n  Then {count(last, 'self-critical epoch')} on CIDEr-D: dev CIDEr-D (greedy) "
                     f"{before:.3f} → {after:.3f} (self_critical.csv); {_kept(self.self_critical_kept, last, kept)}"
                     ) + notes
        return (f"Trained {count(self.epochs_run, 'epoch')}{where} on {count(self.train_images, 'image')} "
                f"(validated on {self.dev_images}); best validation loss {self.best_val_loss:.3f} nats/word vs "
                f"{self.unigram_val_loss:.3f} for a unigram baseline; vocabulary {self.vocab_size} "
                f"tokens. Run folder {self.run_dir}: model.keras, vocab.json, config.json, neighbours.h5, "
                f"{'matcher.keras, ' if self.has_matcher else ''}"
                f"{CROSS_ENTROPY_FILE + ', ' if self.self_critical_kept else ''}history.csv, "
                f"training_curves.png, checkpoints/.{notes}")


def _kept(epoch: int, last: int, score: float) -> str:
    if epoch == last:
        return "model.keras is the last."
    if epoch:
        return f"model.keras is self-critical epoch {epoch}'s, the best on dev ({score:.3f})."
    return ("no self-critical epoch raised it, so model.keras is the cross-entropy model, as early stopping "
            "keeps the best epoch (`--self-critical-epochs 0` skips them).")


@dataclasses.dataclass
class FitPlan:
    """Everything ``train`` and ``export`` need, decided once."""

    out: Path
    options: FitOptions
    run: Run
    store: FeatureStore
    train: EncodedCaptions
    dev: EncodedCaptions
    train_rows: list  # store rows of the train images, for the feature statistics
    dev_references: dict  # dev image → its cleaned reference captions (token lists)
    train_references: dict  # the same for the train images (consensus re-ranking's neighbours)
    resume: bool
    notes: list
    placement: Placement = dataclasses.field(default_factory=lambda: Placement("none"))

    @property
    def fast(self) -> bool:
        return self.run.decoder.decoder.is_causal(self.run.decoder) and not self.options.pairs

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"

    def sequences(self):
        cfg = self.run.decoder
        o, n = self.options, self.placement.replicas
        if self.fast:
            return [CaptionSequence(e, self.store, o.batch_size * n, o.seed, shuffle=s, multiple_of=n,
                                    output_offset=cfg.decoder.output_offset,
                                    limit=o.steps_per_epoch if s else None)
                    for e, s in ((self.train, True), (self.dev, False))]
        return [PairSequence(e, self.store, o.batch_size * n, o.seed, shuffle=s, multiple_of=n,
                             fixed_length=cfg.max_length - 1, limit=o.steps_per_epoch if s else None)
                for e, s in ((self.train, True), (self.dev, False))]


def unigram_loss(train: EncodedCaptions, dev: EncodedCaptions, vocab_size: int) -> float:
    """Cross-entropy of the best context-free guess: train word frequencies (add-one smoothed)."""
    counts = np.ones(vocab_size)
    for s in train.ids:
        np.add.at(counts, s[1:], 1)
    logp = np.log(counts / counts.sum())
    targets = np.concatenate([s[1:] for s in dev.ids])
    return float(-logp[targets].mean())


def _check_store(store: FeatureStore, table, split: str, on_missing: str, notes: list):
    if table.empty:
        raise CaptioningError(f"the data set has no {split} image: training needs train and dev images. List "
                              f"them in Flickr_8k.{split}Images.txt beside the captions file (or in the split field "
                              "of a Karpathy file), or caption at least 3 images: a data set without split lists "
                              "gets 12.5 % dev and 12.5 % test images (at least 1, at most 1,000 each) by a "
                              "seeded shuffle.")
    missing = sorted(set(table["image"]) - set(store.index))
    if missing:
        msg = (f"{len(missing)} of {table['image'].nunique()} {split} images have no features in {store.path} "
               f"(e.g. {', '.join(missing[:3])})")
        if on_missing == "error":
            raise CaptioningError(msg + ". Run extract-features on them, or pass --on-missing skip.")
        notes.append(msg + ": skipped.")
        table = table[~table["image"].isin(set(missing))]
    if table.empty:
        raise CaptioningError(f"the {split} split is empty after matching captions to {store.path}; "
                              "check that the features were extracted from this data set's images.")
    return table


def _usable(table, split: str, cleaning, notes: list):
    """The split's captions that have a word after cleaning, or a clear error when none has."""
    table = drop_wordless(table, cleaning, notes, split)
    if table.empty:
        raise CaptioningError(f"no {split} caption has a word left after cleaning; check the captions file "
                              "(are the captions in the expected column?).")
    return table


def _check_out(out: Path, resume: bool) -> None:
    """A fresh run needs an empty folder; a resumed one needs this run's own resumable state."""
    if resume:
        missing = [p for p in ("config.json", "vocab.json", "checkpoints/last.keras", "checkpoints/state.json")
                   if not (out / p).is_file()]
        if missing:
            raise CaptioningError(f"{out}: nothing to resume (missing {', '.join(missing)}). No epoch of this run "
                                  "finished; start it again without --resume (remove the folder first).")
        return
    if out.exists() and not out.is_dir():
        raise CaptioningError(f"--out {out} is a file, not a folder; choose a new folder for the run.")
    if out.is_dir() and any(out.iterdir()):
        held = sorted(p.name for p in out.iterdir())
        what = ("a run: use --resume to continue it" if (out / "checkpoints" / "state.json").is_file()
                else "files of something else")
        raise CaptioningError(f"--out {out} is not empty ({', '.join(held[:6])}{' …' if len(held) > 6 else ''}): "
                              f"it holds {what}, or choose a new folder. Nothing was changed.")


def _refuse_changed_settings(out, options: FitOptions, kept: dict, given=None) -> None:
    """A setting asked for that differs from the run's would be silently ignored. ``given``: the
    options typed (the CLI knows; a typed default counts too); None: those that differ from the defaults."""
    default = FitOptions()
    asked = (lambda k: k in given) if given is not None else (lambda k: getattr(options, k) != getattr(default, k))
    changed = [f"--{k.replace('_', '-')} {getattr(options, k)} (this run: {v})" for k, v in kept.items()
               if asked(k) and getattr(options, k) != v]
    if changed:
        raise UsageError(f"--resume continues {out} with its own settings, but {', '.join(changed)} "
                         f"{'differs' if len(changed) == 1 else 'differ'}. Leave "
                         f"{'it' if len(changed) == 1 else 'them'} out to resume (only --epochs and --distribute "
                         "may change), or train a new run into another folder.")


def plan(captions, features, out, options: FitOptions = FitOptions(), format=None, resume: bool = False,
         placement: Placement | None = None, given=None) -> FitPlan:
    out = Path(out)
    placement = placement or Placement("none")
    _check_out(out, resume)
    notes = []
    saved = None
    if resume:
        saved = Run.load(out)
        # The run's own settings win, except --epochs: the total number of epochs to reach.
        known = {f.name for f in dataclasses.fields(FitOptions)}
        kept = {k: v for k, v in saved.training.items() if k in known and k not in ("epochs", "distribute")}
        kept.setdefault("tie_embeddings", saved.decoder.tie_embeddings)  # runs from before the option: untied
        _refuse_changed_settings(out, options, kept, given)
        options = dataclasses.replace(options, **kept)
        if options.epochs is None:  # a resumed run goes on to its own epochs unless told more
            options = dataclasses.replace(options, epochs=saved.training.get("epochs"))
        state = out / "checkpoints" / "state.json"
        done = read_state(state.parent)["epochs_done"] if state.is_file() else 0
        if options.epochs is not None and options.epochs < done:  # config.json keeps saying what was trained
            notes.append(f"--epochs {options.epochs} is fewer than the {done} epochs {out} has done: no epoch "
                         "was trained and none was undone.")
            options = dataclasses.replace(options, epochs=done)
    if options.epochs is None:
        options = dataclasses.replace(options, epochs=DEFAULT_EPOCHS)
    options = options.validate().resolved()  # config.json records the values trained with
    dataset = load_captions(captions, format=format)
    store = FeatureStore.open(features)
    spec = store.spec
    if saved is not None:
        saved.feature_spec.require_compatible(spec, f"the features run {out} was trained on", str(features))
    decoder = decoders.get(options.decoder)
    if decoder.needs_spatial not in (None, spec.spatial):
        want = "the convolutional grid (extract with --spatial)" if decoder.needs_spatial else \
            "pooled vectors (extract without --spatial), or use --decoder attention or transformer"
        raise CaptioningError(f"{features} holds {'spatial' if spec.spatial else 'pooled'} features "
                              f"{spec.feature_shape}; the {decoder.name} decoder needs {want}.")
    cleaning = CleaningOptions.from_dict(options.cleaning)
    train = _usable(_check_store(store, dataset.split("train"), "train", options.on_missing, notes), "train",
                    cleaning, notes)
    dev = _usable(_check_store(store, dataset.split("dev"), "dev", options.on_missing, notes), "dev", cleaning,
                  notes)

    captions_sha256 = {"train": _fingerprint(train), "dev": _fingerprint(dev)}
    if saved is not None:
        _refuse_changed_captions(out, captions, saved.data, captions_sha256, train, dev)
        vocab, max_length = saved.vocab, saved.decoder.max_length
    else:
        train_tokens = [tokenize(c, cleaning) for c in train["caption"]]
        vocab = Vocabulary.build(train_tokens, options.min_count, cleaning)
        if len(vocab) <= 4:
            raise UsageError(f"--min-count {options.min_count} leaves no words: no train word occurs that often "
                             f"({len(train)} captions). Lower --min-count.")
        max_length = max_caption_length(train_tokens, options.max_length_percentile)
        longer = sum(len(t) + 2 > max_length for t in train_tokens)
        if longer:
            notes.append(f"{longer} train captions are longer than {max_length - 2} words (the "
                         f"{options.max_length_percentile}th percentile) and were cut to it.")
    cfg = DecoderConfig(options.decoder, len(vocab), spec.feature_shape[-1], max_length, options.embed_dim,
                        options.units, options.dropout, options.rnn, options.bidirectional,
                        grid_size=spec.feature_shape[0] if spec.spatial else 0, attention_dim=options.attention_dim,
                        doubly_stochastic=options.doubly_stochastic, tie_embeddings=options.tie_embeddings,
                        blocks=options.blocks, heads=options.heads)
    run = Run(spec, cfg, vocab, training={**dataclasses.asdict(options)},
              data={"source": str(dataset.source.resolve()), "format": dataset.format,
                    "train_images": int(train["image"].nunique()), "dev_images": int(dev["image"].nunique()),
                    "captions_sha256": captions_sha256},
              feature_store=str(Path(features).resolve()))
    run.training["fast_path"] = cfg.decoder.is_causal(cfg) and not options.pairs
    run.training.update(placement=placement.strategy, replicas=placement.replicas,
                        global_batch_size=options.batch_size * placement.replicas)
    return FitPlan(out, options, run, store, EncodedCaptions.from_table(train, vocab, max_length),
                   EncodedCaptions.from_table(dev, vocab, max_length),
                   [store.index[i] for i in train["image"].unique()], _references(dev, cleaning),
                   _references(train, cleaning), resume, notes + dataset.notes, placement)


def _fingerprint(table) -> str:
    """The captions a split trains on, whatever the file's line order, line endings or location."""
    lines = sorted(f"{i}\t{c}" for i, c in zip(table["image"], table["caption"]))
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _refuse_changed_captions(out, captions, data: dict, now: dict, train, dev) -> None:
    """Resuming on edited captions would train the saved vocabulary on words it does not hold (as <unk>);
    a store that now holds other images changes the captions trained on just as much."""
    saved = data.get("captions_sha256")
    changed = [split for split in ("train", "dev") if saved and saved.get(split) not in (None, now[split])]
    if changed:
        sizes = "; ".join(f"{s}: {t['image'].nunique()} images, {len(t)} captions now"
                          + (f", {data[s + '_images']} images then" if data.get(s + "_images") else "")
                          for s, t in (("train", train), ("dev", dev)) if s in changed)
        raise CaptioningError(f"--captions {captions}: the {' and '.join(changed)} captions differ from those run "
                              f"{out} was trained on ({sizes}): the captions were edited, or the feature store "
                              "holds other images than it did. Resume with the captions and store the run began "
                              "with, or train a new run on these into another folder. Nothing was changed.")


def _references(table, cleaning) -> dict:
    refs = {}
    for image, caption in zip(table["image"], table["caption"]):
        refs.setdefault(image, []).append(tokenize(caption, cleaning))
    return refs


def _new_model(p: FitPlan):
    """Built and compiled in the placement's scope: mirrored variables under tf.distribute."""
    with p.placement.scope():
        return _compiled_model(p)


def _compiled_model(p: FitPlan):
    model = decoders.build(p.run.decoder, sequences=p.fast)
    p.run.decoder.decoder.set_feature_statistics(model, *p.store.statistics(p.train_rows))
    smoothing = p.options.label_smoothing
    # with smoothing the loss is no longer the captions' cross-entropy: it is logged beside it
    plain = [keras.metrics.SparseCategoricalCrossentropy(name="cross_entropy")] if smoothing else []
    model.compile(optimizer=keras.optimizers.Adam(p.options.learning_rate), loss=caption_loss(smoothing),
                  weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                                    keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"), *plain])
    return model


def train(p: FitPlan, verbose="auto"):
    """Keras ``fit`` from epoch 0, or from the last complete epoch when resuming; returns the model."""
    set_random_seed(p.options.seed)
    seqs = p.sequences()
    initial_epoch, state = 0, None
    for folder in (p.out, p.checkpoints):  # a kill mid-write leaves a temporary file; fit holds the lock
        atomic.remove_leftovers(folder)
    if p.resume:
        state = read_state(p.checkpoints)
        initial_epoch = state["epochs_done"]
        with p.placement.scope():
            model = load_model(p.checkpoints / "last.keras", compile=True)
    else:
        p.out.mkdir(parents=True, exist_ok=True)
        model = _new_model(p)
        p.run.save(p.out)  # config and vocabulary first: a run killed in epoch 1 still explains itself
    o = p.options
    # the exported model is the best epoch's (checkpoints/best.keras), so no weights are kept in memory
    mode = "max" if o.monitor == "val_bleu4" else "min"
    early = keras.callbacks.EarlyStopping(monitor=o.monitor, mode=mode, patience=o.patience)
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(1, o.patience // 2),
                                                min_lr=1e-5)
    rows = recorded_rows(state, "history", p.out / "history.csv", range(initial_epoch))
    checkpoints = RunCheckpoints(p.out, seqs, o.seed, early, plateau, state, rows, monitor=o.monitor)
    score = []
    if o.monitor == "val_bleu4":
        from captioning.training.caption_score import CaptionScore
        score = [CaptionScore(p)]
    if state and state.get("stopped"):  # early stopping had ended it; the kill came later (tuning, export)
        return model
    # More cross-entropy epochs after self-critical ones: their state entries go, and tune redoes them
    # from the new best epoch.
    warmup = [LinearWarmup(o.warmup_steps, o.learning_rate, len(seqs[0]))] if o.warmup_steps else []
    prepare(model, p.placement, seqs[0][0])
    # shuffle=False: the Sequence reshuffles itself from (seed, epoch), which --resume can repeat;
    # Keras' own shuffle of a PyDataset's batch order draws from Python's global random state
    model.fit(feed(seqs[0], p.placement), validation_data=feed(seqs[1], p.placement),
              epochs=max(o.epochs, initial_epoch), initial_epoch=initial_epoch,
              callbacks=[*score, early, plateau, *warmup, checkpoints, interrupt.keras_callback()], verbose=verbose,
              shuffle=False)
    return model


def export(p: FitPlan, verbose="auto") -> FitResult:
    """Save the best epoch as the next-word ``model.keras``, the re-ranking files, the curves and the results."""
    if not (p.checkpoints / "best.keras").is_file():
        raise CaptioningError(f"no epoch of {p.out} reached a finite {p.options.monitor} (training diverged); "
                              "start again with a lower --learning-rate.")
    from captioning.training.self_critical import kept_checkpoint, tuning_rows
    state = read_state(p.checkpoints)
    rows = recorded_rows(state, "history", p.out / "history.csv", range(state["epochs_done"]))
    tuning = tuning_rows(state, p.out)
    for name, table in (("history.csv", rows), ("self_critical.csv", tuning)):
        if table:  # the reports, as the state records them (whatever became of the files)
            write_csv(p.out / name, table)
    tuned = kept_checkpoint(p.checkpoints, tuning)
    if tuned:  # beam search with the model before self-critical tuning proposes more candidates to re-rank
        save_model(_next_word(p, p.checkpoints / "best.keras"), p.out / CROSS_ENTROPY_FILE)
    else:
        (p.out / CROSS_ENTROPY_FILE).unlink(missing_ok=True)
    save_model(_next_word(p, tuned or p.checkpoints / "best.keras"), p.out / "model.keras")
    _write_neighbours(p)
    matching.write(p, verbose)
    plot_history(rows, p.out / "training_curves.png", title=f"Training curves — {p.out.name}")
    # the captions' cross-entropy whatever the monitor (with label smoothing, the loss is another number)
    best = min(r.get("val_cross_entropy", r["val_loss"]) for r in rows)
    unigram = unigram_loss(p.train, p.dev, len(p.run.vocab))
    if not best < unigram:
        p.notes.append(f"the decoder predicts the dev captions no better than word frequencies alone (validation "
                       f"loss {best:.3f} ≥ {unigram:.3f}): it has not learned to use the images yet. Train longer "
                       f"(`captioning fit ... --out {p.out} --resume --epochs N`, N above {len(rows)}), or check that "
                       "the features were extracted from these captions' images.")
    result = FitResult(p.out, len(rows), best, unigram, len(p.run.vocab),
                       p.run.data["train_images"], p.run.data["dev_images"], p.notes, p.placement.describe(),
                       has_matcher=bool(p.options.matcher_epochs))
    p.run.results = {"epochs_run": result.epochs_run, "best_val_loss": best, "unigram_val_loss": result.unigram_val_loss}
    if len(tuning) > 1 and p.options.self_critical_epochs:
        result.self_critical = [(r["epoch"], r["dev_cider"]) for r in tuning]
        result.self_critical_kept = int(tuned.stem.rsplit("_", 1)[1]) if tuned else 0
        p.run.results["self_critical_dev_cider"] = [r["dev_cider"] for r in tuning]
        p.run.results["self_critical_kept_epoch"] = result.self_critical_kept
    p.run.record_files(p.out)
    p.run.save(p.out)
    return result


def _next_word(p: FitPlan, checkpoint: Path):
    """A checkpoint as the classic next-word model (same layers, same order; the fast path trains a
    teacher-forced model with the same weights)."""
    model = load_model(checkpoint)
    if not p.fast:
        return model
    next_word = decoders.build(p.run.decoder, sequences=False)
    next_word.set_weights(model.get_weights())
    return next_word


def _write_neighbours(p: FitPlan) -> None:
    """The train side of consensus re-ranking, so the run re-ranks without its feature store."""
    from captioning.inference import consensus
    images = sorted(p.train_references)
    consensus.write(p.out / consensus.FILE, consensus.pooled_features(p.store, images),
                    [p.train_references[i] for i in images])


def fit(captions, features, out, options: FitOptions = FitOptions(), format=None, resume: bool = False,
        verbose="auto", given=None) -> FitResult:
    """Train a decoder on the train split, validate on dev, write the run folder ``out``.

    ``given``: the names of the options the person typed (the CLI passes them): with ``resume``,
    one that differs from the run's own setting is refused even when it is the default.

    With ``options.distribute`` the steps run on several devices or machines (see
    ``captioning.training.distribute``); a multi-worker run's other workers return None."""
    options.validate()
    placement = place(options.distribute)  # before any model: tf.distribute needs it first
    try:
        if not placement.chief:
            return _follow(placement, captions, features, Path(out), options, format, resume, verbose)
        with WriterLock(Path(out), "captioning fit"):  # checked again under the lock: a second fit refuses
            p = plan(captions, features, out, options, format, resume, placement, given)
            train(p, verbose)
            release(placement)  # one device from here: sampling moves batches of every size
            tune(p, verbose)
            return export(p, verbose)
    finally:
        release(placement)


def tune(p: FitPlan, verbose="auto") -> None:
    """Self-critical CIDEr-D epochs after the cross-entropy ones (``options.self_critical_epochs``)."""
    if not p.options.self_critical_epochs:
        return
    if not p.run.decoder.decoder.is_causal(p.run.decoder):
        p.notes.append(f"no self-critical fine-tuning: the {p.options.decoder} decoder has no teacher-forced "
                       "sequence model to score sampled captions with.")
        return
    from captioning.training.self_critical import fine_tune
    fine_tune(p, verbose)


def _follow(placement, captions, features, out: Path, options, format, resume, verbose) -> None:
    """A multi-worker run's non-chief worker: the same steps in lockstep, its writes into a scratch folder
    (the chief alone writes ``out``); resuming starts from a copy of the chief's last complete epoch."""
    scratch = Path(tempfile.mkdtemp(prefix=f"captioning-worker{placement.worker}-"))
    try:
        if resume:
            _check_out(out, resume=True)
            for name in ("config.json", "vocab.json", "history.csv"):
                if (out / name).is_file():
                    shutil.copy2(out / name, scratch / name)
            shutil.copytree(out / "checkpoints", scratch / "checkpoints")
        train(plan(captions, features, scratch, options, format, resume, placement), verbose)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


__all__ = ["FitOptions", "FitResult", "FitPlan", "plan", "train", "tune", "export", "fit", "unigram_loss"]
