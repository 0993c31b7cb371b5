"""`unetkit train --config FILE`: precedence, errors, and reproducing a run from its config.toml."""

import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from synthetic import assert_one_line_error, make_shapes, run_cli

from unetkit.cli import build_parser, config_from_args
from unetkit.train.config import TrainConfig
from unetkit.train.config_file import config_to_toml, load_config_file


def parse_train(*args: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(["train", *map(str, args)]))


def test_precedence_defaults_then_file_then_command_line(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('epochs = 7\nlr = 0.01\nbatch-size = 2\nmask_values = [0, 255]\npatch_size = "none"\n')
    cfg = parse_train("--config", path, "--lr", "0.5")
    assert cfg.epochs == 7 and cfg.batch_size == 2 and cfg.mask_values == [0, 255]  # from the file
    assert cfg.lr == 0.5  # the command line wins
    assert cfg.patch_size == 0  # "none" in the file reads as on the command line: whole images
    assert cfg.depth == TrainConfig().depth  # neither: the default


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("epochz = 3\n", ["run.toml", "epochz", "unknown option"]),
        ('epochs = "ten"\n', ["run.toml", "epochs"]),
        ("augment = 1\n", ["run.toml", "augment"]),
        ("epochs = \n", ["run.toml", "not valid TOML"]),
        ("lr = -1\n", ["run.toml: lr = -1 is invalid", "must be"]),  # the file's line, not --lr
        ('recipe = "quick"\n', ['run.toml: recipe = "quick" is invalid', "one of auto, fast, paper"]),
        ("mask_values = [255, 0]\n", ["run.toml: mask_values = [255, 0] is invalid", "increasing order"]),
        # a red-team round: the switches' command-line spelling was "did you mean elastic?", the opposite
        ("no-elastic = true\n", ["run.toml: no-elastic is the command line's --no-elastic", "elastic = false"]),
        ("no_report = true\n", ["run.toml", "write report = false"]),
        ("multiclass = true\n", ["run.toml", "write binary = false"]),
        ("[train]\nepochs = 3\n", ["run.toml: [train] is a section", "at the top level"]),
        ("# nothing yet\n", ["run.toml: holds no options"]),
    ],
)
def test_bad_config_files_give_one_line_errors(tmp_path, capsys, text, needles):
    path = tmp_path / "run.toml"
    path.write_text(text)
    code, _, err = run_cli(capsys, "train", "--config", path)
    assert_one_line_error(code, err, *needles)


def test_missing_config_file(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--config", tmp_path / "nope.toml")
    assert_one_line_error(code, err, "nope.toml", "not found")


@given(
    st.builds(
        TrainConfig,
        images=st.text(),
        epochs=st.integers(1, 10**6),
        lr=st.floats(1e-6, 10),  # in range: a file's values are checked as it is read
        patch_size=st.none() | st.integers(1, 4096),
        grad_clip=st.just(0.0) | st.floats(0.1, 10),  # 0: off
        class_weights=st.none() | st.lists(st.floats(0, 10), max_size=4),
        mask_suffix=st.none() | st.text(max_size=5),
    )
)
def test_saved_toml_reads_back_as_the_same_config(tmp_path_factory, cfg):
    path = tmp_path_factory.mktemp("toml") / "config.toml"
    text = config_to_toml(cfg)
    tomllib.loads(text)  # valid TOML
    path.write_text(text)
    assert load_config_file(path) == cfg  # out and resume are None in both


def test_rerun_from_saved_config_gives_the_same_metrics(tmp_path, capsys):
    images, masks = make_shapes(tmp_path / "data", count=6, size=(32, 32))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'images = "{images}"\nmasks = "{masks}"\nepochs = 2\nbase_channels = 4\ndepth = 2\n'
        'patch_size = 32\nbatch_size = 2\namp = "off"\nchannels_last = "off"\nprogress = false\nworkers = 0\n'
    )
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_cli(capsys, "train", "--config", recipe, "--out", first)[0] == 0
    saved = first / "config.toml"
    assert "out =" not in saved.read_text()
    assert run_cli(capsys, "train", "--config", saved, "--out", second)[0] == 0

    def metrics(run):  # every column but the wall-clock seconds
        return [line.rsplit(",", 1)[0] for line in (run / "metrics.csv").read_text().splitlines()]

    assert metrics(first) == metrics(second) and len(metrics(first)) == 3


def test_a_config_file_spells_options_as_the_command_line_does(tmp_path):
    """An axis letter in either case, as `--channel-axis c` takes it."""
    path = tmp_path / "run.toml"
    path.write_text('channel-axis = "c"\nplane_axis = "z"\n')
    cfg = load_config_file(path)
    assert (cfg.channel_axis, cfg.plane_axis) == ("C", "Z")


def test_a_config_files_weights_files_are_taken_beside_it(tmp_path, monkeypatch):
    """encoder_weights = "enc.pt" in a config file was read from the folder the command ran in (a
    red-team round), where every other path in the file is taken against the file's folder; a
    file of that name in the working folder would have been used silently."""
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "enc.pt").write_bytes(b"")
    (tmp_path / "enc.pt").write_bytes(b"")  # the working folder's, which must not be taken
    monkeypatch.chdir(tmp_path)
    path = folder / "run.toml"
    path.write_text('encoder = "resnet18"\nencoder_weights = "enc.pt"\n')
    assert parse_train("--config", path).encoder_weights == str(folder / "enc.pt")
    (folder / "imagenet").mkdir()  # a folder of that name beside it: still the word, as the loader reads it
    for word in ("imagenet", "none"):  # words, not files
        path.write_text(f'encoder = "resnet18"\nencoder_weights = "{word}"\n')
        assert parse_train("--config", path).encoder_weights == word
    path.write_text('init_from = "../runs/a/best.pt"\n')
    assert parse_train("--config", path).init_from == str(tmp_path / "runs" / "a" / "best.pt")


def test_a_files_switch_is_turned_back_on_from_the_command_line(tmp_path):
    """`report = false` (or progress, augment) in a file could not be overridden: there was only
    --no-report (a red-team round). Each switch now has both forms."""
    path = tmp_path / "run.toml"
    path.write_text("report = false\nprogress = false\naugment = false\ntensorboard = true\n")
    cfg = parse_train("--config", path, "--report", "--progress", "--augment", "--no-tensorboard")
    assert (cfg.report, cfg.progress, cfg.augment, cfg.tensorboard) == (True, True, True, False)
    assert not parse_train("--config", path).report


def test_a_json_config_is_pointed_to_its_toml_only_where_there_is_one(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text("{}")
    code, _, err = run_cli(capsys, "train", "--config", path)
    assert_one_line_error(code, err, "c.json", "not JSON")
    assert "config.toml" not in err  # there is none beside it to point to
    (tmp_path / "config.toml").write_text("epochs = 3\n")
    code, _, err = run_cli(capsys, "train", "--config", path)
    assert_one_line_error(code, err, "c.json", str(tmp_path / "config.toml"))


def test_a_run_of_pairs_given_in_python_says_in_its_config_how_to_run_it_again():
    """Its config.toml held images = "" and re-running it said only "train needs --images" (a
    red-team round): the file says its pairs came from Python and what to add."""
    from unetkit.train import TrainConfig
    from unetkit.train.config_file import config_to_toml

    text = config_to_toml(TrainConfig(images="", masks="", epochs=1))
    assert "# Its images were pairs given in Python (run_training's train_pairs), not folders: add" in text
    assert "pairs given in Python" not in config_to_toml(TrainConfig(images="a", masks="b", epochs=1))
