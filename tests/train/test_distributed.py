"""DDP under torchrun: two CPU processes with gloo on a tiny data set."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from synthetic import assert_one_line_error, built_once, make_shapes, run_cli

from unetkit.data import find_pairs
from unetkit.train import TrainConfig, Trainer, load_checkpoint, model_from_checkpoint, plan_run
from unetkit.train.split import split_pairs

ROOT = Path(__file__).resolve().parents[2]
TINY_OPTIONS = (
    "--epochs 2 --base-channels 4 --depth 2 --patch-size 32 --batch-size 2 --val-fraction 0.25 "
    "--amp off --channels-last off --no-progress --workers 0 --no-report"
).split()


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=N -m unetkit ...` with this checkout's unetkit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    command += ["-m", "unetkit", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


# `unetkit train` under torchrun, each rank also saving its own final weights (so one launch serves
# the tests below: a second launch for the weights cost ~11 s of the suite).
RANKS_SCRIPT = """\
import os, sys, torch
import unetkit.train.loop as loop
from unetkit.cli import main
fit = loop.Trainer.fit
def fit_and_save(self, *args, **kwargs):
    result = fit(self, *args, **kwargs)
    torch.save(self.built.model.module.state_dict(), os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.pt"))
    return result
loop.Trainer.fit = fit_and_save
sys.exit(main(sys.argv[2:]))
"""


def train_two_ranks(root: Path) -> None:
    images, masks = make_shapes(root, count=8, size=(32, 32))
    (root / "ranks.py").write_text(RANKS_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(root / "ranks.py"),
    ]
    command += [str(root), "train", "--images", str(images), "--masks", str(masks), "--out", str(root / "run")]
    result = subprocess.run([*command, *TINY_OPTIONS], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-3000:]  # how far each rank got
    (root / "stdout.txt").write_text(result.stdout)


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    """(images, masks, run folder, rank 0's log) of one torchrun launch, shared by the workers."""
    root = built_once(tmp_path_factory, "ddp", train_two_ranks)
    return root / "images", root / "masks", root / "run", (root / "stdout.txt").read_text()


def test_two_ranks_train_and_write_one_run_folder(two_rank_run):
    _images, _masks, out, log = two_rank_run
    for name in ("best.pt", "last.pt", "metrics.csv", "config.json", "config.toml", "curves.png"):
        assert (out / name).is_file(), name
    # Rank 0 alone logs: one summary line, one line per epoch.
    assert log.count("checkpoints:") == 1
    assert len(re.findall(r"^epoch +1/2 ", log, re.MULTILINE)) == 1, log


def test_validation_dice_equals_a_single_process_on_the_checkpoint(two_rank_run):
    images, masks, out, _result = two_rank_run
    state = load_checkpoint(out / "last.pt")
    # The same validation images, scored by one process with the saved weights.
    _train, val_pairs = split_pairs(find_pairs(images, masks), 0.25, seed=0)
    cfg = TrainConfig(**{**state["config"], "resume": str(out / "last.pt"), "out": str(out)})
    trainer = Trainer(plan_run(cfg, log=lambda _: None))
    assert [p.name for p in trainer.run.val_pairs] == [p.name for p in val_pairs]
    val_loss, metrics = trainer.validate()
    ddp_row = state["history"][-1]
    assert metrics.mean_dice == ddp_row["val_dice"]
    assert metrics.mean_iou == ddp_row["val_iou"]
    assert val_loss == pytest.approx(ddp_row["val_loss"], rel=1e-6)
    model = model_from_checkpoint(state)  # loads without 'module.' prefixes
    assert isinstance(model, torch.nn.Module)


def test_both_ranks_end_with_identical_weights(two_rank_run):
    _images, _masks, out, _result = two_rank_run
    rank0, rank1 = torch.load(out.parent / "rank0.pt"), torch.load(out.parent / "rank1.pt")
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    saved = load_checkpoint(out / "last.pt")["model"]
    for name in rank0:
        assert torch.equal(saved[name], rank0[name]), name


# A rank as `unetkit train` ends one: a gloo group that DDP has held, closed after a finished run
# or left open by an error, then cli.main's exit path.
LEAVING_RANK = """\
import atexit, os, sys, torch, torch.distributed as dist
from unetkit.train import distributed
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
distributed.GROUPS_SET_UP.append(0)  # as setup_distributed records it
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
atexit.register(lambda: open(sys.argv[2], "w").close())
if sys.argv[3] == "finished":
    distributed.Distributed(rank=0, world_size=2, owns_group=True).close()  # world_size 2: as a real rank runs it
print("the run's last line, unflushed in a pipe")
distributed.leave_without_teardown(3)
print("not reached")
"""


@pytest.mark.parametrize("ending", ["finished", "error"])
def test_a_rank_that_set_up_a_group_leaves_with_its_code_and_its_output(tmp_path, ending):
    """Such a rank skips the interpreter's teardown (where gloo's threads raced it at exit), but
    still runs the exit handlers, flushes what it printed, and exits with the command's code."""
    script = tmp_path / "rank.py"
    script.write_text(LEAVING_RANK)
    handled = tmp_path / "atexit-ran"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(script), str(tmp_path / "store"), str(handled), ending]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "the run's last line" in result.stdout and "not reached" not in result.stdout
    assert handled.is_file()


@pytest.mark.parametrize("command", ["predict", "evaluate", "demo"])
def test_commands_other_than_train_refuse_to_run_as_torchrun_ranks(command, capsys, monkeypatch, tmp_path):
    """Each rank ran a whole predict, and the second was refused the first's output folder, so the
    job failed after writing the masks once (red-team finding): now one line says what to do."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    checkpoint = ["--checkpoint", tmp_path / "x.pt"]
    args = {
        "predict": [*checkpoint, tmp_path, "--out", tmp_path / "masks"],
        "evaluate": [*checkpoint, "--images", tmp_path, "--masks", tmp_path],
        "demo": ["--out", tmp_path / "demo"],
    }[command]
    code, _out, err = run_cli(capsys, command, *args)
    assert_one_line_error(code, err, f"{command} runs in one process", "without torchrun")
    assert list(tmp_path.iterdir()) == []


def test_a_rank_whose_peer_left_says_so_in_one_line(capsys, monkeypatch):
    """Rank 0 stopped (its output closed, say) and said why; rank 1's collective then failed with
    70 lines of gloo traceback. Now one line, and any other error still raises."""
    import argparse

    from unetkit.cli import run_command

    def failing(message: str):
        def command(_args):
            raise RuntimeError(message)

        return argparse.Namespace(command="train", func=command)

    gloo = "[../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:9955. This is typically..."
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run_command(failing(gloo)) == 1
    assert capsys.readouterr().err == "unetkit train: rank 1 stopped: another process of this torchrun job left it\n"
    with pytest.raises(RuntimeError, match="a bug"):
        run_command(failing("a bug"))
    monkeypatch.delenv("RANK")
    with pytest.raises(RuntimeError, match="closed by peer"):  # not a torchrun rank: not ours to explain
        run_command(failing(gloo))

    def broken_pipe(_args):
        raise BrokenPipeError

    # In a process whose stdout has no file behind it (captured here), a broken pipe still says one line.
    assert run_command(argparse.Namespace(command="predict", func=broken_pipe)) == 141
    assert capsys.readouterr().err == "unetkit predict: stopped, its output was closed\n"


def test_leaving_is_a_no_op_where_no_group_was_set_up():
    from unetkit.train.distributed import GROUPS_SET_UP, leave_without_teardown

    assert GROUPS_SET_UP == []
    leave_without_teardown(0)  # returns: pytest is still here


def test_without_torchrun_nothing_is_distributed(binary_data, tmp_path):
    images, masks = binary_data
    trainer = Trainer(
        plan_run(
            TrainConfig(images=str(images), masks=str(masks), out=str(tmp_path / "run"), base_channels=4, depth=2),
            log=lambda _: None,
        )
    )
    assert not trainer.dist.enabled and trainer.opt.sampler is None and not dist.is_initialized()


def test_resume_under_torchrun_continues_the_run(two_rank_run):
    _images, _masks, run, _result = two_rank_run
    out = shutil.copytree(run, run.parent / "resumed")  # the other tests read the run as it ended
    result = torchrun("train", "--resume", str(out / "last.pt"), "--epochs", "3", "--no-progress")
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-3000:]  # how far each rank got
    assert "resuming" in result.stdout and len(re.findall(r"^epoch +3/3 ", result.stdout, re.MULTILINE)) == 1
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 3 and [row["epoch"] for row in state["history"]] == [1, 2, 3]


def free_port() -> int:
    import socket

    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


@pytest.mark.slow  # 13 s: two more torchrun launches (issue 15 allows it; `pytest -m slow` runs it)
def test_two_nodes_train_one_run(tmp_path, capsys):
    """The README's multi-node command, for real: two torchrun "nodes" on this machine (one
    process each) meet by c10d rendezvous on 127.0.0.1, train, and end with the same weights;
    rank 0's checkpoint evaluates in a single process."""
    images, masks = make_shapes(tmp_path, count=8, size=(32, 32))
    script = tmp_path / "node.py"
    # `unetkit train`'s own parsing and Trainer, then each node saves the weights it holds.
    script.write_text(
        "import os, sys, torch\n"
        "from unetkit.cli import build_parser, config_and_given_options\n"
        "from unetkit.train import Trainer, plan_run\n"
        "cfg, given = config_and_given_options(build_parser().parse_args(sys.argv[2:]))\n"
        "trainer = Trainer(plan_run(cfg, resume_overrides=given))\n"
        "trainer.fit()\n"
        "node = os.environ['GROUP_RANK']\n"  # torchrun's node rank
        "torch.save(trainer.built.model.module.state_dict(), os.path.join(sys.argv[1], f'node{node}.pt'))\n"
        "trainer.dist.close()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    rendezvous = ["--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d"]
    rendezvous += [f"--rdzv-endpoint=127.0.0.1:{free_port()}", "--rdzv-id=unetkit-test"]
    train = ["train", "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "run"), *TINY_OPTIONS]
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", *rendezvous, str(script), str(tmp_path), *train],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=ROOT,
        )  # fmt: skip
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=180)[0] for node in nodes]
    assert all(node.returncode == 0 for node in nodes), outputs[0][-2000:] + outputs[1][-2000:]
    node0, node1 = torch.load(tmp_path / "node0.pt"), torch.load(tmp_path / "node1.pt")
    assert node0.keys() == node1.keys() and all(torch.equal(node0[k], node1[k]) for k in node0)
    code, out, _ = run_cli(
        capsys, "evaluate", "--checkpoint", tmp_path / "run" / "best.pt", "--images", images, "--masks", masks
    )
    assert code == 0 and "mean Dice" in out


