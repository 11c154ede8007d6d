"""``export(run, out, format)``: the one entry point the CLI and notebooks call, by format name."""

from __future__ import annotations

from captioning.errors import UsageError

FORMATS = ("bundle", "saved_model", "tflite")


def export(run_dir, out, format: str = "bundle", weights=None, allow_partial: bool = False,
           precision: str | None = None):
    """Export ``run_dir`` to ``out`` as ``format`` (one of ``FORMATS``); returns an ``Export``.
    ``precision``: tflite only (float32 | float16 | int8; default float16)."""
    if format not in FORMATS:
        raise UsageError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if precision and format != "tflite":
        raise UsageError(f"--precision is for --format tflite; a {format} keeps the run's float32 weights")
    if format == "tflite":
        from captioning.export.tflite import export_tflite
        return export_tflite(run_dir, out, weights=weights, allow_partial=allow_partial,
                             precision=precision or "float16")
    if format == "saved_model":
        from captioning.export.saved_model import export_saved_model
        return export_saved_model(run_dir, out, weights=weights, allow_partial=allow_partial)
    from captioning.export.bundle import export_bundle
    return export_bundle(run_dir, out, weights=weights, allow_partial=allow_partial)
