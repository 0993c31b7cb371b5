"""Encoder models (models/encoder_unet.py, train/encoder_weights.py), offline: weights files the
tests make themselves (a timm model's state dict), never a download. They need timm, from the
`encoders` extra; CI runs them in an environment of their own (.ci/encoders), where timm's
torchvision matches its torch."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from unetkit.errors import UnetkitError
from unetkit.models.encoder_unet import import_timm

try:
    timm = import_timm()
except UnetkitError as err:
    pytest.skip(f"encoder tests need timm: {err}", allow_module_level=True)

from synthetic import assert_one_line_error, make_shapes, run_cli  # noqa: E402

from unetkit.train import TrainConfig, Trainer, load_checkpoint, plan_run  # noqa: E402
from unetkit.train import encoder_weights as weights_module  # noqa: E402

ENCODER = "resnet18"
TRAIN = ("--epochs", "1", "--patch-size", "64", "--patches-per-image", "1", "--batch-size", "2", "--no-progress",
         "--amp", "off", "--no-report")  # fmt: skip


@pytest.fixture(scope="module")
def rgb_data(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("enc"), count=8, size=(72, 88), rgb=True)


def timm_weights(folder, name: str = ENCODER, kind: str = "pt", channels: int = 3):
    """A timm classifier's state dict, as a user would save it (its head included)."""
    torch.manual_seed(7)
    state = timm.create_model(name, pretrained=False, in_chans=channels).state_dict()
    path = folder / f"{name}.{kind}"
    if kind == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path, state


def config(data, out, **options) -> TrainConfig:
    images, masks = data
    settings = dict(images=str(images), masks=str(masks), out=str(out), encoder=ENCODER, epochs=1, batch_size=2,
                    patch_size=64, amp="off", channels_last="off", progress=False, report=False)  # fmt: skip
    return TrainConfig(**{**settings, **options})


@pytest.mark.parametrize("kind", ["pt", "safetensors"])
def test_a_weights_file_is_exactly_what_the_encoder_starts_from(rgb_data, tmp_path, kind):
    path, state = timm_weights(tmp_path, kind=kind)
    trainer = Trainer(plan_run(config(rgb_data, tmp_path / "run", encoder_weights=str(path)), log=lambda _: None))
    encoder = trainer.built.model.encoder.state_dict()
    assert all(torch.equal(encoder[key], state[key]) for key in encoder)
    assert trainer.run.data.preprocess.mean == pytest.approx([0.485, 0.456, 0.406])  # as ImageNet's encoders
    groups = trainer.opt.optimizer.param_groups  # the recipe's lower rate for a pretrained encoder
    assert trainer.cfg.encoder_lr == 0.1
    assert [g["initial_lr"] for g in groups] == pytest.approx([trainer.cfg.lr, trainer.cfg.lr * 0.1])
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in trainer.built.model.encoder.parameters()}


def test_the_encoder_lr_is_the_recipes_unless_given_and_zero_keeps_the_weights(rgb_data, tmp_path):
    path, state = timm_weights(tmp_path)
    scratch = Trainer(plan_run(config(rgb_data, tmp_path / "scratch"), log=lambda _: None))
    assert scratch.cfg.encoder_lr == 1.0 and len(scratch.opt.optimizer.param_groups) == 1
    cfg = config(rgb_data, tmp_path / "kept", encoder_weights=str(path), encoder_lr=0.0)
    trainer = Trainer(plan_run(cfg, log=lambda _: None))
    trainer.fit()
    encoder = trainer.built.model.encoder.state_dict()
    weights = [key for key in encoder if key.endswith("weight")]
    assert all(torch.equal(encoder[key], state[key]) for key in weights)  # BatchNorm's statistics still move


