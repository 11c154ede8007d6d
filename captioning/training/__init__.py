"""Stage 2: decoders trained on cached features (``fit``), written to a run folder."""

from captioning.lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    **{n: "captioning.training.fitting" for n in ("FitPlan", "FitResult", "fit", "plan", "train", "tune", "export")},
    "FitOptions": "captioning.training.options",
})
