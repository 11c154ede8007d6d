"""Reduced-precision steps (captioning/decoders/precision.py): re-ranking's second search computes in
bfloat16 or float16 where that is faster, and says which; everything else stays float32."""

import json

import numpy as np
import pytest

from captioning import decoders, hardware
from captioning.backend import import_keras
from captioning.decoders import DecoderConfig
from captioning.decoders.precision import recast
from captioning.inference.search import BeamSearch

keras = import_keras()


def _cfg(kind, **kw):
    sizes = dict(vocab_size=40, feature_dim=5, max_length=7, embed_dim=8 if kind == "transformer" else 6, units=8,
                 grid_size=4 if decoders.get(kind).needs_spatial else 0, heads=2)
    return DecoderConfig(kind, **{**sizes, **kw})


@pytest.mark.parametrize("kind,tied", [(k, False) for k in decoders.names()] + [("init-inject", True)])
def test_a_bfloat16_step_model_follows_the_float32_one_and_returns_float32(kind, tied):
    keras.utils.set_random_seed(3)
    cfg = _cfg(kind, tie_embeddings=tied)
    model = decoders.build(cfg)
    exact, fast = decoders.step_model(model, cfg), decoders.step_model(model, cfg, "mixed_bfloat16")
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(6, 4, 5) if cfg.grid_size else (6, 5)).astype("float32")
    tokens = np.full(6, 2, np.int32)
    a, b = exact.start(feats), fast.start(feats)
    for _ in range(3):
        va, ia, a = exact.step_topk(tokens, a, 5)
        vb, ib, b = fast.step_topk(tokens, b, 5)
        assert vb.dtype == np.float32 and ib.shape == ia.shape
        # the same words' log-probabilities, to bfloat16's 8 bits (about 0.4 % of each number)
        assert np.allclose(np.sort(va, axis=1), np.sort(vb, axis=1), atol=0.05)
        tokens = ia[:, 0].astype(np.int32)  # both follow the float32 model's choice
    hyps = BeamSearch(3)(fast, feats, 2, 3, cfg.max_length)
    assert len(hyps.tokens) == 6 and all(len(t) >= 1 for t in hyps.tokens)


def test_recast_keeps_the_weights_and_only_the_arithmetic_changes():
    cfg = _cfg("init-inject", tie_embeddings=True)
    model = decoders.build(cfg)
    copy = recast(model, "mixed_bfloat16")
    assert all(np.array_equal(x, y) for x, y in zip(model.get_weights(), copy.get_weights()))
    assert {w.dtype for w in copy.weights} == {"float32"}
    policies = {layer.name: layer.dtype_policy.name for layer in copy.layers if not isinstance(layer, keras.layers.InputLayer)}
    assert policies["rnn"] == "mixed_bfloat16" and policies["output"] == "float32"  # the softmax keeps its digits
    assert model.get_layer("rnn").dtype_policy.name == "float32"  # the original is untouched


@pytest.mark.parametrize("gpu,flags,backend,policy", [
    (True, set(), "tensorflow", "mixed_float16"), (True, set(), "jax", "mixed_float16"),
    (False, {"avx512_bf16"}, "tensorflow", "mixed_bfloat16"), (False, {"amx_bf16"}, "tensorflow", "mixed_bfloat16"),
    (False, {"avx512_bf16"}, "jax", None),  # XLA's CPU code gains nothing from bfloat16
    (False, {"avx2", "avx512f"}, "tensorflow", None),  # emulated bfloat16 would be slower
])
def test_reduced_precision_is_chosen_only_where_it_is_faster(monkeypatch, gpu, flags, backend, policy):
    monkeypatch.setattr(hardware, "gpu_visible", lambda: gpu)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    assert hardware.reduced_precision() == policy


def test_evaluate_records_the_precision_of_the_second_search_and_float32_is_one_option_away(base, tmp_path, monkeypatch):
    """The recommended decoding on a run with cross_entropy.keras: eval.json names the precision the
    proposer ran in; --proposer-precision float32 keeps it exact; without the second search the
    option is refused, as every option without effect is."""
    from captioning.cli import main
    monkeypatch.setattr(hardware, "reduced_precision", lambda: "mixed_bfloat16")  # as on a CPU with AVX512-BF16
    settings = {}
    for name, extra in (("auto", []), ("float32", ["--proposer-precision", "float32"])):
        out = tmp_path / name
        assert main(["evaluate", "--run", str(base["run"]), "--captions", str(base["data"]), "--features",
                     str(base["store"]), "--split", "dev", "--out", str(out), *extra]) == 0
        settings[name] = json.loads((out / "eval.json").read_text())["settings"]
    assert settings["auto"]["candidates"] == "both" and settings["auto"]["proposer_precision"] == "mixed_bfloat16"
    assert settings["float32"]["proposer_precision"] == "float32"
    code = main(["evaluate", "--run", str(base["run"]), "--captions", str(base["data"]), "--features", str(base["store"]),
                 "--split", "dev", "--out", str(tmp_path / "x"), "--candidates", "model", "--proposer-precision", "float32"])
    assert code == 2
