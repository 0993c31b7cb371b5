"""`train --init-from MODEL` (issue 24): a new run whose weights start from a trained model's, the
architecture taken from it, other classes and channel counts adapted and said, a model of another
architecture refused in one line."""

import pytest
import torch
from synthetic import TINY_TRAIN, assert_one_line_error, make_shapes, run_cli

from unetkit.models.checkpoint import load_checkpoint
from unetkit.train.init_from import shared_out

# TINY_TRAIN without its architecture: an --init-from run takes the model's.
TRAIN = [option for option in TINY_TRAIN if option not in ("--base-channels", "4", "--depth", "2")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny gray two-class model (base 4, depth 2) and its data."""
    root = tmp_path_factory.mktemp("init")
    images, masks = make_shapes(root / "gray", count=12)
    args = ["train", "--images", images, "--masks", masks, "--out", root / "run", *TINY_TRAIN]
    from unetkit.cli import main

    assert main([str(a) for a in args]) == 0
    return root, root / "run" / "best.pt"


def weights(path):
    return load_checkpoint(path)["model"]


def first_epoch_weights(capsys, out, images, masks, model, *more):
    """Train one epoch at lr 1e-9 from `model`: the checkpoint holds its starting weights (to 1e-8)."""
    code, text, err = run_cli(capsys, "train", "--images", images, "--masks", masks, "--out", out,
                              "--init-from", model, "--lr", "1e-9", "--weight-decay", "0", *TRAIN, *more)  # fmt: skip
    assert code == 0, err
    return weights(out / "last.pt"), text


def test_a_new_run_starts_from_the_model_and_takes_its_architecture(trained, tmp_path, capsys):
    root, model = trained
    started, text = first_epoch_weights(capsys, tmp_path / "again", root / "gray/images", root / "gray/masks", model)
    config = load_checkpoint(tmp_path / "again" / "last.pt")["config"]
    assert (config["base_channels"], config["depth"], config["init_from"]) == (4, 2, str(model))
    assert (config["scale"], config["normalize"]) == (1.0, "dataset")  # the model's, as nothing else was given
    for key, value in weights(model).items():
        if value.is_floating_point() and "running" not in key:  # BatchNorm statistics move in train mode
            torch.testing.assert_close(started[key], value, msg=key)
    assert "init-from:" not in text  # nothing adapted


def test_other_classes_start_the_output_layer_afresh(trained, tmp_path, capsys):
    root, model = trained
    images, masks = make_shapes(tmp_path / "three", count=12, values=(0, 100, 200))
    started, text = first_epoch_weights(capsys, tmp_path / "run", images, masks, model)
    assert "the output layer starts afresh: the model's classes [0, 255] are [0, 100, 200] here" in text
    original = weights(model)
    head = [key for key in original if original[key].shape != started[key].shape]
    assert head and all(key.startswith("outc.") for key in head)
    torch.testing.assert_close(started["inc.0.0.weight"], original["inc.0.0.weight"])


def test_another_channel_count_adapts_the_first_convolution(trained, tmp_path, capsys):
    root, model = trained
    images, masks = make_shapes(tmp_path / "rgb", count=12, rgb=True)
    started, text = first_epoch_weights(capsys, tmp_path / "run", images, masks, model)
    assert "first convolution adapted from 1 to 3 channel(s)" in text
    trained_filters = weights(model)["inc.0.0.weight"]
    torch.testing.assert_close(started["inc.0.0.weight"], shared_out(trained_filters, 3))
    # an image whose three channels are equal meets the filters trained on it as gray
    gray = torch.rand(1, 1, 8, 8)
    response = torch.nn.functional.conv2d(gray.repeat(1, 3, 1, 1), shared_out(trained_filters, 3))
    torch.testing.assert_close(response, torch.nn.functional.conv2d(gray, trained_filters))


def test_another_architecture_or_a_resume_is_refused_in_one_line(trained, tmp_path, capsys):
    root, model = trained
    data = ["--images", root / "gray/images", "--masks", root / "gray/masks", "--init-from", model]
    code, _, err = run_cli(capsys, "train", *data, "--out", tmp_path / "a", *TRAIN, "--base-channels", "8")
    assert_one_line_error(code, err, "best.pt", "--base-channels 4", "drop --base-channels 8")
    code, _, err = run_cli(capsys, "train", *data, "--out", tmp_path / "b", *TRAIN, "--model", "dumbnet")
    assert_one_line_error(code, err, "a unet, not a dumbnet")
    code, _, err = run_cli(capsys, "train", *data, "--out", tmp_path / "c", *TRAIN, "--resume", root / "run/last.pt")
    assert code == 2 and "init" in err.lower() and "Traceback" not in err
    code, _, err = run_cli(capsys, "train", *data[:4], "--init-from", tmp_path / "none.pt", "--out", tmp_path / "d")
    assert_one_line_error(code, err, "none.pt", "not found")


def test_a_dumbnet_starts_a_dumbnet_without_model_given_again(trained, tmp_path, capsys):
    """`--init-from` a DumbNet (or a user's model) was refused as "a dumbnet, not a unet; drop
    --model", a --model never typed (a red-team round): the architecture is the model's."""
    root, _ = trained
    data = ["--images", root / "gray/images", "--masks", root / "gray/masks"]
    code, _, err = run_cli(capsys, "train", *data, "--out", tmp_path / "dn", "--model", "dumbnet", *TRAIN)
    assert code == 0, err
    code, text, err = run_cli(capsys, "train", *data, "--out", tmp_path / "again", "--init-from",
                              tmp_path / "dn" / "best.pt", *TRAIN)  # fmt: skip
    assert code == 0, err
    assert load_checkpoint(tmp_path / "again" / "best.pt")["model_name"] == "dumbnet"
    code, _, err = run_cli(capsys, "train", *data, "--out", tmp_path / "typed", "--init-from",
                           tmp_path / "dn" / "best.pt", "--model", "unet", *TRAIN)  # typed: not ignored  # fmt: skip
    assert_one_line_error(code, err, "a dumbnet, not a unet; drop --model")


def test_the_model_s_own_normalisation_is_kept_on_request(trained, tmp_path, capsys):
    """--normalize model: the model's mean and std, not those of the new data."""
    root, model = trained
    images, masks = make_shapes(tmp_path / "bright", count=12, seed=3)
    data = ["--images", images, "--masks", masks, "--init-from", model, *TRAIN]
    code, _, err = run_cli(capsys, "train", *data, "--out", tmp_path / "kept", "--normalize", "model")
    assert code == 0, err
    kept = load_checkpoint(tmp_path / "kept" / "best.pt")["preprocess"]
    original = load_checkpoint(model)["preprocess"]
    assert (kept["mean"], kept["std"]) == (original["mean"], original["std"])
    code, _, err = run_cli(capsys, "train", *data, "--out", tmp_path / "fresh")
    assert code == 0, err
    assert load_checkpoint(tmp_path / "fresh" / "best.pt")["preprocess"]["mean"] != original["mean"]
    code, _, err = run_cli(capsys, "train", "--images", images, "--masks", masks, "--out", tmp_path / "x",
                           "--normalize", "model", *TRAIN)  # fmt: skip
    assert_one_line_error(code, err, "--normalize model", "--init-from")


def test_masks_of_some_of_the_models_classes_keep_them_all_and_its_ignore_value(tmp_path, capsys):
    """The correct-and-retrain loop's corrections held street classes 0-8 of 0-10: the retrained
    model lost the other two, its output layer started afresh, and void (the model's ignore value)
    became a class (a red-team round). Both are kept from the model now, and said."""
    images, masks = make_shapes(tmp_path / "four", count=12, values=(0, 1, 2, 3))
    from PIL import Image

    for path in masks.iterdir():  # a void band, as CamVid's 11
        mask = Image.open(path)
        mask.paste(9, (0, 0, mask.width, 3))
        mask.save(path)
    code, _, err = run_cli(capsys, "train", "--images", images, "--masks", masks, "--out", tmp_path / "model",
                           "--ignore-value", "9", *TINY_TRAIN)  # fmt: skip
    assert code == 0, err
    model = tmp_path / "model" / "best.pt"
    fewer, fewer_masks = make_shapes(tmp_path / "two", count=12, values=(0, 2))
    for path in fewer_masks.iterdir():
        mask = Image.open(path)
        mask.paste(9, (0, 0, mask.width, 3))
        mask.save(path)
    started, text = first_epoch_weights(capsys, tmp_path / "again", fewer, fewer_masks, model)
    checkpoint = load_checkpoint(tmp_path / "again" / "last.pt")
    assert checkpoint["mask_values"]["values"] == [0, 1, 2, 3] and checkpoint["mask_values"]["ignore_value"] == 9
    assert "the masks hold the classes [0, 2]; the model's other classes [1, 3] are kept" in text
    assert "value 9 marks unlabelled pixels, ignored as the model ignored them" in text
    assert "starts afresh" not in text and "cannot learn them" not in text
    for key, value in weights(model).items():  # the output layer too
        if key.startswith("outc.") and value.is_floating_point():
            torch.testing.assert_close(started[key], value, msg=key)
