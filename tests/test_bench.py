"""The benchmark scripts keep working: each answers ``--help`` (all in one fresh process), decode.py
makes a tiny run on the sample set in the default test run, and every other script that can run
without the ImageNet classifier's weights does in the slow set (``pytest -m slow``). Their figures
are for docs/benchmarks.md, not asserted here; what is asserted is that they run and print."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py"))


def _run(*args, cwd=None, timeout=600):
    done = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    return done.stdout


def test_every_script_is_covered():
    assert len(SCRIPTS) >= 10 and "decode.py" in SCRIPTS


_HELP = """
import contextlib, io, runpy, sys
for script in sys.argv[1:]:
    sys.argv = [script, "--help"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit:
            pass
    print(script, "usage:" in out.getvalue())
"""


def test_each_script_answers_help():
    """All in one process (each script imports Keras: once is enough)."""
    out = _run("-c", _HELP, *(BENCH / s for s in SCRIPTS), timeout=300)
    answered = {line.rsplit(" ", 1)[0]: line.endswith("True") for line in out.splitlines() if line.startswith("/")}
    assert answered == {str(BENCH / s): True for s in SCRIPTS}, out[-2000:]


def test_decode_prints_each_recipe_and_the_ratio(learnable):
    out = _run(BENCH / "decode.py", "--run", learnable["run"], "--captions", learnable["data"], "--features",
               learnable["features"], "--images", "24", "--notebook-images", "1")
    for row in ("(b) greedy", "(c) beam 16, model.keras", "(e) the recommended decoding"):
        assert row in out
    assert "× the throughput of beam 16 without re-ranking" in out


def test_attention_maps_measures_a_runs_maps(attention_run, sample_dir, tmp_path):
    run, store = attention_run
    out = _run(BENCH / "attention_maps.py", "--run", run, "--captions", sample_dir, "--features", store.path,
               "--split", "test", "--k", "3", "--out", tmp_path / "maps.json")
    assert "hiding k=3 of 49 cells" in out
    summary = json.loads((tmp_path / "maps.json").read_text())
    assert summary["function"]["count"] > 0 and summary["k"] == 3


@pytest.mark.slow
def test_quality_trains_and_scores_on_a_small_set(learnable, tmp_path):
    out = _run(BENCH / "quality.py", "--captions", learnable["data"], "--features", learnable["features"],
               "--decoders", "merge", "--out", tmp_path / "q", "--beam", "3", "--set", "epochs=1",
               "--set", "units=8", "--set", "embed_dim=8", "--set", "min_count=1", "--set", "self_critical_epochs=0")
    assert "| merge | greedy |" in out and "re-ranking" in out


@pytest.mark.slow
def test_attention_runs_on_a_small_sample(tmp_path):
    out = _run(BENCH / "attention.py", "--images", "30", "--epochs", "1", "--backbone", "efficientnet_b0")
    assert "attention side rate" in out


@pytest.mark.slow
def test_extract_runs_on_generated_scenes():
    out = _run(BENCH / "extract.py", "--generated", "--backbone", "efficientnet_b0", "--limit", "8",
               "--batch-size", "4")
    assert "images/s" in out


@pytest.mark.slow
def test_self_critical_runs_one_variant(learnable, tmp_path):
    out = _run(BENCH / "self_critical.py", "--run", learnable["run"], "--name", "smoke", "--captions",
               learnable["data"], "--features", learnable["features"], cwd=tmp_path)
    assert "| smoke | 1 |" in out


@pytest.mark.slow
def test_fit_runs_three_ways_on_a_few_images(learnable):
    out = _run(BENCH / "fit.py", "--captions", learnable["data"], "--train-images", "20", "--dev-images", "10",
               "--repeats", "1")
    assert "(c)" in out


@pytest.mark.slow
def test_scaling_runs_on_two_logical_devices(learnable, tmp_path):
    out = _run(BENCH / "scaling.py", "--captions", learnable["data"], "--features", learnable["features"],
               "--out", tmp_path / "s")
    assert "efficiency" in out


@pytest.mark.slow
def test_compiles_runs_under_jax(learnable):
    out = _run(BENCH / "compiles.py", "--run", learnable["run"], "--features", learnable["features"],
               "--images", "16")
    assert "greedy" in out


@pytest.mark.slow
def test_backbones_measures_the_named_and_file_encoders(sample_dir, tmp_path):
    out = _run(BENCH / "backbones.py", sample_dir / "Images", "--limit", "4", "--weights-dir", tmp_path, "--no-hub")
    assert "| keras.applications resnet50 (random init) | 224 | (2048,) | (7, 7) × 2048 |" in out


@pytest.mark.slow
def test_proposers_scores_each_width(learnable):
    out = _run(BENCH / "proposers.py", "--run", learnable["run"], "--captions", learnable["data"], "--features",
               learnable["features"], "--widths", "0,2")
    assert "| none (`--candidates model`) |" in out and "| 2 |" in out



@pytest.mark.slow
def test_serve_loads_the_server_at_each_level(learnable):
    out = _run(BENCH / "serve.py", "--run", learnable["run"], "--images", learnable["data"] / "Images", "--photos", "12",
               "--levels", "1,4", "--decoding", "greedy")
    assert "| 1 | 12 |" in out and "| 4 | 12 |" in out and "folder rate" in out

@pytest.mark.slow
def test_scale_runs_every_stage_on_a_tiny_coco_shaped_set(tmp_path):
    """247 images in the Karpathy layout: fit, evaluate and caption in fresh processes, one table row each."""
    out = _run(BENCH / "scale.py", "--sizes", "0.002", "--steps", "2", "--folder", "3", "--out", tmp_path, timeout=900)
    for stage in ("fit: cross-entropy epoch", "fit: self-critical epoch", "fit: matcher", "evaluate --split test",
                  "caption FOLDER"):
        assert f"| {stage}" in out
    data = json.loads((tmp_path / "coco-0.002" / "data" / "dataset_coco.json").read_text())
    assert len(data["images"]) == 247 and {im["split"] for im in data["images"]} == {"train", "restval", "val", "test"}
    assert all(len(im["sentences"]) == 5 for im in data["images"])


# rerank_variants.py and imagenet_posteriors.py need the ImageNet classifier's weights file, which
# tests cannot have: they are covered by --help above.
