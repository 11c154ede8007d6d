"""What every decoder shares: its configuration, the ``Decoder`` base class and the loss.

A decoder module builds two graphs from one set of named layers, side by side so they cannot drift:
- ``build(cfg, sequences=False)``: (image features, partial caption) → next-word distribution. This
  is the model saved as ``model.keras``. For causal decoders it is the per-step graph plus
  ``LastValidStep``, which picks each row's last real step.
- ``build(cfg, sequences=True)``: (image features, whole caption) → a distribution at every step.
  For causal decoders the mean loss over all partial-caption pairs equals the masked mean loss of
  this single teacher-forced pass, so it trains the same objective many times faster ("fast path").
- ``step_model(model, cfg)``: the one-token inference graph over the trained layers (im2txt's
  "feed the image" + "one step"), so beam search carries state instead of re-reading the prefix.
Layer names are private to each decoder module; nothing outside it looks a layer up by name.
"""

from __future__ import annotations

import dataclasses

from captioning.backend import import_keras
from captioning.errors import UsageError


# The sizes every decoder starts from; ``fit``'s options take their defaults from here.
SIZES = {"embed_dim": 512, "units": 512, "dropout": 0.5, "attention_dim": 256, "doubly_stochastic": 0.02, "blocks": 2,
         "heads": 8}
# fit's settings that a decoder may set for itself (``Decoder.defaults``), and the shared values
FIT_DEFAULTS = {"embed_dim": SIZES["embed_dim"], "units": SIZES["units"], "dropout": SIZES["dropout"],
                "heads": SIZES["heads"], "tie_embeddings": False, "learning_rate": 1e-3, "label_smoothing": 0.0,
                "warmup_steps": 0}


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    type: str
    vocab_size: int
    feature_dim: int
    max_length: int  # tokens, start and end included
    embed_dim: int = SIZES["embed_dim"]
    units: int = SIZES["units"]
    dropout: float = SIZES["dropout"]
    rnn: str = "lstm"
    bidirectional: bool = False  # inject only
    grid_size: int = 0  # attention only: grid cells per image (H·W); feature_dim is then channels
    attention_dim: int = SIZES["attention_dim"]
    doubly_stochastic: float = SIZES["doubly_stochastic"]  # λ of Σ_cells(1 − Σ_t α)²: ≈ the usual mean over 49 cells
    tie_embeddings: bool = False  # the word vectors are the output layer too (recurrent decoders)
    blocks: int = SIZES["blocks"]  # transformer only: decoder blocks
    heads: int = SIZES["heads"]  # transformer only: attention heads

    def __post_init__(self):
        from captioning import decoders
        checks = [(self.vocab_size >= 5, "vocab_size", "at least 5 (4 markers and one word)"),
                  (self.feature_dim >= 1, "feature_dim", "at least 1"),
                  (self.max_length >= 2, "--max-length", "at least 2"),
                  (self.embed_dim >= 1, "--embed-dim", "at least 1"),
                  (self.units >= 1, "--units", "at least 1"),
                  (0 <= self.dropout < 1, "--dropout", "in [0, 1)"),
                  (self.attention_dim >= 1, "--attention-dim", "at least 1"),
                  (self.doubly_stochastic >= 0, "--doubly-stochastic", "at least 0"),
                  (self.blocks >= 1, "--blocks", "at least 1"),
                  (self.heads >= 1, "--heads", "at least 1"),
                  (self.rnn in ("lstm", "gru"), "--rnn", "lstm or gru")]
        for ok, name, allowed in checks:
            if not ok:
                raise UsageError(f"{name} must be {allowed}; got {getattr(self, name.lstrip('-').replace('-', '_'))!r}")
        decoder = decoders.get(self.type)
        if self.tie_embeddings and not decoder.can_tie:
            tied = ", ".join(n for n in decoders.names() if decoders.get(n).can_tie)
            raise UsageError(f"--tie-embeddings applies to {tied}; the {self.type} decoder's output layer reads "
                             "more than the RNN's state. Leave the option out for it.")
        decoder.validate(self)

    @property
    def decoder(self) -> "Decoder":
        from captioning import decoders
        return decoders.get(self.type)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DecoderConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class Decoder:
    """One decoder type. Subclasses set the facts and override ``build`` and ``step_model``."""

    name: str = ""
    help: str = ""
    needs_spatial: bool | None = False  # True: reads the (H·W, C) grid; False: a pooled vector; None: either
    output_offset: int = 0  # steps before the first word prediction (pre-inject: the image step)
    can_tie: bool = True  # its output layer can be the transposed word vectors (--tie-embeddings)
    # fit's settings that this decoder takes unless told otherwise, where its own measured better on
    # Flickr8k dev than the shared ones of FIT_DEFAULTS (docs/results.md)
    defaults: dict = {}

    def fit_defaults(self, given: dict) -> dict:
        """The values of FIT_DEFAULTS' settings left unset (None) in ``given``: this decoder's own, or the shared."""
        return {k: self.defaults.get(k, shared) for k, shared in FIT_DEFAULTS.items() if given.get(k) is None}

    def is_causal(self, cfg: DecoderConfig) -> bool:
        """Whether this configuration can train on whole captions (the fast path: the same objective as the
        partial-caption pairs) and step with state."""
        return True

    def has_attention_maps(self, cfg: DecoderConfig) -> bool:
        """Whether its captions come with a map over the image cells per word (``Caption.attention``)."""
        return False

    def validate(self, cfg: DecoderConfig) -> None:
        if cfg.bidirectional:
            raise UsageError(f"--bidirectional applies to the inject decoder only; {self.name} must be causal "
                             "to caption word by word")

    def build(self, cfg: DecoderConfig, sequences: bool = False):
        raise NotImplementedError

    def step_model(self, model, cfg: DecoderConfig):
        """A ``StepModel`` over the trained next-word ``model``'s layers."""
        raise NotImplementedError

    def set_feature_statistics(self, model, mean, std) -> None:
        """Give the model's ``FeatureStandardization`` the train features' mean and spread (every decoder
        standardises its input features in a layer named ``image_norm``)."""
        model.get_layer("image_norm").set_statistics(mean, std)


def caption_loss(label_smoothing: float = 0.0):
    """Cross-entropy averaged over real (weighted) tokens, never over padding; with ``label_smoothing``
    ε, each token's target keeps 1 − ε of its weight and spreads ε evenly over the vocabulary
    (Szegedy et al. 2016), a regulariser for decoders that overfit (``layers.SmoothedCrossEntropy``).

    The default reduction divides by every element when a sample weight arrives without a mask
    (merge's broadcast Add drops the mask), which would count padding; dividing by the summed
    weights gives the same masked mean as the partial-caption pairs in every decoder.
    """
    keras = import_keras()
    if label_smoothing:
        from captioning.decoders.layers import SmoothedCrossEntropy
        return SmoothedCrossEntropy(label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight")


def rnn_layer(cfg: DecoderConfig, name: str, return_sequences: bool, teacher_forced: bool = False):
    """The configured RNN; the teacher-forced LSTM is ``SequenceLSTM`` (same weights, cheaper backward)."""
    keras = import_keras()
    if cfg.rnn == "gru":
        return keras.layers.GRU(cfg.units, return_sequences=return_sequences, name=name)
    from captioning.decoders.lstm import SequenceLSTM
    cls = SequenceLSTM if teacher_forced else keras.layers.LSTM
    return cls(cfg.units, return_sequences=return_sequences, name=name)