def test_cpu_ranks_count_the_memory_they_share(monkeypatch):
    """Two CPU ranks on one machine each keep a full batch's activation maps: the memory check
    gives each process its share of the machine (a red-team note), where a GPU rank has its own."""
    import unetkit.train.setup as setup
    from unetkit.data import MaskValues, Preprocess
    from unetkit.errors import UnetkitError
    from unetkit.models.spec import ModelSpec

    args = {"in_channels": 1, "num_classes": 2, "base_channels": 16, "depth": 3}
    spec = ModelSpec("unet", args, MaskValues([0, 1, 2]), Preprocess(1, [0.5], [0.25]), False)
    params, maps = setup.counted(spec)
    cfg = TrainConfig(images="i", masks="m", patch_size=256, batch_size=8, amp="off")
    need = setup.BYTES_PER_TRAINED_PARAMETER * params + 8 * maps * (256 / setup.MAPS_MEASURED_AT) ** 2
    monkeypatch.setattr(setup, "memory_bytes", lambda: int(need * 1.5))
    setup.check_training_fits(cfg, spec, torch.device("cpu"))  # one process: fits
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(UnetkitError, match="for each of the 2 torchrun processes that share it"):
        setup.check_training_fits(cfg, spec, torch.device("cpu"))


@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_refusal_is_said_once_for_the_job_and_named_in_torchruns_summary(rank, capsys, monkeypatch, tmp_path):
    """Every rank refused a missing folder with the same line, so two ranks printed it twice, and
    torchrun's summary said only "To enable traceback see ...". Now rank 0 prints it and every rank
    writes it to torchrun's error file, which that summary shows."""
    import argparse
    import json

    from unetkit.cli import run_command
    from unetkit.errors import UnetkitError

    def refused(_args):
        raise UnetkitError("/data/images: images folder not found; check the path")

    error_file = tmp_path / "error.json"
    for name, value in {"RANK": rank, "WORLD_SIZE": "2", "TORCHELASTIC_ERROR_FILE": str(error_file)}.items():
        monkeypatch.setenv(name, value)
    assert run_command(argparse.Namespace(command="train", func=refused)) == 2
    line = "unetkit train: error: /data/images: images folder not found; check the path"
    assert json.loads(error_file.read_text())["message"]["extraInfo"]["py_callstack"] == line
    assert capsys.readouterr().err == (f"{line}\n" if rank == "0" else "")
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "gone" / "error.json"))
    assert run_command(argparse.Namespace(command="train", func=refused)) == 2  # no file: every rank says it
    assert capsys.readouterr().err == f"{line}\n"


