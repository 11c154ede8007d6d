"""The classic caption decoders as plain functional Keras models (no Lambda layers: safe-mode loadable).

Every decoder is built by one function with a ``sequences`` switch:
- ``sequences=False``: (image features, partial caption) → next-word distribution. This is the
  model saved as ``model.keras`` and the one the pairs Sequence trains. For causal decoders it is
  the same graph plus ``LastValidStep``, which picks each row's last real step.
- ``sequences=True``: (image features, whole caption) → a distribution at every step. For causal
  decoders the mean loss over all partial-caption pairs equals the masked mean loss of this single
  teacher-forced pass, so it trains the same objective many times faster ("fast path").
Both variants name their layers identically, so weights move between them with ``set_weights``.
"""

from __future__ import annotations

import dataclasses

from captioning.console import import_keras
from captioning.errors import CaptioningError

DECODERS = ("merge", "inject", "init-inject", "pre-inject", "attention")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    type: str
    vocab_size: int
    feature_dim: int
    max_length: int  # tokens, start and end included
    embed_dim: int = 256
    units: int = 256
    dropout: float = 0.5
    rnn: str = "lstm"
    bidirectional: bool = False  # inject only
    grid_size: int = 0  # attention only: grid cells per image (H·W); feature_dim is then channels
    attention_dim: int = 256
    doubly_stochastic: float = 0.02  # λ of Σ_cells(1 − Σ_t α)²: ≈ the usual mean over 49 cells

    def __post_init__(self):
        if self.type not in DECODERS:
            raise CaptioningError(f"unknown decoder {self.type!r}; choose one of {', '.join(DECODERS)}")
        if self.rnn not in ("lstm", "gru"):
            raise CaptioningError(f"unknown rnn {self.rnn!r}; choose lstm or gru")
        if self.bidirectional and self.type != "inject":
            raise CaptioningError("--bidirectional applies to the inject decoder only (the others must "
                                  "be causal to caption word by word)")

    @property
    def causal(self) -> bool:
        """Whether the teacher-forced fast path trains the same objective as the pairs."""
        return self.type != "inject"

    @property
    def output_offset(self) -> int:
        """Steps before the first word prediction (pre-inject spends one step on the image)."""
        return 1 if self.type == "pre-inject" else 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def caption_loss():
    """Cross-entropy averaged over real (weighted) tokens, never over padding.

    The default reduction divides by every element when a sample weight arrives without a mask
    (merge's broadcast Add drops the mask), which would count padding; dividing by the summed
    weights gives the same masked mean as the partial-caption pairs in every decoder.
    """
    keras = import_keras()
    return keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight")


def _rnn(cfg: DecoderConfig, name: str, return_sequences: bool, teacher_forced: bool = False):
    keras = import_keras()
    if cfg.rnn == "gru":
        return keras.layers.GRU(cfg.units, return_sequences=return_sequences, name=name)
    from captioning.training.lstm import SequenceLSTM  # same weights, a cheaper backward pass
    cls = SequenceLSTM if teacher_forced else keras.layers.LSTM
    return cls(cfg.units, return_sequences=return_sequences, name=name)


def build_decoder(cfg: DecoderConfig, sequences: bool = False):
    keras = import_keras()
    L = keras.layers
    if sequences and not cfg.causal:
        raise CaptioningError("the inject decoder reads a fixed-length prefix; train it with pairs")
    if cfg.type == "attention":
        return _build_attention(cfg, sequences)
    image = keras.Input((cfg.feature_dim,), name="image")
    length = cfg.max_length - 1 if cfg.type == "inject" else None  # longest prefix: all but endseq
    caption = keras.Input((length,), dtype="int32", name="caption")
    embed = L.Embedding(cfg.vocab_size, cfg.embed_dim, mask_zero=True, name="embedding")(caption)
    from captioning.training.layers import FeatureStandardization, LastValidStep
    img = FeatureStandardization(name="image_norm")(image)
    img = L.Dropout(cfg.dropout, name="image_dropout")(img)
    if cfg.type == "merge":
        img = L.Dense(cfg.units, activation="relu", name="image_dense")(img)
        seq = _rnn(cfg, "rnn", True, sequences)(L.Dropout(cfg.dropout, name="caption_dropout")(embed))
        img = L.Reshape((1, cfg.units), name="image_step")(img)  # broadcast over time
        hidden = L.Add(name="merge")([img, seq])
    elif cfg.type == "init-inject":
        states = [L.Dense(cfg.units, activation="tanh", name="init_h")(img)]
        if cfg.rnn == "lstm":
            states.append(L.Dense(cfg.units, activation="tanh", name="init_c")(img))
        hidden = _rnn(cfg, "rnn", True, sequences)(L.Dropout(cfg.dropout, name="caption_dropout")(embed),
                                        initial_state=states)
    elif cfg.type == "pre-inject":
        img = L.Dense(cfg.embed_dim, activation="relu", name="image_dense")(img)
        img = L.Reshape((1, cfg.embed_dim), name="image_step")(img)
        words = L.Dropout(cfg.dropout, name="caption_dropout")(embed)
        hidden = _rnn(cfg, "rnn", True, sequences)(L.Concatenate(axis=1, name="image_then_words")([img, words]))
    else:  # inject: the image repeated beside every word, a second RNN over both
        img = L.Dense(cfg.embed_dim, activation="relu", name="image_dense")(img)
        img = L.RepeatVector(cfg.max_length - 1, name="image_repeat")(img)
        words = _rnn(cfg, "caption_rnn", True)(embed)
        words = L.TimeDistributed(L.Dense(cfg.embed_dim, activation="relu"), name="caption_dense")(words)
        both = L.Concatenate(name="image_and_words")([img, words])
        final = _rnn(cfg, "rnn", False)
        hidden = (L.Bidirectional(final, name="birnn") if cfg.bidirectional else final)(both)
    if cfg.causal and not sequences:
        hidden = LastValidStep(cfg.output_offset, name="last_step")([hidden, caption])
    hidden = L.Dense(cfg.units, activation="relu", name="decoder_dense")(hidden)
    out = L.Dense(cfg.vocab_size, activation="softmax", name="output")(hidden)
    kind = "sequences" if sequences else "next_word"
    return keras.Model([image, caption], out, name=f"{cfg.type.replace('-', '_')}_{kind}")


def _build_attention(cfg: DecoderConfig, sequences: bool):
    keras = import_keras()
    from captioning.training.attention import AttentionDecoder
    from captioning.training.layers import FeatureStandardization, LastValidStep
    grid = keras.Input((cfg.grid_size, cfg.feature_dim), name="image")
    caption = keras.Input((None,), dtype="int32", name="caption")
    probs = AttentionDecoder(cfg.vocab_size, cfg.embed_dim, cfg.units, cfg.attention_dim, cfg.dropout,
                             cfg.doubly_stochastic, name="attention")([FeatureStandardization(name="image_norm")(grid),
                                                                      caption])
    if not sequences:
        probs = LastValidStep(0, name="last_step")([probs, caption])
    return keras.Model([grid, caption], probs, name=f"attention_{'sequences' if sequences else 'next_word'}")
