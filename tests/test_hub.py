"""keras-hub presets as encoders (captioning/features/hub.py): tiny random-init backbones built from
config, a CNN (ResNet) and a ViT-style one (CLIP, whose preset holds a text tower too), saved as
local preset folders with their image converters, then extract → fit → caption through the CLI in
fresh processes (extract, caption). No network: nothing is downloaded.
"""

import json
import sys

import numpy as np
import pytest

from captioning.backend import import_keras
from captioning.cli import main
from captioning.features import FeatureStore
from hostile import cli, cli_process

keras = import_keras()
keras_hub = pytest.importorskip("keras_hub", reason="the hub extra (in dev): pip install -e '.[dev]'")


def _resnet(folder):
    keras.utils.set_random_seed(3)
    keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        image_shape=(32, 32, 3)).save_to_preset(folder)
    keras_hub.layers.ResNetImageConverter(image_size=(32, 32), scale=1 / 255).save_to_preset(folder)
    return folder


def _clip(folder):
    keras.utils.set_random_seed(4)
    m = keras_hub.models
    vision = m.CLIPVisionEncoder(patch_size=8, hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32,
                                 image_shape=(32, 32, 3))
    text = m.CLIPTextEncoder(vocabulary_size=50, embedding_dim=16, hidden_dim=16, num_layers=1, num_heads=2,
                             intermediate_dim=32, max_sequence_length=8)
    m.CLIPBackbone(vision, text, projection_dim=8).save_to_preset(folder)
    keras_hub.layers.CLIPImageConverter(image_size=(32, 32), scale=1 / 127.5, offset=-1).save_to_preset(folder)
    return folder


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    return {"resnet": _resnet(root / "resnet"), "clip": _clip(root / "clip"), "root": root}


def test_a_cnn_preset_extracts_fits_and_captions_a_raw_photo_in_fresh_processes(presets, sample_dir, tmp_path,
                                                                                 monkeypatch):
    store, run = tmp_path / "f.h5", tmp_path / "run"
    done = cli_process("extract-features", sample_dir / "Images", "--backbone", f"hub:{presets['resnet']}",
                       "--out", store, "--captions", sample_dir)
    assert done.returncode == 0, done.stderr
    attrs = FeatureStore.open(store).attrs
    assert attrs["backbone"] == "keras_hub" and attrs["weights_path"] == str(presets["resnet"].resolve())
    assert int(attrs["input_size"]) == 32 and list(attrs["feature_shape"]) == [16]
    assert main(["fit", "--captions", str(sample_dir), "--features", str(store), "--out", str(run), "--epochs", "1",
                 "--batch-size", "8", "--units", "8", "--embed-dim", "8", "--self-critical-epochs", "0",
                 "--matcher-epochs", "0"]) == 0
    image = FeatureStore.open(store).ids[0]
    monkeypatch.chdir(tmp_path)
    done = cli_process("caption", sample_dir / "Images" / image, "--run", run, "--json", "--greedy")
    assert done.returncode == 0, done.stderr
    assert isinstance(json.loads(done.stdout)["caption"], str)
    from captioning.inference import Captioner
    again = Captioner.load(run).image_features([sample_dir / "Images" / image])
    np.testing.assert_allclose(again[0], FeatureStore.open(store)[image], rtol=1e-4, atol=1e-4)


def test_a_vit_style_preset_gives_its_class_token_or_the_patch_grid(presets, sample_dir, tmp_path, capsys):
    common = ["extract-features", sample_dir / "Images", "--backbone", f"hub:{presets['clip']}", "--limit", "3"]
    code, _, err = cli(capsys, *common, "--out", tmp_path / "v.h5")
    assert code == 0, err
    assert list(FeatureStore.open(tmp_path / "v.h5").attrs["feature_shape"]) == [16]
    code, _, err = cli(capsys, *common, "--spatial", "--out", tmp_path / "g.h5")
    assert code == 0, err
    grid = FeatureStore.open(tmp_path / "g.h5")
    assert list(grid.attrs["grid"]) == [4, 4] and list(grid.attrs["feature_shape"]) == [16, 16]
    # the vector is the class token, not one of the 16 patch tokens of the grid
    vector = FeatureStore.open(tmp_path / "v.h5")
    first = vector.ids[0]
    assert not any(np.allclose(vector[first], cell, atol=1e-5) for cell in grid[first])


def test_a_changed_preset_folder_is_refused_when_captioning(presets, sample_dir, tmp_path, capsys):
    import shutil
    folder = shutil.copytree(presets["resnet"], tmp_path / "preset")
    store, run = tmp_path / "f.h5", tmp_path / "run"
    assert cli(capsys, "extract-features", sample_dir / "Images", "--backbone", f"hub:{folder}", "--out", store,
               "--captions", sample_dir)[0] == 0
    assert cli(capsys, "fit", "--captions", sample_dir, "--features", store, "--out", run, "--epochs", "1",
               "--batch-size", "8", "--units", "8", "--embed-dim", "8", "--self-critical-epochs", "0",
               "--matcher-epochs", "0")[0] == 0
    _resnet(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "model.weights.h5", folder / "model.weights.h5")  # other weights, same shapes
    image = sample_dir / "Images" / FeatureStore.open(store).ids[0]
    code, _, err = cli(capsys, "caption", image, "--run", run, "--greedy")
    assert code == 1 and "content differs" in err and "preset" in err


def test_a_folder_that_is_no_preset_and_a_missing_extra_are_explained(sample_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "empty").mkdir()
    common = ["extract-features", sample_dir / "Images", "--limit", "2", "--out", tmp_path / "f.h5"]
    code, _, err = cli(capsys, *common, "--backbone", f"hub:{tmp_path / 'empty'}")
    assert code == 1 and "cannot load it" in err and "save_to_preset" in err
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # as if the extra were not installed
    code, _, err = cli(capsys, *common, "--backbone", "hub:resnet_50_imagenet")
    assert code == 2 and 'pip install "captioning[hub]"' in err
    assert not (tmp_path / "f.h5").exists()
