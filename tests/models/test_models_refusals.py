"""Refusals of checkpoints and exports (damaged, hostile or wrong files; ONNX, safetensors,
bioimage.io): broken input gets exit code 2 and one line naming the file or option and the fix, no
traceback, and no user file changes (the harness: tests/refusals.py)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from refusals import (
    DROP,
    Case,
    Exploit,
    absent,
    assert_untouched,
    bad_checkpoint,
    cases_of,
    data,
    edited_checkpoint,
    killed,
    nothing_in,
    predict_args,
    predict_case,
    predict_with,
    preprocess,
    refused,
    safetensors_with,
    snapshot,
    train_args,
)
from synthetic import TINY_TRAIN, make_shapes, run_cli

from unetkit.errors import UnetkitError
from unetkit.train import load_checkpoint


def case_checkpoint_is_a_text_file(tmp_path, **_):
    (tmp_path / "model.pt").write_text("hello")
    return Case(predict_with(tmp_path / "model.pt", tmp_path), ("model.pt", "not a readable PyTorch checkpoint"))


def case_checkpoint_of_another_program(tmp_path, **_):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    return Case(predict_with(tmp_path / "other.pt", tmp_path), ("other.pt", "not a unetkit checkpoint"))


def case_checkpoint_missing(tmp_path, **_):
    return Case(predict_with(tmp_path / "missing.pt", tmp_path), ("missing.pt", "not found"))


def case_checkpoint_truncated(tmp_path, rgb_run, **_):
    whole = rgb_run[3].read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    return Case(predict_with(tmp_path / "cut.pt", tmp_path), ("cut.pt", "truncated"))


def case_checkpoint_of_another_model_size(tmp_path, rgb_run, **_):
    state = load_checkpoint(rgb_run[3])
    state["model_args"] = {**state["model_args"], "base_channels": 8}
    torch.save(state, tmp_path / "resized.pt")
    return Case(predict_with(tmp_path / "resized.pt", tmp_path), ("resized.pt", "do not fit", "base_channels"))


def case_checkpoint_with_pickled_payload(tmp_path, **_):
    marker = tmp_path / "code-ran"
    torch.save({"format": "unetkit-checkpoint-v1", "payload": Exploit(marker)}, tmp_path / "evil.pt")

    def not_executed() -> None:
        assert not marker.exists(), "loading the checkpoint ran code"

    return Case(predict_with(tmp_path / "evil.pt", tmp_path), ("evil.pt", "refused"), not_executed)


def case_resume_from_a_missing_checkpoint(tmp_path, **_):
    return Case(["train", "--resume", tmp_path / "gone" / "last.pt"], ("last.pt", "not found"))


def case_checkpoint_with_zero_std(tmp_path, rgb_run, **_):
    _root, images, _masks, checkpoint = rgb_run
    edited = edited_checkpoint(tmp_path, checkpoint, std=[0.0, 0.2, 0.2])
    out = tmp_path / "pred"
    return Case(
        ["predict", "--checkpoint", edited, images, "--out", out], ("edited.pt", "std must be above 0"), nothing_in(out)
    )


def case_checkpoint_with_nan_mean(tmp_path, rgb_run, **_):
    _root, images, _masks, checkpoint = rgb_run
    edited = edited_checkpoint(tmp_path, checkpoint, mean=[float("nan"), 0.5, 0.5])
    out = tmp_path / "pred"
    return Case(["predict", "--checkpoint", edited, images, "--out", out], ("edited.pt", "finite"), nothing_in(out))


def case_zip_bomb_checkpoint(tmp_path, rgb_run, **_):
    _root, images, _masks, _checkpoint = rgb_run
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * (32 * 2**20))  # 32 MiB of zeros in ~32 KiB
    return Case(["predict", "--checkpoint", bomb, images, "--out", tmp_path / "p"], ("bomb.pt", "unpacks to"))


def case_resume_given_the_run_folder(tmp_path, rgb_run, **_):
    folder = rgb_run[3].parent
    return Case(["train", "--resume", folder, "--epochs", "2"], ("is a folder", "last.pt"))


def case_safetensors_with_zero_std(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", preprocess(std=[0.0, 0.2, 0.2]))
    return predict_case(tmp_path, rgb_run, path, "std must be above 0")


def case_safetensors_with_nan_mean(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", preprocess(mean=[float("nan"), 0.5, 0.5]))
    return predict_case(tmp_path, rgb_run, path, "finite")


def case_safetensors_lacking_preprocess(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", header={"preprocess": DROP})
    return predict_case(tmp_path, rgb_run, path, "lacks preprocess", "damaged or was edited")


def case_safetensors_metadata_cut_short(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", header='{"format": "unetkit-weights-v1", "model')
    return predict_case(tmp_path, rgb_run, path, "no unetkit metadata", "export")


def case_safetensors_metadata_with_null_model_args(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", header={"model_args": None})
    return predict_case(tmp_path, rgb_run, path, "model_args", "malformed")


def case_safetensors_mask_values_as_a_list(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", header={"mask_values": [0, 255]})
    return predict_case(tmp_path, rgb_run, path, "mask_values", "malformed")


def case_safetensors_binary_is_a_word(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", header={"binary": "yes"})
    return predict_case(tmp_path, rgb_run, path, "binary", "not true or false")


def case_safetensors_truncated(tmp_path, rgb_run, **_):
    whole = bad_checkpoint(tmp_path, rgb_run, "whole.safetensors").read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(whole[: len(whole) // 2])
    return predict_case(tmp_path, rgb_run, path, "not a readable safetensors file")


def case_safetensors_with_an_extra_tensor(tmp_path, rgb_run, **_):
    import torch

    path = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", lambda state: state["model"].update(extra=torch.ones(2)))
    return predict_case(tmp_path, rgb_run, path, "do not fit", "extra")


def case_safetensors_named_pt_with_zero_std(tmp_path, rgb_run, **_):
    """The content decides the format: a safetensors file named .pt is checked as one, not called pickle."""
    exported = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", preprocess(std=[0.2, 0.0, 0.2]))
    path = tmp_path / "model.pt"
    path.write_bytes(exported.read_bytes())
    return predict_case(tmp_path, rgb_run, path, "std must be above 0")


def case_mask_values_beyond_the_model_outputs(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "edited.pt", lambda s: s["mask_values"].update(values=[0, 128, 255]))
    return predict_case(tmp_path, rgb_run, path, "mask values [0, 128, 255]", "1 output channel")


def case_safetensors_softmax_flag_on_a_one_logit_model(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", lambda state: state.update(binary=False))
    return predict_case(tmp_path, rgb_run, path, "do not fit", "one output per value")


def case_preprocess_of_one_channel_on_an_rgb_model(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "edited.pt", preprocess(in_channels=1, mean=[0.5], std=[0.2]))
    return predict_case(tmp_path, rgb_run, path, "3 input channel(s)", "one mean and std per channel")


def case_uppercase_pt_with_a_negative_scale(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "BEST.PT", preprocess(scale=-0.5))
    return predict_case(tmp_path, rgb_run, path, "preprocessing", "not usable")


def case_object_rule_with_an_unknown_field(tmp_path, rgb_run, **_):
    rule = {"seed": 0.9, "flood": 0.3, "radius": 3}
    path = bad_checkpoint(tmp_path, rgb_run, "edited.pt", lambda state: state.update(object_rule=rule))
    return predict_case(tmp_path, rgb_run, path, "object_rule", "radius")


def case_safetensors_object_rule_seed_above_one(tmp_path, rgb_run, **_):
    rule = {"seed": 1.5, "flood": 0.3, "smooth": 2.0, "min_size": 16, "max_hole": 16}
    path = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", lambda state: state.update(object_rule=rule))
    _root, images, masks, _ = rgb_run
    args = ["evaluate", "--checkpoint", path, "--images", images, "--masks", masks, "--no-progress"]
    return Case(args, ("w.safetensors", "object_rule", "seed and flood between 0 and 1"))


def case_boundary_model_without_an_object_class(tmp_path, rgb_run, **_):
    """What earlier versions wrote for --boundary-class on objects no thicker than their edge: classes
    [0, 2], the edge taken for class 1; predict --instances with it ended in IndexError."""

    def edit(state):
        state["mask_values"] = {"values": [0, 2], "ignore_value": None, "instances": "boundary"}

    path = bad_checkpoint(tmp_path, rgb_run, "old.pt", edit)
    out = tmp_path / "pred"
    args = ["predict", "--checkpoint", path, rgb_run[1], "--out", out, "--instances", "--no-progress"]
    return Case(args, ("old.pt", "instance-mask classes are [0, 2]", "train the run again"), nothing_in(out))


def case_export_of_an_edited_checkpoint(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "edited.pt", lambda s: s["mask_values"].update(values=[0, 1, 255]))
    target = tmp_path / "shared.safetensors"
    return Case(["export", "--checkpoint", path, "--safetensors", target], ("edited.pt", "do not fit"), absent(target))


def case_safetensors_asking_for_6000_channels(tmp_path, rgb_run, **_):
    model = safetensors_with(tmp_path, rgb_run, model_args=lambda args: {**args, "base_channels": 6000})
    assert model.stat().st_size < 4096
    out = tmp_path / "pred"
    args = predict_args(model, rgb_run[1], out)
    return Case(args, ("m.safetensors", "do not fit", "damaged"), nothing_in(out))


def case_safetensors_asking_for_a_depth_of_40(tmp_path, rgb_run, **_):
    model = safetensors_with(tmp_path, rgb_run, model_args=lambda args: {**args, "depth": 40})
    args = ["export", "--checkpoint", model, "--onnx", tmp_path / "x.onnx"]
    return Case(args, ("m.safetensors", "do not fit"), nothing_in(tmp_path / "x.onnx"))


def case_five_megabytes_of_model_name(tmp_path, rgb_run, capsys, **_):
    model = safetensors_with(tmp_path, rgb_run, model_name="u" * 5_000_000)
    return Case(predict_args(model, rgb_run[1], tmp_path / "pred"), ("m.safetensors", "uuuu"))


def case_five_megabytes_of_mask_values(tmp_path, rgb_run, **_):
    model = safetensors_with(tmp_path, rgb_run, mask_values={"values": list(range(2_000_000)), "ignore_value": None})
    return Case(predict_args(model, rgb_run[1], tmp_path / "pred"), ("m.safetensors", "2000000 mask values"))


def case_init_from_a_folder_of_onnx_files(tmp_path, rgb_run, **_):
    images, masks = make_shapes(tmp_path / "data", count=4, rgb=True)
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "m.onnx").write_bytes(b"not read")
    args = train_args(images, masks, tmp_path / "run", "--init-from", exports)
    return Case(args, ("exports: is a folder", "it holds none"), nothing_in(tmp_path / "run"))


def case_config_init_from_relative_to_the_config_file(tmp_path, rgb_run, monkeypatch, **_):
    """init_from = "models/m.pt" in conf/run.toml means conf/models/m.pt (the other paths did; this
    one was read against the current folder, and the missing file named the wrong place)."""
    images, masks = data(tmp_path)
    conf = tmp_path / "conf"
    (conf / "models").mkdir(parents=True)
    config = conf / "run.toml"
    config.write_text(f'images = "{images}"\nmasks = "{masks}"\ninit_from = "models/m.pt"\n')
    monkeypatch.chdir(tmp_path)
    args = ["train", "--config", config, "--out", tmp_path / "run", *TINY_TRAIN]
    return Case(args, (str(conf / "models" / "m.pt"), "not found"), nothing_in(tmp_path / "run"))


def case_a_data_folder_named_like_a_ready_made_model(tmp_path, monkeypatch, **_):
    images, masks = data(tmp_path)
    (tmp_path / "nuclei").mkdir()
    (tmp_path / "nuclei" / "notes.txt").write_text("my nuclei data")
    monkeypatch.chdir(tmp_path)
    args = train_args(images, masks, tmp_path / "run", "--init-from", "nuclei")
    return Case(
        args, ("nuclei: is a folder here", "ready-made model", "nuclei.safetensors"), nothing_in(tmp_path / "run")
    )


CASES = cases_of(globals(), {})


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused(name, tmp_path, rgb_run, monkeypatch, capsys):
    refused(CASES[name], tmp_path, rgb_run, monkeypatch, capsys)


# ---- the same situations done right just work ----


def test_a_torch_checkpoint_named_safetensors_predicts(rgb_run, tmp_path, capsys):
    """The content decides the format both ways (torch.load took the name .safetensors as the format)."""
    renamed = tmp_path / "pt_as.safetensors"
    renamed.write_bytes(rgb_run[3].read_bytes())
    code, _, err = run_cli(capsys, *predict_args(renamed, rgb_run[1], tmp_path / "o"))
    assert code == 0, err


def test_an_export_predicts_under_any_name_and_suffix_case(rgb_run, tmp_path, capsys):
    """M.SAFETENSORS that export wrote (predict refused it), the same file named model.pt (called unsafe
    pickle) and BEST.PT all predict best.pt's masks; none of them is changed."""

    _root, images, _masks, checkpoint = rgb_run
    exported = tmp_path / "M.SAFETENSORS"
    assert run_cli(capsys, "export", "--checkpoint", checkpoint, "--safetensors", exported)[0] == 0
    (tmp_path / "model.pt").write_bytes(exported.read_bytes())
    (tmp_path / "BEST.PT").write_bytes(checkpoint.read_bytes())
    before = snapshot(tmp_path, rgb_run[0])
    predicted = []
    for source in (checkpoint, exported, tmp_path / "model.pt", tmp_path / "BEST.PT"):
        out = tmp_path / f"pred_{source.name}"
        args = ["predict", "--checkpoint", source, images / "img00.png", "--out", out, "--no-progress"]
        code, _out, err = run_cli(capsys, *args, "--backend", "torch", "--amp", "off")
        assert code == 0, err
        predicted.append(np.asarray(Image.open(out / "img00.png")))
    assert all(np.array_equal(mask, predicted[0]) for mask in predicted[1:])
    assert_untouched(before)