def test_a_batch_is_counted_at_most_an_epochs_samples_and_a_batch_of_one_offered(monkeypatch):
    """One 4000^2 whole image was refused at --batch-size 4, which its epoch of one view never fills,
    and told to use a smaller patch, where --batch-size 1 trained (a red-team round)."""
    import unetkit.train.setup as setup
    from unetkit.data import MaskValues, Preprocess
    from unetkit.errors import UnetkitError
    from unetkit.models.spec import ModelSpec

    args = {"in_channels": 1, "num_classes": 2, "base_channels": 16, "depth": 3}
    spec = ModelSpec("unet", args, MaskValues([0, 255]), Preprocess(1, [0.5], [0.25]), True)
    params, maps = setup.counted(spec)
    per_sample = maps * (2048 / setup.MAPS_MEASURED_AT) ** 2  # fp32, whole 2048 px images
    monkeypatch.setattr(setup, "memory_bytes", lambda: int(setup.BYTES_PER_TRAINED_PARAMETER * params + 2 * per_sample))
    cfg = TrainConfig(images="i", masks="m", patch_size=0, scale=1.0, batch_size=4, amp="off")
    setup.check_training_fits(cfg, spec, torch.device("cpu"), largest_side=2048, samples=1)  # one view: fits
    with pytest.raises(UnetkitError, match=r"--batch-size 4 of whole images .* use --batch-size 1 or less"):
        setup.check_training_fits(cfg, spec, torch.device("cpu"), largest_side=2048, samples=8)


@pytest.mark.slow
def test_the_ranks_end_an_epoch_longer_than_the_budget_at_one_batch(tmp_path):
    """Each rank's clock says when the budget is spent; they agree on the batch, or DDP hangs."""
    images, masks = make_shapes(tmp_path, count=8, size=(32, 32))
    args = ["train", "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "run"), "--time", "3s"]
    args += [*TINY_OPTIONS[2:], "--patches-per-image", "1000"]  # no --epochs: the budget decides
    result = torchrun(*args)
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-3000:]
    assert "budget ran out" in result.stdout and load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1