def test_an_encoder_unet_run_hands_its_encoder_to_the_next(rgb_data, tmp_path, capsys):
    """--encoder-weights run/best.pt: the encoder a run trained (on other data) starts the next run."""
    images, masks = rgb_data
    first = tmp_path / "first"
    code, _out, err = run_cli(capsys, "train", "--images", images, "--masks", masks, "--out", first,
                              "--encoder", ENCODER, *TRAIN)  # fmt: skip
    assert code == 0, err
    trained = {k.removeprefix("encoder."): v for k, v in load_checkpoint(first / "best.pt")["model"].items()
               if k.startswith("encoder.")}  # fmt: skip
    gray = make_shapes(tmp_path / "gray", count=6, size=(64, 64))  # other data: one channel, the stem adapted
    trainer = Trainer(plan_run(config(gray, tmp_path / "next", encoder_weights=str(first / "best.pt")), log=print))
    encoder = trainer.built.model.encoder.state_dict()
    assert all(torch.equal(encoder[key], trained[key]) for key in encoder if key != "conv1.weight")
    torch.testing.assert_close(encoder["conv1.weight"], trained["conv1.weight"].sum(dim=1, keepdim=True))
    assert trainer.cfg.encoder_lr == 0.1
    timm_mean, _ = weights_module.encoder_normalisation(ENCODER, 1)  # the run's encoder saw standardised data
    assert trainer.run.data.preprocess.mean != pytest.approx(timm_mean)


def test_gray_images_adapt_the_first_convolution_as_timm_does(tmp_path):
    data = make_shapes(tmp_path / "gray", count=6, size=(64, 64))
    path, state = timm_weights(tmp_path)
    trainer = Trainer(plan_run(config(data, tmp_path / "run", encoder_weights=str(path)), log=lambda _: None))
    conv = trainer.built.model.encoder.state_dict()["conv1.weight"]
    torch.testing.assert_close(conv, state["conv1.weight"].sum(dim=1, keepdim=True))


def test_a_wrong_weights_file_is_one_line(rgb_data, tmp_path, capsys):
    larger, _ = timm_weights(tmp_path, "resnet34")  # holds every resnet18 key, and more
    other, _ = timm_weights(tmp_path, "efficientnet_b0")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not weights")
    images, masks = rgb_data
    for path, needle in ((larger, "does not have"), (other, "missing"), (junk, "not a weights file"),
                         (tmp_path / "none.pt", "no such file")):  # fmt: skip
        code, _out, err = run_cli(capsys, "train", "--images", images, "--masks", masks, "--out", tmp_path / "r",
                                  "--encoder", ENCODER, "--encoder-weights", path, *TRAIN)  # fmt: skip
        assert_one_line_error(code, err, needle)
        assert not (tmp_path / "r").exists()


