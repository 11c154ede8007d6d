"""Stage 2: decoders trained on cached features (``fit``), written to a run folder."""

from captioning.training.fit import FitOptions, FitPlan, FitResult, export, fit, plan, train, tune

__all__ = ["FitOptions", "FitPlan", "FitResult", "fit", "plan", "train", "tune", "export"]
