"""The run folder, shared by training (which writes it) and inference (which reads it).

A run folder holds everything needed to caption a raw photo months later: ``model.keras`` (the
next-word model, loaded in safe mode), ``vocab.json`` (tokens and cleaning options) and
``config.json`` (a ``FeatureSpec`` of the features it was trained on, the ``DecoderConfig``, the
training settings and results), plus ``history.csv``, ``training_curves.png`` and ``checkpoints/``.
An exported bundle (``captioning.export``) is a run folder without checkpoints that also holds its
image encoder as ``encoder.keras``, so it needs neither the original weights file nor its path.
When ``model.keras`` is a self-critical epoch's, ``cross_entropy.keras`` is the next-word model before
that tuning: re-ranking pools the captions beam search finds with each (docs/results.md).
Every file is written under a temporary name and renamed. Importing this module imports the
decoders, which registers every custom layer, so loading never depends on what was imported before.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

from captioning import atomic, decoders
from captioning.backend import import_keras
from captioning.data import Vocabulary
from captioning.decoders import DecoderConfig
from captioning.errors import DAMAGED_RUN_FILE, CaptioningError
from captioning.features.spec import FeatureSpec

CONFIG_FORMAT = "captioning-run"
CROSS_ENTROPY_FILE = "cross_entropy.keras"


@dataclasses.dataclass
class Run:
    feature_spec: FeatureSpec
    decoder: DecoderConfig
    vocab: Vocabulary
    training: dict = dataclasses.field(default_factory=dict)  # the FitOptions it was trained with
    data: dict = dataclasses.field(default_factory=dict)  # where the captions came from, split sizes
    results: dict = dataclasses.field(default_factory=dict)  # epochs run, losses
    feature_store: str | None = None  # the store it was trained on (absolute path)
    files: dict = dataclasses.field(default_factory=dict)  # name → sha256 of the files fit wrote last
    export: dict = dataclasses.field(default_factory=dict)  # an exported bundle: its encoder file, where from

    AUXILIARY = ("cross_entropy.keras", "neighbours.h5", "matcher.keras")  # read by re-ranking

    def record_files(self, run_dir) -> None:
        """Remember the content of the model and re-ranking files just written, so a file copied in
        from another run (same names, other words or features) is refused when read, not trusted."""
        from captioning.features.backbones import file_sha256
        names = ("model.keras", *self.AUXILIARY)
        self.files = {n: file_sha256(Path(run_dir) / n) for n in names if (Path(run_dir) / n).is_file()}

    def check_file(self, run_dir, name: str, instead: str) -> Path:
        """``run_dir/name``, refused when config.json recorded other content for it (runs before 0.9
        record none: their files are checked by shape alone where they are read)."""
        from captioning.features.backbones import file_sha256
        path = Path(run_dir) / name
        if name in self.files and file_sha256(path) != self.files[name]:
            raise CaptioningError(f"{path} is not the file `captioning fit` wrote for this run: its content differs "
                                  "from the sha256 that config.json records (copied in from another run, or "
                                  f"changed since). Copy the run folder again whole, or {instead}")
        return path

    def save(self, run_dir) -> Path:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.vocab.save(run_dir / "vocab.json")
        keras = import_keras()
        config = {"format": CONFIG_FORMAT, "version": 1, "decoder": self.decoder.to_dict(),
                  "features": self.feature_spec.to_dict(), "feature_store": self.feature_store,
                  "cleaning": self.vocab.cleaning.to_dict(), "data": self.data, "training": self.training,
                  "results": self.results, "files": self.files, "keras_version": keras.__version__}
        if self.export:
            config["export"] = self.export
        return atomic.write_text(run_dir / "config.json", json.dumps(config, indent=2))

    @classmethod
    def load(cls, run_dir) -> "Run":
        run_dir = Path(run_dir)
        config = load_config(run_dir)
        path = run_dir / "config.json"
        try:
            decoder = DecoderConfig.from_dict(config["decoder"])
            features = FeatureSpec.from_dict(config["features"])
            training, data, results = (dict(config.get(k) or {}) for k in ("training", "data", "results"))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CaptioningError(f"{path}: malformed run config ({type(e).__name__}: {e}); this file is "
                                  "written by `captioning fit` and should not be edited by hand.") from e
        except CaptioningError as e:
            raise CaptioningError(f"{path}: {e}") from e
        vocab = Vocabulary.load(run_dir / "vocab.json")
        if len(vocab) != decoder.vocab_size:
            raise CaptioningError(f"{run_dir / 'vocab.json'} has {len(vocab)} tokens but the model expects "
                                  f"{decoder.vocab_size}: the files come from different runs.")
        files = config.get("files") if isinstance(config.get("files"), dict) else {}
        export = config.get("export") if isinstance(config.get("export"), dict) else {}
        return cls(features, decoder, vocab, training, data, results, config.get("feature_store"), files, export)


def load_config(run_dir) -> dict:
    path = Path(run_dir) / "config.json"
    if Path(run_dir).is_file():
        raise CaptioningError(f"{run_dir} is a file, not a run folder: give the folder `captioning fit --out "
                              "RUN_DIR` wrote (it holds model.keras, vocab.json and config.json).")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CaptioningError(f"{run_dir}: not a run folder (no config.json). Train one with "
                              "`captioning fit ... --out RUN_DIR`.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CaptioningError(f"{path}: unreadable run config ({e}); {DAMAGED_RUN_FILE}.") from e
    if not isinstance(config, dict) or config.get("format") != CONFIG_FORMAT:
        raise CaptioningError(f"{path}: not a captioning run config; {DAMAGED_RUN_FILE}.")
    return config


def load_model(path, compile: bool = False):
    """A saved decoder (``model.keras`` or a checkpoint), in safe mode, with a clear error if unreadable."""
    keras = import_keras()
    decoders.register_layers()
    path = Path(path)
    if not path.is_file():
        raise CaptioningError(f"{path}: no such model file")
    advice = ("this run's checkpoints are damaged (kills never do that: each is written whole, then renamed); "
              "start the run again in a new folder" if path.parent.name == "checkpoints" else
              DAMAGED_RUN_FILE)
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" of a file that is there
        raise CaptioningError(f"{path} is not a .keras model file (a .keras file is a zip archive): {advice}.")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=compile)
    except Exception as e:  # noqa: BLE001 — Keras raises many types for a damaged file; explained here
        raise CaptioningError(f"{path}: cannot load this model ({type(e).__name__}: {str(e)[:300]}). Files with "
                              f"Lambda layers or unknown classes are refused in safe mode; otherwise {advice}.") from e


def save_model(model, path) -> Path:
    """``model.save`` under a temporary name, then renamed: a kill never leaves a truncated file."""
    with atomic.replacing(path) as tmp:
        model.save(tmp)
    return Path(path)


__all__ = ["Run", "FeatureSpec", "DecoderConfig", "CROSS_ENTROPY_FILE", "load_config", "load_model", "save_model"]