def test_imagenet_offline_is_one_line_within_seconds_and_never_downloads(rgb_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(weights_module, "hub_reachable", lambda endpoint: False)  # as offline, wherever it runs
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    images, masks = rgb_data
    started = time.perf_counter()
    code, _out, err = run_cli(capsys, "train", "--images", images, "--masks", masks, "--out", tmp_path / "r",
                              "--encoder", ENCODER, "--encoder-weights", "imagenet", *TRAIN)  # fmt: skip
    assert_one_line_error(code, err, "offline", "--encoder-weights none")
    assert time.perf_counter() - started < 30


def test_train_predict_resume_export_and_a_fresh_offline_process(rgb_data, tmp_path, capsys):
    """The issue's case: --encoder resnet34 --encoder-weights W.safetensors, through every command."""
    images, masks = rgb_data
    path, state = timm_weights(tmp_path, name="resnet34", kind="safetensors")
    run = tmp_path / "run"
    code, _out, err = run_cli(capsys, "train", "--images", images, "--masks", masks, "--out", run, "--encoder",
                              "resnet34", "--encoder-weights", path, "--encoder-lr", "0", *TRAIN)  # fmt: skip
    assert code == 0, err
    saved = load_checkpoint(run / "best.pt")
    assert saved["model_name"] == "encoder-unet"
    trained_from = [key for key in state if key.endswith("conv1.weight")]  # kept by --encoder-lr 0: the file's own
    assert trained_from and all(torch.equal(saved["model"][f"encoder.{key}"], state[key]) for key in trained_from)
    code, _out, err = run_cli(capsys, "train", "--resume", run / "last.pt", "--epochs", "2", "--no-progress")
    assert code == 0, err
    assert load_checkpoint(run / "last.pt")["epoch"] == 2
    code, _out, err = run_cli(capsys, "predict", "--checkpoint", run / "best.pt", "--out", tmp_path / "masks",
                              "--tiling", "on", "--tile", "64", "--overlap", "16", images)  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli(capsys, "export", "--checkpoint", run / "best.pt", "--onnx", tmp_path / "m.onnx")
    assert code == 0, err
    code, out, err = run_cli(capsys, "evaluate", "--checkpoint", run / "best.pt", "--images", images, "--masks", masks)
    assert code == 0 and "mean Dice" in out, err
    import tifffile

    big = tmp_path / "big.tif"  # a TIFF read out of core, band by band, with test-time augmentation
    tifffile.imwrite(big, np.random.default_rng(0).integers(0, 255, (300, 260, 3), np.uint8), tile=(64, 64))
    code, _out, err = run_cli(capsys, "predict", "--checkpoint", run / "best.pt", "--out", tmp_path / "big-out",
                              "--out-of-core", "on", "--tta", "--tile", "128", "--overlap", "32", big)  # fmt: skip
    assert code == 0, err
    assert tifffile.imread(next((tmp_path / "big-out").glob("big*.tif"))).shape == (300, 260)
    # a fresh process with the hub switched off loads and predicts: nothing is fetched
    load = f"p = Predictor(r'{run / 'best.pt'}')"
    script = f"import numpy as np; from unetkit.inference import Predictor; {load}; "
    script += "print(p.class_ids(np.zeros((70, 90, 3), np.float32)).shape)"
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and "(70, 90)" in done.stdout, done.stderr


def test_the_onnx_export_agrees_with_pytorch(tmp_path):
    from unetkit.data import MaskValues, Preprocess
    from unetkit.inference.export.onnx import export_onnx
    from unetkit.models import create_model
    from unetkit.models.spec import ModelSpec

    pytest.importorskip("onnxruntime")
    model = create_model("encoder-unet", in_channels=3, num_classes=2, encoder=ENCODER).eval()
    spec = ModelSpec("encoder-unet", {"in_channels": 3, "num_classes": 2, "encoder": ENCODER}, MaskValues([0, 1]),
                     Preprocess(3, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), False)  # fmt: skip
    assert export_onnx({**spec.to_state(), "model": model.state_dict()}, tmp_path / "m.onnx") < 1e-3
    assert np.isfinite(model(torch.zeros(1, 3, 70, 90)).detach().numpy()).all()


def test_unetkit_encoders_lists_every_tested_encoder_with_its_size(capsys):
    from unetkit.models.encoder_unet import ENCODERS

    code, out, err = run_cli(capsys, "encoders")
    assert code == 0, err
    rows = out.strip().splitlines()
    assert [row.split()[0] for row in rows] == list(ENCODERS)
    assert all("M parameters" in row and "multiple of 32" in row for row in rows)


def test_the_encoder_speed_benchmark_times_each_model(tmp_path, monkeypatch):
    from benchmarks import encoders

    monkeypatch.setattr(encoders, "RESULTS", tmp_path)
    results = encoders.main(["--size", "64", "--batch", "1", "--reps", "1", "--only", ENCODER])
    assert len(results["models"]) == 2 and all(row["train_images_per_s"] > 0 for row in results["models"].values())


def test_the_decoders_concatenation_gives_cats_gradients_bit_for_bit(monkeypatch):
    """The encoder U-Net's decoder joins its maps with blocks.concatenate_channels (dense gradients
    back, channels_last): every weight gradient equals the one through torch.cat exactly."""
    import unetkit.models.encoder_unet as encoder_unet
    from unetkit.models import create_model

    torch.manual_seed(0)
    model = create_model("encoder-unet", in_channels=3, num_classes=2, encoder=ENCODER)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 96).contiguous(memory_format=torch.channels_last)
    gradients = []
    for join in (encoder_unet.concatenate_channels, lambda first, second: torch.cat([first, second], dim=1)):
        monkeypatch.setattr(encoder_unet, "concatenate_channels", join)
        model.zero_grad()
        model(x).square().mean().backward()
        gradients.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(ours, cats) for ours, cats in zip(*gradients, strict=True))
