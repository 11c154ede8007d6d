"""``Captioner``: a run folder in, captions out — from image files, arrays or stored features."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import numpy as np

from captioning import decoders, hardware
from captioning.decoders.steps import WithoutTokens
from captioning.errors import DAMAGED_RUN_FILE, CaptioningError, UsageError
from captioning.lock import WriterLock
from captioning.inference.ensemble import EnsembleSteps
from captioning.inference.decoding import Decoding, get as get_decoding
from captioning.inference.search import Hypotheses, to_captions
from captioning.run import CROSS_ENTROPY_FILE, Run, load_model


def _named(load, image, size):
    """``load`` with the file named in its error: in a list of photos, "file not found" alone says not which."""
    from captioning.features.images import ImageError
    try:
        return load(image, size)
    except ImageError as e:
        if isinstance(image, np.ndarray):
            raise
        raise ImageError(f"{image}: {e}") from None


def check_decoder(model, path: Path, vocab, decoder) -> None:
    """Refuse a decoder file that is not this run's shape (another run's, or its matcher.keras renamed):
    its words and features must be the run's."""
    shapes = [tuple(i.shape) for i in model.inputs]
    words = model.outputs[0].shape[-1] if len(model.outputs) == 1 else None
    features = (decoder.grid_size, decoder.feature_dim) if decoder.grid_size else (decoder.feature_dim,)
    if len(shapes) != 2 or words != len(vocab) or shapes[0][1:] != features:
        raise ValueError(f"it takes {', '.join(map(str, shapes))} and gives {[tuple(o.shape) for o in model.outputs]}; "
                         f"this run's decoder gives {len(vocab)} word probabilities")


def _proposer(path: Path, vocab, decoder, policy: str | None = None):
    """The step model of a run's ``cross_entropy.keras`` (computing in the dtype ``policy``; None:
    float32), or a clear error for a damaged file or one from another run (other words, another
    decoder's layers)."""
    instead = "Or re-rank model.keras's captions alone (--candidates model)."
    try:
        model = load_model(path)
        check_decoder(model, path, vocab, decoder)
        return decoders.step_model(model, decoder, policy)
    except CaptioningError as e:
        raise CaptioningError(f"{e} {instead}") from None
    except ValueError as e:
        why = str(e).split(". Existing layers")[0]
        raise CaptioningError(f"{path} does not belong to this run ({why}): copy the run folder again or run "
                              f"`captioning fit ... --resume` on it to write it again. {instead}") from None


def run_dirs(run_dir) -> list:
    """One run folder, or several captioning together (an ensemble), always as a list of paths."""
    return [Path(d) for d in run_dir] if isinstance(run_dir, (list, tuple)) else [Path(run_dir)]


def empty_captions_note(captions, run_dir) -> str | None:
    """Captions that ended before any word are the sign of a run that has not learned yet: say so,
    rather than leave blank lines to puzzle over."""
    n = sum(not c.text for c in captions)
    if not n:
        return None
    run = " + ".join(map(str, run_dirs(run_dir)))
    return (f"{n} of {len(captions)} captions ended before any word, as a run that has not learned yet does: "
            f"train {run} longer (`captioning fit ... --out {run} --resume --epochs N`, N above the epochs "
            "in its history.csv).")


def _searched(search, steps, batches, start_id, end_id, max_length):
    """``search``'s hypotheses for each batch of features, in order. A re-ranking search (one with
    ``candidates`` and ``choose``) re-ranks each batch in two more threads, a half each, while the
    next batch's searches run: re-ranking is mostly one-threaded NumPy and SciPy, the searches' steps
    leave the GIL to TensorFlow's threads, so they share the cores better than they take turns, and
    the last batch's re-ranking, which nothing overlaps, uses two cores."""
    if not (hasattr(search, "candidates") and len(batches) > 1):
        for batch in batches:
            yield search(steps, batch, start_id, end_id, max_length)
        return

    def halves(batch, found):
        hyps, pools = found
        middle = (len(batch) + 1) // 2
        return [pool.submit(search.choose, batch[a:b], (hyps.part(a, b), pools[a:b]))
                for a, b in ((0, middle), (middle, len(batch))) if b > a]

    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="captioning-rerank") as pool:
        choosing = None
        for batch in batches:
            found = search.candidates(steps, batch, start_id, end_id, max_length)
            if choosing is not None:
                yield Hypotheses.joined([c.result() for c in choosing])
            choosing = halves(batch, found)
        yield Hypotheses.joined([c.result() for c in choosing])