def test_bioimageio_export_of_a_run_folder_with_a_dot_in_its_name(rgb_run, tmp_path, capsys):
    """The default name is made of the run folder's, `cells.v2`: bioimage.io names take no dot."""
    import zipfile

    pytest.importorskip("bioimageio.spec", reason="needs pip install 'unetkit[bioimageio]'")
    run = tmp_path / "cells.v2"
    run.mkdir()
    (run / "best.pt").write_bytes(rgb_run[3].read_bytes())
    before = snapshot(run)
    package = tmp_path / "model.zip"
    code, _out, err = run_cli(capsys, "export", "--checkpoint", run / "best.pt", "--bioimageio", package)
    assert code == 0, err
    with zipfile.ZipFile(package) as archive:
        assert "\nname: unetkit unet cells-v2\n" in archive.read("rdf.yaml").decode()
    assert_untouched(before)


def test_a_checkpoint_dict_given_in_python_is_checked_like_a_file(rgb_run):
    from unetkit.inference import InferenceOptions, Predictor
    from unetkit.train import load_checkpoint

    state = load_checkpoint(rgb_run[3])
    state["object_rule"] = {"seed": "high"}
    with pytest.raises(UnetkitError, match="checkpoint: the checkpoint's object_rule"):
        Predictor(state, options=InferenceOptions(backend="torch"))


@pytest.mark.parametrize(("option", "name"), [("--onnx", "m.onnx"), ("--safetensors", "m.safetensors")])
def test_an_export_killed_before_it_landed_is_made_again_without_debris(tmp_path, rgb_run, capsys, option, name):
    target = tmp_path / "exports" / name
    killed(["export", "--checkpoint", rgb_run[3], option, target], name, 1)
    assert not target.exists() and [p.name for p in target.parent.iterdir()]  # only the temporary
    code, _text, err = run_cli(capsys, "export", "--checkpoint", rgb_run[3], option, target)
    assert code == 0, err
    assert [p.name for p in target.parent.iterdir()] == [name]
