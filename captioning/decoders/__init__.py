"""Decoders: one module each, on a small base class, and a registry that is the only list of them.

``decoders.get("merge")`` returns the ``Decoder``; ``decoders.names()`` lists them in the order the
CLI shows. Importing it loads no Keras: the custom layers are registered by ``register_layers``, which
``import captioning`` arranges to run as soon as Keras is imported (``captioning.backend``), so a saved
``model.keras`` loads with ``keras.saving.load_model(path, safe_mode=True)`` after a plain
``import captioning``. To add a decoder: one module with a ``Decoder`` subclass, one ``register``
line below, its test.
"""

from __future__ import annotations

import importlib

from captioning.decoders.attention import Attention
from captioning.decoders.base import Decoder, DecoderConfig, caption_loss
from captioning.decoders.init_inject import InitInject
from captioning.decoders.inject import Inject
from captioning.decoders.merge import Merge
from captioning.decoders.pre_inject import PreInject
from captioning.decoders.steps import PrefixSteps, StepModel
from captioning.decoders.transformer import Transformer
from captioning.errors import UsageError

_REGISTRY: dict[str, Decoder] = {}


def register(decoder: type[Decoder]) -> type[Decoder]:
    _REGISTRY[decoder.name] = decoder()
    return decoder


for _cls in (Merge, Inject, InitInject, PreInject, Attention, Transformer):
    register(_cls)


def register_layers() -> None:
    """Register every custom Keras layer of the decoders (imports Keras)."""
    for module in ("layers", "lstm", "soft_attention", "transformer_blocks"):
        importlib.import_module(f"captioning.decoders.{module}")


def names() -> tuple:
    return tuple(_REGISTRY)


def get(name: str) -> Decoder:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown decoder {name!r}; choose one of {', '.join(_REGISTRY)}") from None


def build(cfg: DecoderConfig, sequences: bool = False):
    """The Keras model of ``cfg``: next-word (saved, decoded) or teacher-forced sequences (trained)."""
    register_layers()
    return get(cfg.type).build(cfg, sequences)


def step_model(model, cfg: DecoderConfig, policy: str | None = None) -> StepModel:
    """The one-token inference view of a trained next-word model; with a Keras dtype ``policy``
    ("mixed_bfloat16", "mixed_float16"), of a copy of it that computes in that precision
    (``precision.recast``), its log-probabilities returned as float32."""
    if policy is None:
        return get(cfg.type).step_model(model, cfg)
    from captioning.decoders.precision import Float32Steps, recast
    return Float32Steps(get(cfg.type).step_model(recast(model, policy), cfg))


__all__ = ["Decoder", "DecoderConfig", "StepModel", "PrefixSteps", "caption_loss", "register", "register_layers",
           "names", "get",
           "build", "step_model"]
