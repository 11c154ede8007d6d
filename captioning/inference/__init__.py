"""Inference: greedy, beam search, sampling and re-ranking over a decoder's stateful one-step model,
chosen by name through ``decoding`` (``decoding.get("recommended")``).

Inference reads the run format (``captioning.run``) and the decoders; it never imports training.
"""

from captioning.lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "Captioner": "captioning.inference.captioner",
    "EnsembleSteps": "captioning.inference.ensemble",
    "Decoding": "captioning.inference.decoding",
    **{n: "captioning.inference.search" for n in ("BeamSearch", "Caption", "Greedy", "RandomSampler", "Sampler")},
    **{n: "captioning.decoders" for n in ("PrefixSteps", "StepModel", "step_model")},
})
