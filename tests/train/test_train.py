import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from epochs_alone import train

import unetkit.runtime.amp as amp_module
from unetkit.data import find_pairs
from unetkit.data.fingerprint import ClassGeometry, DataFingerprint
from unetkit.data.mask_values import MaskValues
from unetkit.data.objects import INSTANCE_VALUES
from unetkit.data.transforms import AugmentConfig, random_patch_grid
from unetkit.errors import UnetkitError
from unetkit.runs.object_rule import choose_object_rule
from unetkit.train import TrainConfig, Trainer, load_checkpoint, plan_run, resolve_amp
from unetkit.train.recipes import apply_recipe, class_weights, data_orientation, data_scale, largest_object
from unetkit.train.run_claim import claimed_run
from unetkit.train.schedulers import SCHEDULERS, Schedule


def tiny_config(images: Path, masks: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(
        images=str(images),
        masks=str(masks),
        out=str(out),
        base_channels=8,
        depth=2,
        patch_size=32,
        patches_per_image=1,
        batch_size=4,
        epochs=2,
        lr=5e-3,
        progress=False,
        val_fraction=0.25,
        amp="off",
        channels_last="off",
        report=False,  # tests/report/test_report.py covers the report
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def test_tiny_training_really_learns(binary_data, tmp_path):
    images, masks = binary_data
    cfg = tiny_config(images, masks, tmp_path / "run", epochs=12, patches_per_image=4, elastic=False)
    result = train(cfg, log=lambda _: None)
    assert result.best_dice > 0.9
    run = tmp_path / "run"
    for name in ("best.pt", "last.pt", "metrics.csv", "config.json", "curves.png"):
        assert (run / name).stat().st_size > 0, name
    header, *rows = (run / "metrics.csv").read_text().splitlines()
    assert header == "epoch,train_loss,val_loss,val_dice,val_iou,lr,seconds" and len(rows) == 12
    state = load_checkpoint(run / "best.pt")
    assert state["model_name"] == "unet" and state["model_args"]["base_channels"] == 8
    assert state["mask_values"]["values"] == [0, 255] and state["binary"] is True
    for key in ("optimizer", "scheduler", "scaler", "epoch", "rng", "config"):
        assert key in state
    fingerprint = json.loads((run / "fingerprint.json").read_text())  # what the recipe read, beside config.json
    config = json.loads((run / "config.json").read_text())
    assert fingerprint["num_images"] == len(config["resolved"]["train_images"])  # the training split
    assert fingerprint["mask_values"]["values"] == [0, 255] and set(fingerprint["value_pixels"]) == {"0", "255"}


def test_multiclass_training_learns(multiclass_data, tmp_path):
    images, masks = multiclass_data
    cfg = tiny_config(images, masks, tmp_path / "run", epochs=15, patches_per_image=8, augment=False, patch_size=48)
    result = train(cfg, log=lambda _: None)
    state = load_checkpoint(result.best_checkpoint)
    assert state["model_args"]["num_classes"] == 5 and state["binary"] is False
    assert result.best_dice > 0.8
    said: list[str] = []  # objects of 5 classes (street scenes') are not counted: said, not silent
    choose_object_rule(result.best_checkpoint, find_pairs(images, masks)[:2], said.append)
    assert said == ["objects: no rule chosen for 5 classes (at most 4); predict --instances cuts by the default rule"]
    # ... and evaluate does not score them: 31 classes read adapted Rand error 0.9999 (a red-team round)
    from unetkit.evaluate import evaluate_pairs, format_report
    from unetkit.inference import InferenceOptions, Predictor

    predictor = Predictor(result.best_checkpoint, options=InferenceOptions(progress=False))
    report = evaluate_pairs(predictor, find_pairs(images, masks)[:2], progress=False)
    assert "objects: not scored for 5 classes (at most 4: classes are regions here)" in format_report(report)
    assert report.mean_dice > 0.5 and "adapted_rand_error" not in report.per_image[0]


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_matches_an_uninterrupted_run(binary_data, tmp_path, ema):
    images, masks = binary_data
    full = train(tiny_config(images, masks, tmp_path / "full", epochs=3, ema=ema), log=lambda _: None)

    def interrupt_after_first(row):
        if row.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            tiny_config(images, masks, tmp_path / "cut", epochs=3, ema=ema),
            log=lambda _: None,
            on_epoch_end=interrupt_after_first,
        )
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    resumed = train(TrainConfig(resume=str(tmp_path / "cut" / "last.pt"), progress=False), log=lambda _: None)
    assert [r.train_loss for r in resumed.history] == pytest.approx([r.train_loss for r in full.history], rel=1e-5)
    full_state, resumed_state = load_checkpoint(full.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    kept = ("model", "training_model") if ema else ("model",)  # under --ema the average and the weights
    assert ("training_model" in full_state) == bool(ema)
    for key in kept:
        a, b = full_state[key], resumed_state[key]
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)
    if ema:
        assert resumed_state["ema_updates"] == full_state["ema_updates"] > 0
        assert any(not torch.equal(full_state["model"][n], full_state["training_model"][n]) for n in a)


def test_a_resumed_run_keeps_the_speed_choices_its_checkpoint_timed(binary_data, tmp_path, monkeypatch):
    """AMP, layout and each 3x3 shape's kernels, timed afresh, went either way between processes, so
    a resume computed unlike the run it continued (a red-team round): the checkpoint keeps them."""
    from unetkit.models import conv3x3
    from unetkit.models.checkpoint import save_checkpoint
    from unetkit.runtime.hardware import cpu_description
    from unetkit.train.setup import speed_choices

    images, masks = binary_data
    for cache in conv3x3.PROBES.values():
        monkeypatch.setattr(conv3x3, cache, {})
    first = train(tiny_config(images, masks, tmp_path / "run", epochs=1), log=lambda _: None)
    state = load_checkpoint(first.last_checkpoint)
    kept = state["speed_choices"]
    assert kept["device"] == "cpu" and kept["amp"] in ("off", "bf16") and kept["conv3x3"]["winograd"]
    # As another process would have timed it: the other layout, and one shape Winograd's.
    kept["channels_last"] = not kept["channels_last"]
    row = kept["conv3x3"]["winograd"][0]
    kept["conv3x3"]["winograd"][0] = [*row[:-1], True]
    save_checkpoint(first.last_checkpoint, state)
    for cache in conv3x3.PROBES.values():
        monkeypatch.setattr(conv3x3, cache, {})  # a new process
    resume = TrainConfig(resume=str(first.last_checkpoint), epochs=2, progress=False)
    trainer = Trainer(plan_run(resume, log=lambda _: None))
    assert trainer.built.channels_last is kept["channels_last"]
    assert trainer.built.amp.name == kept["amp"] and trainer.built.amp.reason.endswith("(kept from the resumed run)")
    assert conv3x3.probe_choices()["winograd"][0] == kept["conv3x3"]["winograd"][0]
    again = speed_choices(trainer.built, torch.device("cpu"))  # as this run's checkpoint keeps them
    assert again["amp_reason"] == kept["amp_reason"] and "kept" not in again["amp_reason"]  # said once, not per resume
    assert kept["machine"].startswith(cpu_description().split(";")[0])
    kept["machine"] = "Intel Xeon; flags: avx2; threads: 2"  # another CPU (bf16 there may be 10x slower): timed again
    save_checkpoint(first.last_checkpoint, state)
    trainer = Trainer(plan_run(resume, log=lambda _: None))
    assert "kept" not in trainer.built.amp.reason


def test_a_resume_with_another_number_of_processes_says_its_batches_differ(binary_data, tmp_path):
    from unetkit.models.checkpoint import save_checkpoint

    images, masks = binary_data
    first = train(tiny_config(images, masks, tmp_path / "run", epochs=1), log=lambda _: None)
    state = load_checkpoint(first.last_checkpoint)
    assert state["world_size"] == 1
    state["world_size"] = 2  # as a 2-process torchrun run would have saved it
    save_checkpoint(first.last_checkpoint, state)
    said: list[str] = []
    train(TrainConfig(resume=str(first.last_checkpoint), epochs=2, progress=False), log=said.append)
    line = next(line for line in said if line.startswith("resuming"))
    assert line.endswith("trained in 2 process(es) and goes on in 1, so its batches differ from an uninterrupted run's")


def test_a_run_resumed_with_more_epochs_starts_at_its_new_plans_rate(binary_data, tmp_path):
    """A finished 2-epoch cosine run resumed with --epochs 4 re-plans its schedule over 4 epochs:
    epoch 3 starts at the rate halfway down that cosine, not at the old plan's end (0)."""
    images, masks = binary_data
    first = train(tiny_config(images, masks, tmp_path / "run", epochs=2, warmup_epochs=0.0), log=lambda _: None)
    assert first.history[-1].lr < first.history[0].lr
    resumed = train(TrainConfig(resume=str(tmp_path / "run" / "last.pt"), epochs=4, progress=False), log=lambda _: None)
    base = load_checkpoint(first.last_checkpoint)["config"]["lr"]
    assert [row.epoch for row in resumed.history] == [1, 2, 3, 4]
    assert resumed.history[2].lr == pytest.approx(base * 0.5, rel=1e-6)  # cosine at progress 0.5


def test_finished_run_is_never_overwritten(binary_data, tmp_path):
    images, masks = binary_data
    train(tiny_config(images, masks, tmp_path / "run", epochs=1), log=lambda _: None)
    before = (tmp_path / "run" / "best.pt").read_bytes()

    with pytest.raises(UnetkitError, match="already holds a checkpoint"):
        train(tiny_config(images, masks, tmp_path / "run", epochs=1), log=lambda _: None)
    assert (tmp_path / "run" / "best.pt").read_bytes() == before


def test_bad_data_fails_before_the_run_folder_is_made(binary_data, tmp_path):
    images, masks = binary_data
    (images / "img03.png").write_bytes(b"garbage")

    with pytest.raises(UnetkitError, match="img03.png"):
        train(tiny_config(images, masks, tmp_path / "run"), log=lambda _: None)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_on_cpu_follows_native_bf16(monkeypatch, native):
    monkeypatch.setattr(amp_module, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(amp_module, "cpu_bf16_conv_is_faster", lambda: True)
    policy = resolve_amp("auto", torch.device("cpu"))
    assert policy.dtype == (torch.bfloat16 if native else None)
    assert not policy.use_scaler
    assert ("native bf16" in policy.reason) and (("no native" in policy.reason) != native)


def test_amp_auto_keeps_fp32_when_the_bf16_probe_loses(monkeypatch):
    # The CPU flag says bf16, but a timed conv says otherwise (a VM, or oneDNN held to AVX2).
    monkeypatch.setattr(amp_module, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(amp_module, "cpu_bf16_conv_is_faster", lambda: False)
    policy = resolve_amp("auto", torch.device("cpu"))
    assert policy.dtype is None
    assert "ran slower" in policy.reason


def test_amp_auto_is_fp32_when_onednn_is_held_to_avx2():
    # ONEDNN_MAX_CPU_ISA=AVX2 makes oneDNN emulate bf16, as on an AVX2-only CPU: on either kind
    # of CPU the run-time choice must then be fp32.
    code = (
        "import torch; from unetkit.runtime.amp import resolve_amp; "
        "print(resolve_amp('auto', torch.device('cpu')).name)"
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "off"


def test_the_bf16_probe_times_on_one_thread_and_gives_torch_its_threads_back():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert isinstance(amp_module.cpu_bf16_conv_is_faster.__wrapped__(), bool)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_amp_explicit_modes():
    cpu = torch.device("cpu")
    assert resolve_amp("off", cpu).dtype is None
    assert resolve_amp("bf16", cpu).dtype is torch.bfloat16
    assert resolve_amp("fp16", cpu).dtype is None  # fp16 autocast is a CUDA feature
    with pytest.raises(ValueError):
        resolve_amp("int8", cpu)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_steps_and_round_trips(name):
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    schedule = Schedule(name, optimizer, steps_per_epoch=5, epochs=4, warmup_epochs=1, step_size=2)
    lrs = []
    for _epoch in range(4):
        for _ in range(5):
            optimizer.step()
            schedule.step_batch()
        schedule.step_epoch(0.5)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert all(lr >= 0 for lr in lrs)
    if name in ("cosine", "poly", "onecycle"):
        assert lrs[-1] < 1e-2 * 0.2
    if name == "none":
        assert lrs == [1e-2] * 4
    if name == "step":
        assert lrs[-1] == pytest.approx(1e-4)
    clone = Schedule(name, torch.optim.AdamW(params, lr=1e-2), 5, 4)
    clone.load_state_dict(schedule.state_dict())


def test_a_schedule_resumed_with_other_batches_an_epoch_goes_on_at_its_own_plans_step():
    """A 2-process run (13 steps an epoch) resumed in one process (25): the step is the epochs done
    in this run's batches, so the cosine goes on where an uninterrupted 25-step run would be, where
    the saved 13 steps warmed it up again and left it unfinished (a red-team finding)."""
    params = [torch.nn.Parameter(torch.zeros(1))]

    def schedule_after(steps_per_epoch: int, steps: int) -> tuple[Schedule, torch.optim.Optimizer]:
        optimizer = torch.optim.AdamW(params, lr=1e-2)
        schedule = Schedule("cosine", optimizer, steps_per_epoch=steps_per_epoch, epochs=4, warmup_epochs=1)
        for _ in range(steps):
            schedule.step_batch()
        return schedule, optimizer

    saved, _ = schedule_after(13, 13)  # one epoch in two processes
    uninterrupted, expected = schedule_after(25, 25)
    resumed, optimizer = schedule_after(25, 0)
    resumed.load_state_dict(saved.state_dict())
    resumed.resume(epochs_done=1)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected.param_groups[0]["lr"])
    assert resumed.state_dict()["last_epoch"] == uninterrupted.state_dict()["last_epoch"] == 25


def test_optimizers_and_losses_all_run(binary_data, tmp_path):
    images, masks = binary_data
    pairs = find_pairs(images, masks)
    for optimizer, loss in (("sgd", "focal"), ("rmsprop", "dice"), ("adamw", "ce")):
        cfg = tiny_config(
            images,
            masks,
            tmp_path / optimizer,
            epochs=1,
            optimizer=optimizer,
            loss=loss,
            model="dumbnet",
            depth=None,  # one level: a depth is refused, not ignored
            class_weights=[1.0, 2.0],
            lr=1e-3,
        )
        trainer = Trainer(plan_run(cfg, pairs[:6], pairs[6:], log=lambda _: None))
        result = trainer.fit()
        assert torch.isfinite(torch.tensor(result.history[0].train_loss))


def test_time_budget_anneals_the_lr_and_stops_in_time(binary_data, tmp_path):
    images, masks = binary_data
    cfg = tiny_config(images, masks, tmp_path / "run", epochs=None, time=3.0)
    result = train(cfg, log=lambda _: None)
    assert len(result.history) >= 2
    # No epoch starts that is expected to pass the budget: the run ends within one epoch of it.
    elapsed = load_checkpoint(result.last_checkpoint)["elapsed_seconds"]
    longest = max(row.seconds for row in result.history)
    assert elapsed <= 3.0 + longest + 1.0
    lrs = [row.lr for row in result.history]
    assert lrs[-1] < max(lrs)  # annealing over time, not over an epoch count
    # The last epoch is cut where the time is up, so the rate ends near 0 and the time is used.
    state = load_checkpoint(result.last_checkpoint)
    assert state["optimizer"]["param_groups"][0]["lr"] < 0.05 * cfg.lr and elapsed > 0.75 * 3.0


def test_an_epoch_longer_than_the_budget_ends_at_it_and_is_saved(binary_data, tmp_path):
    """A first epoch of 1,500 batches against `--time 1.5s`: it ran to its end (a large folder's
    first epoch overran its budget by minutes). Now it ends at the limit, is validated and kept."""
    images, masks = binary_data
    lines = []
    cfg = tiny_config(images, masks, tmp_path / "run", epochs=None, time=1.5, patches_per_image=1000)
    result = train(cfg, log=lines.append)
    state = load_checkpoint(result.last_checkpoint)
    assert state["epoch"] == 1 and len(result.history) == 1 and (tmp_path / "run" / "best.pt").is_file()
    assert 1.5 <= state["elapsed_seconds"] < 1.5 + 3.0  # a batch, the validation and the save past it
    (said,) = [line for line in lines if "budget ran out" in line]
    done, of = map(int, said.split("ran out ")[1].split(" batches")[0].split(" of "))
    assert 1 <= done < of == 1500 and said.endswith("into epoch 1")
    assert np.isfinite(result.history[0].train_loss)
    # Resumed with more time, the schedule goes on from the steps taken: inside its one-epoch
    # warmup, where counting the cut epoch whole put it at the peak (a red-team finding).
    assert 0 < state["epochs_trained"] == done / of < 0.5
    resumed = train(TrainConfig(resume=str(result.last_checkpoint), time=4.0, progress=False), log=lambda _: None)
    assert resumed.history[1].lr < 0.3 * cfg.lr  # cosine at ~0.4 of the time: 0.69 of the peak, less the warmup


@pytest.mark.parametrize(("asked_after", "lost"), [(1, True), (2, False)])
def test_a_ctrl_c_says_an_epoch_was_lost_only_when_one_was_under_way(binary_data, tmp_path, asked_after, lost):
    """Asked for after epoch 1, it stops epoch 2 at its first batch; after the last epoch, none is
    lost, where the message said one was (a red-team round)."""
    images, masks = binary_data
    with claimed_run(tiny_config(images, masks, tmp_path / "run"), log=lambda _: None) as trainer:

        def ask(row) -> None:
            if row.epoch == asked_after:
                trainer.interrupt.requested = True  # what the first Ctrl-C does

        with pytest.raises(KeyboardInterrupt) as stopped:
            trainer.fit(ask)
    assert f"holds epoch {asked_after}" in str(stopped.value)
    assert ("the epoch in progress is lost" in str(stopped.value)) == lost


def test_the_minimum_epochs_are_not_cut_by_the_budget(binary_data, tmp_path):
    images, masks = binary_data
    lines = []
    cfg = tiny_config(images, masks, tmp_path / "run", epochs=None, time=0.01, min_epochs=2, patches_per_image=20)
    result = train(cfg, log=lines.append)
    assert len(result.history) == 2 and not [line for line in lines if "ran out" in line]


def fingerprint_of(
    size: tuple[int, int], geometry: dict, pixels: dict, count: int = 30, heights: dict | None = None
) -> DataFingerprint:
    """A fingerprint as the scan of `count` gray images of `size` (h, w) would give it."""
    return DataFingerprint(
        num_images=count,
        median_height=size[0],
        median_width=size[1],
        smallest_side=min(size),
        largest_pixels=size[0] * size[1],
        channels=1,
        mean=[0.5],
        std=[0.2],
        value_pixels=pixels,
        value_height=heights or dict.fromkeys(pixels, 0.5),
        geometry={v: ClassGeometry(*g) for v, g in geometry.items()},
        mask_values=MaskValues(sorted(pixels)),
    )


# The three real data sets' fingerprints (measured on their training splits, see recipes.py).
ISBI = fingerprint_of((512, 512), {0: (2.0, 512), 255: (8.5, 246)}, {0: 22, 255: 78}, count=22)
HC18 = fingerprint_of((540, 800), {0: (101.3, 800), 255: (58.1, 448)}, {0: 70, 255: 30}, count=262)
# camvid-dev's train split: (half width, extent) of each class but the rarest, as its fingerprint measures them
CAMVID = {0: (18.5, 253), 1: (16.0, 228), 2: (1.0, 136), 3: (30.7, 480), 4: (7.0, 180), 5: (6.0, 122), 6: (2.1, 38),
          7: (4.0, 48), 8: (9.0, 116), 9: (2.0, 46)}  # fmt: skip


def test_the_recipe_sets_a_pretrained_encoders_learning_rate_and_nothing_for_other_models(tmp_path):
    """No timm needed: the recipe reads the options, the encoder is not built here."""
    cpu = torch.device("cpu")
    weights = tmp_path / "resnet18.pt"
    assert apply_recipe(TrainConfig(), ISBI, cpu)[0].encoder_lr is None
    assert apply_recipe(TrainConfig(encoder="resnet18"), ISBI, cpu)[0].encoder_lr == 1.0  # from scratch
    pretrained, plan = apply_recipe(TrainConfig(encoder="resnet18", encoder_weights=str(weights)), ISBI, cpu)
    assert pretrained.encoder_lr == 0.1 and "encoder_lr=0.1" in plan
    mine = TrainConfig(encoder="resnet18", encoder_weights=str(weights), encoder_lr=0.5)
    assert apply_recipe(mine, ISBI, cpu)[0].encoder_lr == 0.5
    with pytest.raises(UnetkitError, match="--encoder-lr 0.1 needs --encoder NAME"):
        TrainConfig(encoder_lr=0.1).validate()
    with pytest.raises(UnetkitError, match="--encoder-lr"):
        TrainConfig(encoder="resnet18", encoder_lr=2.0).validate()


def test_recipes_fill_only_what_the_user_left_out():
    fast, plan = apply_recipe(TrainConfig(recipe="fast", time=120.0), ISBI, torch.device("cpu"))
    assert (fast.base_channels, fast.upsampling, fast.scale, fast.patch_size, fast.elastic) == (
        16,
        "bilinear",
        1.0,
        256,
        False,
    )
    assert (fast.lr, fast.patches_per_image) == (4e-3, 4)
    assert fast.epochs is None and "recipe fast" in plan
    paper, _ = apply_recipe(TrainConfig(recipe="paper", base_channels=32, lr=1e-4), ISBI, torch.device("cpu"))
    assert (paper.base_channels, paper.depth, paper.upsampling, paper.scale, paper.epochs, paper.lr) == (
        32,
        4,
        "transposed",
        1.0,
        50,
        1e-4,
    )
    tiny = fingerprint_of((40, 60), {0: (3.0, 60), 1: (4.0, 20)}, {0: 80, 1: 20}, count=4)
    auto_cpu, _ = apply_recipe(TrainConfig(), tiny, torch.device("cpu"))
    assert auto_cpu.recipe == "fast" and auto_cpu.scale == 1.0 and auto_cpu.patch_size == 0  # whole images
    assert auto_cpu.patches_per_image == 24  # 96 small views an epoch, as 96 patches would be
    huge = dataclasses.replace(ISBI, largest_pixels=4000 * 3000, num_images=2)
    whole, _ = apply_recipe(TrainConfig(patch_size=0), huge, torch.device("cpu"))  # the user's whole 12 Mpx images
    assert whole.patches_per_image == 1  # not 48 views of each: ~96 patches' pixels an epoch (a review)
    skew = dataclasses.replace(tiny, largest_pixels=2000 * 2000, num_images=3)  # one large beside small ones
    assert apply_recipe(TrainConfig(patch_size=0), skew, torch.device("cpu"))[0].patches_per_image == 1
    plain, _ = apply_recipe(TrainConfig(augment=False), tiny, torch.device("cpu"))
    assert plain.patch_size == 0 and plain.patches_per_image == 1  # no augmentation: views would be copies
    thin = fingerprint_of((24, 60), {0: (3.0, 60), 1: (4.0, 20)}, {0: 80, 1: 20}, count=4)
    small, _ = apply_recipe(TrainConfig(), thin, torch.device("cpu"))
    assert small.patch_size == 32  # below the network's 32 px minimum: padded patches, not whole images
    one_big = dataclasses.replace(HC18, largest_pixels=4000 * 3000)
    assert apply_recipe(TrainConfig(), one_big, torch.device("cpu"))[0].patch_size == 128  # batches not padded to it
    shallow, _ = apply_recipe(TrainConfig(depth=2), thin, torch.device("cpu"))
    assert shallow.patch_size == 0  # the user's depth 2 needs only 8 px
    deep, _ = apply_recipe(TrainConfig(depth=6), tiny, torch.device("cpu"))
    assert deep.patch_size == 128  # depth 6 needs 128 px: padded patches, which validate


def test_recipe_scale_keeps_thin_structures_and_fits_large_objects():
    assert data_scale(ISBI) == 1.0  # 2 px membranes keep full resolution
    assert data_scale(HC18) == 0.25  # 448 px heads fit half a 256 px patch at a quarter size
    hc18, _ = apply_recipe(TrainConfig(time=300.0), HC18, torch.device("cpu"))
    assert (hc18.scale, hc18.patch_size, hc18.patches_per_image) == (0.25, 0, 1)  # 200x135: whole images
    user, _ = apply_recipe(TrainConfig(scale=0.5), HC18, torch.device("cpu"))
    assert (user.scale, user.patch_size) == (0.5, 256)  # the patch fits the user's scale
    thin_and_large = fingerprint_of((360, 480), {0: (20, 480), 1: (1.0, 115), 2: (30, 420)}, {0: 60, 1: 10, 2: 30})
    assert data_scale(thin_and_large) == 1.0  # a thin class of 10% of the pixels wins over large ones
    rare_thin = fingerprint_of((540, 800), {0: (100, 800), 1: (50, 448), 2: (1.0, 5)}, {0: 70_000, 1: 29_999, 2: 1})
    assert data_scale(rare_thin) == 0.25  # a class under 0.1% of the pixels does not hold it up
    # CamVid's train split: poles 1 px and 1% of the pixels, the road (32%, no background) spans the frame.
    street = fingerprint_of((360, 480), CAMVID, {0: 16, 1: 29, 2: 1, 3: 32, 4: 6, 5: 7, 6: 1, 7: 1, 8: 6, 9: 1})
    assert data_scale(street) == 0.25  # camvid-dev's unseen street, 5 minutes: mIoU 0.35 against 0.22-0.27 at 1.0
    assert largest_object(street) == 480  # the road: no class holds over half the pixels
    assert largest_object(HC18) == 448  # the heads, not the background (70%) around them


# dsb2018-dev's train split: images of 256 to 1024 px
NUCLEI = fingerprint_of((256, 256), {0: (18.3, 256), 1: (1.0, 29), 2: (1.0, 18), 3: (2.0, 20)},
                        {0: 835, 1: 87, 2: 21, 3: 57}, count=160)  # fmt: skip
NUCLEI = dataclasses.replace(NUCLEI, largest_pixels=1024 * 1024)
STREET = fingerprint_of((360, 480), CAMVID, {0: 16, 1: 29, 2: 1, 3: 32, 4: 6, 5: 7, 6: 1, 7: 1, 8: 6, 9: 1})


@pytest.mark.parametrize(
    ("data", "plan"),
    [(ISBI, (1.0, 256)), (HC18, (0.25, 0)), (STREET, (0.25, 0)), (NUCLEI, (1.0, 128))],
    ids=["isbi2012", "hc18-dev", "camvid-dev", "dsb2018-dev"],
)
def test_the_gpu_plan_of_each_real_set_takes_the_datas_resolution_and_patch(data, plan):
    """--recipe auto on a CUDA GPU picks the paper's network, at the scale and patch the data asks
    for, as on a CPU (issue 23: the paper recipe's fixed full size scored HC18 head Dice 0.79 where
    the data's quarter size scores 0.97). Computing a plan needs no GPU."""
    gpu, summary = apply_recipe(TrainConfig(), data, torch.device("cuda"))
    cpu, _ = apply_recipe(TrainConfig(), data, torch.device("cpu"))
    assert "recipe paper" in summary and (gpu.base_channels, gpu.upsampling, gpu.batch_size) == (64, "transposed", 8)
    assert (gpu.scale, gpu.patch_size) == (cpu.scale, cpu.patch_size) == plan
    assert (gpu.orientation, gpu.class_weights, gpu.normalize) == (cpu.orientation, cpu.class_weights, cpu.normalize)


def test_small_objects_train_on_small_patches_with_as_many_pixels_an_epoch():
    """Nuclei (dsb2018-dev: up to 43 px, images 256 to 1024 px) fit in half a 128 px patch: four
    times as many of them an epoch; ISBI's membrane network and CamVid's road do not."""
    nuclei = fingerprint_of((256, 256), {0: (18.1, 340), 1: (1.4, 43), 2: (1.0, 20), 3: (2.0, 35)},
                            {0: 83, 1: 10, 2: 2, 3: 5}, count=144)  # fmt: skip
    nuclei = dataclasses.replace(nuclei, largest_pixels=1024 * 1024)
    plan, _ = apply_recipe(TrainConfig(time=600.0), nuclei, torch.device("cpu"))
    assert (plan.scale, plan.patch_size, plan.patches_per_image) == (1.0, 128, 4)
    assert apply_recipe(TrainConfig(patch_size=256), nuclei, torch.device("cpu"))[0].patches_per_image == 1
    assert apply_recipe(TrainConfig(recipe="paper"), nuclei, torch.device("cpu"))[0].patch_size == 128
    isbi, _ = apply_recipe(TrainConfig(time=600.0), ISBI, torch.device("cpu"))
    assert (isbi.patch_size, isbi.patches_per_image) == (256, 4)
    street = fingerprint_of((360, 480), CAMVID, {0: 16, 1: 29, 2: 1, 3: 32, 4: 6, 5: 7, 6: 1, 7: 1, 8: 6, 9: 1})
    plan, _ = apply_recipe(TrainConfig(), street, torch.device("cpu"))
    assert (plan.scale, plan.patch_size) == (0.25, 0)  # whole 120x90 frames


def test_border_weights_for_countable_objects_only():
    assert apply_recipe(TrainConfig(), ISBI, torch.device("cpu"))[0].border_weight == 10.0  # cells
    street = fingerprint_of((360, 480), {}, {0: 30, 1: 40, 2: 30})
    assert apply_recipe(TrainConfig(), street, torch.device("cpu"))[0].border_weight == 0.0  # scene classes
    for mode, weight in (("objects", 10.0), ("boundary", 0.0), ("centres", 0.0)):  # edge classes separate them
        instances = dataclasses.replace(street, mask_values=MaskValues(INSTANCE_VALUES[mode], instances=mode))
        assert apply_recipe(TrainConfig(), instances, torch.device("cpu"))[0].border_weight == weight, mode
    assert apply_recipe(TrainConfig(border_weight=0.0), ISBI, torch.device("cpu"))[0].border_weight == 0.0


def test_upright_scenes_are_not_turned_upside_down():
    assert data_orientation(ISBI) == "any"
    street = fingerprint_of((360, 480), {}, {0: 30, 1: 40, 2: 30}, heights={0: 0.2, 1: 0.5, 2: 0.8})
    assert data_orientation(street) == "upright"
    rare_high = fingerprint_of((360, 480), {}, {0: 995, 1: 5}, heights={0: 0.5, 1: 0.05})
    assert data_orientation(rare_high) == "any"  # a class under 1% of the pixels does not decide
    upright, _ = apply_recipe(TrainConfig(), street, torch.device("cpu"))
    assert upright.orientation == "upright"
    assert upright.photometric == "light"  # strong lost in 5 minutes (benchmarks/NOTES.md, issue 23)
    torch.manual_seed(0)
    for _ in range(20):  # rows keep their order: the grid's y grows downwards in every sample
        upright_only = AugmentConfig(vertical_flips=False, rotate90=False, elastic_sigma_px=0.0)
        grid = random_patch_grid((64, 64), (32, 32), upright_only)
        assert (grid[0, 1:, :, 1] > grid[0, :-1, :, 1]).all()


def test_class_weights_from_pixel_fractions():
    weights = class_weights(ISBI, ISBI.mask_values)
    assert weights[0] / weights[1] == pytest.approx((78 / 22) ** 0.5, rel=1e-3)
    assert 0.22 * weights[0] + 0.78 * weights[1] == pytest.approx(1.0, rel=1e-3)  # pixel-weighted mean 1
    skewed = fingerprint_of((64, 64), {}, {0: 1_000_000, 1: 1, 2: 0})
    weights = class_weights(skewed, skewed.mask_values)
    assert max(weights) / min(weights) == pytest.approx(10.0, rel=1e-3)  # capped; an absent class gets the cap
    assert weights[2] == max(weights)


def test_durations_parse():
    from unetkit.cli import parse_duration

    assert [parse_duration(t) for t in ("90s", "10m", "1.5h", "45")] == [90, 600, 5400, 45]


def test_tensorboard_logs_scalars_per_class_and_images(binary_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images, masks = binary_data
    train(tiny_config(images, masks, tmp_path / "run", epochs=1, tensorboard=True), log=lambda _: None)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss/train", "loss/val", "lr", "val/dice", "dice_per_class/0", "iou_per_class/255"} <= scalars
    assert len(events.Tags()["images"]) == 2  # both validation images of 8 at val_fraction 0.25


def test_tensorboard_missing_is_a_one_line_hint(binary_data, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    images, masks = binary_data
    with pytest.raises(UnetkitError, match=r"pip install unetkit\[tensorboard\]"):
        train(tiny_config(images, masks, tmp_path / "run", epochs=1, tensorboard=True), log=lambda _: None)


def test_min_epochs_outlast_a_budget_too_short_for_them(binary_data, tmp_path):
    images, masks = binary_data
    cfg = tiny_config(images, masks, tmp_path / "run", epochs=None, time=0.05, min_epochs=3)
    result = train(cfg, log=lambda _: None)
    assert len(result.history) == 3  # the budget is spent after epoch 1; the minimum still runs
    lrs = [row.lr for row in result.history]
    assert lrs[-1] < lrs[1]  # and the LR anneals over those epochs, not stuck at ~0 after the budget


def test_whole_image_training_is_augmented_too(binary_data):
    from unetkit.data import AugmentConfig, MaskValues, Preprocess, SegmentationDataset

    images, masks = binary_data
    dataset = SegmentationDataset(
        find_pairs(images, masks)[:1], MaskValues([0, 255]), Preprocess(1), augment=AugmentConfig()
    )
    torch.manual_seed(0)
    first = dataset[0][0]
    assert first.shape == (1, 48, 48) and not torch.equal(first, dataset[0][0])


def test_plateau_without_validation_keeps_the_lr(binary_data, tmp_path):
    images, masks = binary_data
    cfg = tiny_config(images, masks, tmp_path / "run", epochs=5, scheduler="plateau", val_fraction=0)
    result = train(cfg, log=lambda _: None)
    assert {row.lr for row in result.history} == {5e-3}
    assert result.best_checkpoint.exists()


def test_timed_run_with_epochs_anneals_by_the_last_epoch(binary_data, tmp_path):
    images, masks = binary_data
    cfg = tiny_config(images, masks, tmp_path / "run", epochs=3, time=3600.0)
    result = train(cfg, log=lambda _: None)
    assert len(result.history) == 3
    state = load_checkpoint(result.last_checkpoint)
    assert state["optimizer"]["param_groups"][0]["lr"] < 1e-4  # annealed, not stuck near the peak


def test_cpu_description_says_when_the_isa_is_held_back(monkeypatch):
    from unetkit.runtime.hardware import ISA_LIMIT_VARIABLES, cpu_description

    for name in ISA_LIMIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert "ISA limited" not in cpu_description()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert cpu_description().endswith("ISA limited by ONEDNN_MAX_CPU_ISA=AVX2")


def test_training_picks_its_memory_layout_from_a_forward_and_backward_probe(binary_data, tmp_path, monkeypatch):
    import unetkit.train.setup as setup_module
    from unetkit.runtime.hardware import channels_last_is_faster

    calls = []

    def probe(*args, **kwargs):
        calls.append(kwargs)
        return channels_last_is_faster(*args, **kwargs)

    monkeypatch.setattr(setup_module, "channels_last_is_faster", probe)
    images, masks = binary_data
    cfg = tiny_config(images, masks, tmp_path / "run", epochs=1, channels_last="auto")
    trainer = Trainer(plan_run(cfg, log=lambda _: None))
    assert calls == [{"channels": 16, "size": 32, "backward": True}]  # base 8 -> at least 16; the patch size
    assert torch.is_grad_enabled()
    expected = torch.channels_last if trainer.built.channels_last else torch.contiguous_format
    assert trainer.built.memory_format == expected


def test_zoom_sets_the_augmentation_range_and_is_checked(binary_data, tmp_path):
    images, masks = binary_data
    default = Trainer(plan_run(tiny_config(images, masks, tmp_path / "a"), log=lambda _: None))
    assert default.train_set.augment.scale_range == (0.8, 1.25)  # as before --zoom existed
    wide = Trainer(plan_run(tiny_config(images, masks, tmp_path / "b", zoom=2.0), log=lambda _: None))
    assert wide.train_set.augment.scale_range == (0.5, 2.0)

    with pytest.raises(UnetkitError, match="--zoom 0.5"):
        tiny_config(images, masks, tmp_path / "c", zoom=0.5).validate()


def test_what_the_resolved_options_do_to_the_set_is_said_not_changed(tmp_path):
    """A patch larger than every image (all padding: ~14x slower, a red-team finding), an
    --ignore-value no mask holds, and images of several bit depths each get a note; a set and
    options that fit get none."""
    from synthetic import make_shapes

    from unetkit.data import MaskValues
    from unetkit.data.fingerprint import fingerprint_pairs
    from unetkit.train.data_plan import data_notes

    images, masks = make_shapes(tmp_path / "data", count=6)
    data = fingerprint_pairs(find_pairs(images, masks), ignore_value=7)
    assert data.largest_side == 48 and data.ignored_pixels == 0 and data.image_scales == {255.0: (6, "img00.png")}
    cfg = TrainConfig(images=str(images), masks=str(masks), scale=1.0, patch_size=256, ignore_value=7, depth=4)
    patch, ignore = data_notes(cfg, data)
    assert "--patch-size 256 is larger than every training image at scale 1 (the largest side is 48 px)" in patch
    assert "~28x a median image's pixels" in patch and "--patch-size none" in patch
    assert ignore.startswith("--ignore-value 7 is in no training mask") and "hold 0, 255)" in ignore
    twelve = dataclasses.replace(  # CamVid's ids, 11 its void
        data, value_pixels=dict.fromkeys(range(12), 1), mask_values=MaskValues(list(range(12)))
    )
    assert "hold 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)" in data_notes(cfg, twelve)[1]
    assert data_notes(dataclasses.replace(cfg, patch_size=48, ignore_value=None), data) == []
    mixed = dataclasses.replace(data, image_scales={255.0: (5, "a.png"), 65535.0: (1, "b.tif")})
    (note,) = data_notes(dataclasses.replace(cfg, patch_size=0, ignore_value=None), mixed)
    assert "mix bit depths: 5 8-bit (e.g. a.png), 1 16-bit (e.g. b.tif)" in note and "--normalize image" in note
    assert data_notes(dataclasses.replace(cfg, patch_size=0, ignore_value=None, normalize="image"), mixed) == []
    from PIL import Image

    mask = np.asarray(Image.open(masks / "img00.png")).copy()
    mask[:2, :2] = 7
    Image.fromarray(mask).save(masks / "img00.png")
    assert fingerprint_pairs(find_pairs(images, masks), ignore_value=7).ignored_pixels == 4
    # A class --mask-values names that no training mask holds took the largest class weight, unsaid
    absent = dataclasses.replace(data, mask_values=MaskValues([0, 128, 255]))
    (note,) = data_notes(dataclasses.replace(cfg, patch_size=0, ignore_value=None, mask_values=[0, 128, 255]), absent)
    assert note.startswith("mask value(s) 128 have no pixel in the training masks: the model cannot learn them")


def test_a_rare_class_is_noted_with_its_share(tmp_path):
    """A foreground of 0.1% trained to val Dice 0.10 in 75 s, unsaid (a red-team round): a class
    under RARE_CLASS_SHARE of the pixels is named with its share, by train and by check; instance masks
    and common classes are not."""
    from PIL import Image
    from synthetic import make_shapes

    from unetkit.check import check_dataset
    from unetkit.data import MaskValues
    from unetkit.data.fingerprint import fingerprint_pairs
    from unetkit.train.data_plan import data_notes

    images, masks = make_shapes(tmp_path / "data", count=4)
    data = fingerprint_pairs(find_pairs(images, masks))
    cfg = TrainConfig(images=str(images), masks=str(masks), scale=1.0, patch_size=0, depth=4)
    assert data_notes(cfg, data) == []
    rare = dataclasses.replace(data, value_pixels={0: 9990, 255: 10}, mask_values=MaskValues([0, 255]))
    (note,) = data_notes(cfg, rare)
    assert note.startswith("mask value 255 covers 0.1% of the training pixels: a class this rare may learn slowly")
    assert note.endswith("give the run more --time, raise its --class-weights, or crop the images nearer to it")
    three = dataclasses.replace(data, value_pixels={0: 9980, 1: 10, 2: 10, 7: 5}, mask_values=MaskValues([0, 1, 2]))
    assert data_notes(cfg, three)[0].startswith("mask values 1 covers 0.1%, 2 covers 0.1% of the training pixels")
    objects = dataclasses.replace(rare, mask_values=MaskValues([0, 255], instances="objects"))
    assert data_notes(cfg, objects) == []

    assert not [w for w in check_dataset(images, masks)["warnings"] if "rare" in w["problem"]]
    for path in masks.iterdir():  # each mask one foreground pixel of 48 x 48: 0.04%
        mask = np.zeros((48, 48), np.uint8)
        mask[5, 5] = 255
        Image.fromarray(mask).save(path)
    (warning,) = [w for w in check_dataset(images, masks)["warnings"] if "rare" in w["problem"]]
    assert warning["problem"].startswith("mask value 255 covers 0.043% of the training pixels")
