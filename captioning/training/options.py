"""``FitOptions``: every setting of ``fit``, declared once — the library's defaults and checks and the
``captioning fit`` options are made from these fields (``captioning.options``).

Defaults tuned on Flickr8k dev with real ImageNet features (docs/results.md): init-inject beat merge
by 0.02 BLEU-4; 512-wide layers, 16 images per batch and words seen at least 5 times beat the
tutorials' 256 / 64 / 1; one self-critical epoch on CIDEr-D lifts every decoder.
"""

from __future__ import annotations

import dataclasses

from captioning import decoders
from captioning.decoders.base import FIT_DEFAULTS, SIZES
from captioning.distribute import CHOICES as DISTRIBUTE
from captioning.options import check, option

MONITORS = ("val_loss", "val_bleu4")


def _own(decoder: str, name: str):
    return decoders.get(decoder).defaults[name]
DEFAULT_EPOCHS = 20


@dataclasses.dataclass
class FitOptions:
    decoder: str = option("init-inject", "; ".join(f"{n}: {decoders.get(n).help}" for n in decoders.names()),
                          choices=decoders.names())
    epochs: int | None = option(None, f"the most epochs (early stopping) (default: {DEFAULT_EPOCHS}; with --resume, "
                                "the run's own)", low=1)
    batch_size: int = option(16, "images per batch on each device (a step takes batch size × devices)", low=1)
    embed_dim: int | None = option(None, f"word embedding size (default: {FIT_DEFAULTS['embed_dim']}; "
                                   f"transformer: --units)", low=1, show_default=False)
    units: int | None = option(None, f"RNN state size, or the transformer's width (default: {FIT_DEFAULTS['units']}; "
                               f"transformer {_own('transformer', 'units')})", low=1, show_default=False)
    dropout: float | None = option(None, "dropout rate in the decoder, cross-entropy epochs only (default: "
                                   f"{FIT_DEFAULTS['dropout']}; transformer {_own('transformer', 'dropout')})",
                                   low=0, high=1, high_open=True, show_default=False)
    rnn: str = option("lstm", "the recurrent cell", choices=("lstm", "gru"))
    bidirectional: bool = option(False, "inject only: bidirectional final LSTM")
    tie_embeddings: bool | None = option(None, "the word vectors double as the output layer (default: on for "
                                         "init-inject and inject, where it measured better, off for merge and "
                                         "pre-inject; not for attention)", show_default=False)
    learning_rate: float | None = option(None, "Adam's, for the cross-entropy epochs (halved when the validation loss "
                                         f"stalls) (default: {FIT_DEFAULTS['learning_rate']:g}; attention "
                                         f"{_own('attention', 'learning_rate'):g}, transformer "
                                         f"{_own('transformer', 'learning_rate'):g})", low=0, low_open=True,
                                         show_default=False)
    label_smoothing: float | None = option(None, "cross-entropy epochs: each target word keeps 1 − EPS of its "
                                           "weight and spreads EPS over the vocabulary (default: "
                                           f"{FIT_DEFAULTS['label_smoothing']:g})", low=0, high=1, high_open=True,
                                           metavar="EPS", show_default=False)
    warmup_steps: int | None = option(None, "the cross-entropy learning rate rises linearly from near 0 to "
                                      "--learning-rate over the first N batches, then only halves on a stall "
                                      f"(default: {FIT_DEFAULTS['warmup_steps']}: none)", low=0, metavar="N",
                                      show_default=False)
    min_count: int = option(5, "keep words seen at least this often in the train captions", low=1)
    max_length_percentile: float | None = option(99.9, "cut captions longer than this percentile of train caption "
                                                 "lengths (100: no cut)", low=0, low_open=True, high=100)
    patience: int = option(5, "early stopping, in epochs", low=1)
    seed: int = option(0, "initial weights, batch order, dropout, sampling", low=0, high=2 ** 32, high_open=True)
    pairs: bool = option(False, "train on partial-caption pairs (the reference path) instead of the fast path")
    on_missing: str = option("skip", "captioned images absent from the feature store", choices=("skip", "error"))
    attention_dim: int = option(SIZES["attention_dim"], "attention only", low=1)
    doubly_stochastic: float = option(SIZES["doubly_stochastic"], "attention only: weight of the "
                                      "λ·Σ(1 − Σₜ αₜ)² regulariser", low=0, metavar="LAMBDA")
    blocks: int = option(SIZES["blocks"], "transformer only: decoder blocks", low=1)
    heads: int | None = option(None, "transformer only: attention heads (they divide --units) (default: "
                               f"{_own('transformer', 'heads')})", low=1, show_default=False)
    monitor: str = option("val_loss", "what early stopping and the kept epoch follow: validation loss, or the dev "
                          "split's greedy BLEU-4 (a few seconds per epoch)", choices=MONITORS)
    distribute: str = option("auto", "none: one device; mirrored: every GPU of this machine (or its logical CPUs; "
                             "JAX: DataParallel over its devices); multi-worker: the machines in TF_CONFIG; auto: "
                             "mirrored when there are several GPUs (multi-worker when TF_CONFIG is set)",
                             choices=DISTRIBUTE)
    self_critical_epochs: int = option(1, "then N epochs of self-critical training on CIDEr-D (Rennie et al. 2017; "
                                       "about as long as a cross-entropy epoch each; 0: none)", low=0, metavar="N")
    self_critical_learning_rate: float = option(5e-5, "Adam's, for the self-critical epochs", low=0, low_open=True)
    steps_per_epoch: int | None = option(None, "at most N batches per cross-entropy and self-critical epoch, each "
                                         "epoch's drawn afresh from its shuffle (default: all the train images; "
                                         "for a first look at a large data set)", low=1, metavar="N",
                                         show_default=False)
    matcher_epochs: int = option(60, "passes over the train images for re-ranking's image–caption matcher "
                                 "(matcher.keras; 0: none, and re-ranking uses the neighbours' consensus alone)",
                                 low=0, metavar="N")
    cleaning: dict = option(help="caption cleaning options (captioning.data.text.CleaningOptions)", flag=False,
                            default_factory=dict)

    def validate(self) -> "FitOptions":
        check(self)
        return self

    def resolved(self) -> "FitOptions":
        """These options with every setting left unset filled in: the decoder's own default, or the shared one."""
        return dataclasses.replace(self, **decoders.get(self.decoder).fit_defaults(dataclasses.asdict(self)))