class Captioner:
    """One run, or several runs captioning together (an ensemble: ``load`` with a list of folders)."""

    def __init__(self, models, run: Run, run_dir=None, weights=None, configs=None):
        models = models if isinstance(models, (list, tuple)) else [models]
        self.model, self.run = models[0], run
        self.run_dirs = run_dirs(run_dir) if run_dir is not None else [Path(".")]
        self.vocab, self.decoder, self.feature_spec = run.vocab, run.decoder, run.feature_spec
        v = run.vocab
        members = [decoders.step_model(m, cfg) for m, cfg in zip(models, configs or [run.decoder])]
        steps = members[0] if len(members) == 1 else EnsembleSteps(members)
        self.steps = WithoutTokens(steps, [v.pad_id, v.unk_id, v.start_id])
        self._weights_override = weights
        self._backbone = None
        self._consensus = None
        self._matcher = None
        self._proposers = {}  # per dtype policy (None: float32)
        self._searches = {}
        self.notes = []

    def draw_maps_from_block(self, block: int) -> None:
        """Attention maps from decoder block ``block`` (1 = the first) of a grid transformer run, instead
        of its last block's. Each block attends to the cells on its own; the maps differ."""
        from captioning.decoders.transformer import TransformerSteps
        inner = self.steps.inner
        blocks = self.decoder.blocks
        if not (isinstance(inner, TransformerSteps) and inner.grid):
            raise UsageError("choosing a block's attention maps applies to one transformer run on --spatial "
                                  f"features; {self.run_dirs[0]} is a {self.decoder.type} run"
                                  f"{'' if self.decoder.grid_size else ' on pooled features'}.")
        if not 1 <= block <= blocks:
            raise UsageError(f"block {block}: {self.run_dirs[0]}'s transformer has decoder blocks 1 to {blocks}.")
        inner.map_block = block - 1

    @classmethod
    def load(cls, run_dir, weights=None, allow_partial: bool = False) -> "Captioner":
        """Load ``model.keras`` (safe mode), ``vocab.json`` and ``config.json`` from a run folder, or from
        each of a list of run folders (an ensemble: they must share the vocabulary and the features).
        ``weights`` is the backbone's weights file, when the one recorded has moved.

        A run that ``fit`` is writing now, or that a killed ``fit`` left half exported, is refused:
        its files may come from different epochs. ``allow_partial`` loads what is there, with a note."""
        dirs = run_dirs(run_dir)
        runs = [Run.load(d) for d in dirs]
        notes = []
        for d, r in zip(dirs, runs):
            writer = WriterLock(d, "captioning fit").holder()
            if not (d / "model.keras").is_file():
                if writer:
                    raise CaptioningError(f"{d}: no model.keras yet — `captioning fit` (process {writer}) is still "
                                          "training this run; wait for it to finish.")
                raise CaptioningError(f"{d}: no model.keras — the run did not finish; "
                                      "continue it with `captioning fit ... --resume`.")
            why = (f"`captioning fit` (process {writer}) is writing it now" if writer else
                   "its config.json records no results: fit stopped while saving it" if not r.results else None)
            if why and not allow_partial:
                then = "wait for it to finish" if writer else f"finish it with `captioning fit ... --out {d} --resume`"
                raise CaptioningError(f"{d}: {why}, so its files (model.keras, the re-ranking files) may come from "
                                      f"different epochs. {then[0].upper()}{then[1:]}, or caption what is there now "
                                      "with --allow-partial (Captioner.load(..., allow_partial=True)).")
            if why:
                notes.append(f"{d}: {why}; captioned with what is there now (--allow-partial).")
        first = runs[0]
        for d, r in zip(dirs[1:], runs[1:]):
            if r.vocab != first.vocab:  # the same words with the same ids; their counts do not matter
                sizes = (f"{len(r.vocab)} and {len(first.vocab)} words" if len(r.vocab) != len(first.vocab) else
                         f"both {len(r.vocab)} words, but not the same words or cleaning")
                raise CaptioningError(f"{d} and {dirs[0]} have different vocabularies ({sizes}): an ensemble needs "
                                      "runs trained on the same captions with the same --min-count and cleaning.")
            diff = first.feature_spec.differences(r.feature_spec, (dirs[0].name, d.name))
            if diff:
                raise CaptioningError(f"{d} and {dirs[0]} were trained on different features ({'; '.join(diff)}): "
                                      "an ensemble's runs must read the same features of each image.")
        models = [load_model(d / "model.keras") for d in dirs]
        for d, r, m in zip(dirs, runs, models):
            try:
                check_decoder(m, d / "model.keras", r.vocab, r.decoder)
                decoders.step_model(m, r.decoder)  # the layers the run's decoder type names must be there
            except ValueError as e:
                raise CaptioningError(f"{d / 'model.keras'} is not this run's decoder ({str(e)[:300]}): "
                                      f"{DAMAGED_RUN_FILE}.") from None
        captioner = cls(models, first, dirs, weights, [r.decoder for r in runs])
        captioner.notes += notes
        return captioner

    # --- decoding --------------------------------------------------------------------------------
    def reranked(self, search, neighbours: int = 40, matching: float = 1.0, candidates: str = "both",
                 likelihood: float = 0.02, proposer_precision: str = "auto"):
        """``search`` (beam search) followed by consensus re-ranking over the run's ``neighbours.h5``
        (``captioning.inference.consensus``), plus ``matching`` × the image–caption match of its
        ``matcher.keras`` (``captioning.inference.matching``); with ``candidates="both"`` the captions
        that beam search finds with the run's model before self-critical tuning (``cross_entropy.keras``)
        join the candidates; ``likelihood`` × each candidate's log-probability from beam search is added
        to its score; ``proposer_precision="auto"`` lets that second search compute in reduced precision
        where this machine does so faster (``hardware.reduced_precision``). What the run lacks is left
        out, with a note."""
        from captioning.inference import consensus
        from captioning.inference import matching as match
        home = self.run_dirs[0]
        dim = int(self.feature_spec.feature_shape[-1])
        if self._consensus is None:
            if not (home / consensus.FILE).is_file():
                self.notes.append(f"{home} has no {consensus.FILE} (runs before version 0.3): the captions are beam "
                                  "search's own, not re-ranked; `captioning fit ... --resume` on the run adds it.")
                return search
            path = self.run.check_file(home, consensus.FILE, "caption without re-ranking (--no-rerank).")
            self._consensus = consensus.Consensus.load(path, dim)
        if matching and self._matcher is None:
            if (home / match.FILE).is_file():
                path = self.run.check_file(home, match.FILE, "re-rank without the matcher (--matching 0).")
                self._matcher = match.Matcher.load(path, self.vocab, dim)
            else:
                why = ("fit --matcher-epochs 0" if self.run.training.get("matcher_epochs") == 0 else
                       "runs before version 0.4")
                self.notes.append(f"{home} has no {match.FILE} ({why}): re-ranked by the neighbours' "
                                  "consensus alone; `captioning fit ... --resume` on the run adds it.")
        policy = hardware.reduced_precision() if proposer_precision == "auto" else None
        proposers = self._cross_entropy_steps(home, policy) if candidates == "both" else []
        return consensus.ConsensusRerank(search, self._consensus, self.vocab, neighbours,
                                         self._matcher if matching else None, matching, proposers,
                                         likelihood=likelihood, proposer_precision=policy or "float32")

    def _cross_entropy_steps(self, home: Path, policy: str | None = None) -> list:
        """The step model of ``cross_entropy.keras`` computing in the dtype ``policy`` (None: float32), as
        a list of proposers (empty for an ensemble, whose members already widen the search, and for a
        run whose model.keras is the cross-entropy model)."""
        if len(self.run_dirs) > 1:
            return []
        if policy not in self._proposers:
            self._proposers[policy] = []
            path = home / CROSS_ENTROPY_FILE
            if path.is_file():
                v = self.vocab
                self.run.check_file(home, CROSS_ENTROPY_FILE, "re-rank model.keras's captions alone (--candidates model).")
                steps = _proposer(path, v, self.decoder, policy)
                self._proposers[policy] = [WithoutTokens(steps, [v.pad_id, v.unk_id, v.start_id])]
            elif self.run.results.get("self_critical_kept_epoch", "self_critical_dev_cider" in self.run.results):
                note = (f"{home} has no {CROSS_ENTROPY_FILE} (runs before version 0.5 lack it): re-ranked among "
                        "model.keras's captions alone; `captioning fit ... --resume` on the run adds it.")
                self.notes += [] if note in self.notes else [note]  # once, whichever precisions were asked for
        return self._proposers[policy]

    def search(self, decoding="recommended"):
        """The search object for ``decoding`` (a recipe's name, a dict, a ``Decoding``, or a search
        object, used as it is), built once per recipe: re-ranking's caches live as long as the captioner."""
        if not isinstance(decoding, (str, dict, Decoding)) and decoding is not None:
            return decoding
        recipe = get_decoding(decoding or "recommended")
        if recipe not in self._searches:
            self._searches[recipe] = recipe.search(self)
        return self._searches[recipe]

    # --- from features -------------------------------------------------------------------------
    def caption_features(self, features, decoding="recommended", max_length=None, batch_size: int = 256,
                         show_progress: bool = False) -> list:
        """Captions for feature vectors as stored by ``extract-features`` (N, D); ``decoding`` as for
        ``search``. ``show_progress``: a bar with rate and ETA, on a terminal only."""
        from captioning.console import progress
        search = self.search(decoding)
        max_length = max_length or self.decoder.max_length
        features = np.asarray(features, np.float32)
        expected = tuple(self.feature_spec.feature_shape)
        if features.shape[1:] != expected:
            raise CaptioningError(f"features of shape {features.shape[1:]} given, but this run was trained on "
                                  f"{expected} ({self.feature_spec.describe()}).")
        out = []
        batches = [features[i:i + batch_size] for i in range(0, len(features), batch_size)]
        with progress(total=len(features), desc="captioning", unit="img",
                      disable=None if show_progress else True) as bar:
            for hyps in _searched(search, self.steps, batches, self.vocab.start_id, self.vocab.end_id, max_length):
                out += to_captions(hyps, self.vocab)
                bar.update(len(hyps.tokens))
        return out

    # --- from pixels ---------------------------------------------------------------------------
    @property
    def backbone(self):
        """The CNN that made the training features, rebuilt from the run's record."""
        if self._backbone is None:
            from captioning.features.backbones import backbone_for_spec, build_model, weights_for_spec
            bb = backbone_for_spec(self.feature_spec)
            if self.run.export.get("encoder"):
                self._backbone = (bb, self._bundled_encoder(self.run.export["encoder"]))
            else:
                weights, seed = weights_for_spec(self.feature_spec, self._weights_override, self.notes)
                self._backbone = (bb, build_model(bb, weights, self.feature_spec.pooling, seed))
        return self._backbone

    def _bundled_encoder(self, name: str):
        """An exported bundle's own encoder (``captioning.export``), checked against its recorded sha256."""
        if self._weights_override:
            raise CaptioningError(f"--weights {self._weights_override}: {self.run_dirs[0]} is an exported bundle "
                                  f"that brings its image encoder ({name}); leave out --weights.")
        if self.feature_spec.backbone == "keras_hub":
            from captioning.features.hub import require_keras_hub
            require_keras_hub()  # registers the preset's layers before the file is read
        path = self.run.check_file(self.run_dirs[0], name, "export the run again.")
        return load_model(path)

    def image_features(self, images) -> np.ndarray:
        """Features for image paths or uint8 RGB arrays, computed exactly as ``extract-features`` does."""
        from captioning.features.backbones import embed
        from captioning.features.images import load_image
        bb, model = self.backbone
        return embed(model, bb, [_named(load_image, im, bb.input_size) for im in images], self.feature_spec.pooling)

    def caption(self, images, decoding="recommended", max_length=None) -> list:
        """Captions for image paths or arrays (raises on an unreadable image)."""
        return self.caption_features(self.image_features(images), decoding, max_length)

    def caption_files(self, paths, decoding="recommended", max_length=None, batch_size: int = 32,
                      show_progress: bool = False) -> list:
        """(path, Caption or the exception) per file: a bad file never stops the others. Images are
        decoded one batch at a time, so a folder of thousands of photos never sits in memory at once."""
        from captioning.console import progress
        from captioning.features.images import ImageError, load_image
        bb, _ = self.backbone
        paths, results = list(paths), []
        bar = progress(total=len(paths), desc="captioning", unit="img", disable=None if show_progress else True)
        for start in range(0, len(paths), batch_size):
            outcome, good = {}, []
            for i, p in enumerate(paths[start:start + batch_size]):
                try:
                    good.append((i, load_image(p, bb.input_size)))
                except ImageError as e:
                    outcome[i] = e
            if good:
                caps = self.caption([a for _, a in good], decoding, max_length)
                outcome.update({i: c for (i, _), c in zip(good, caps)})
            results += [(p, outcome[i]) for i, p in enumerate(paths[start:start + batch_size])]
            bar.update(len(outcome))
        bar.close()
        return results
