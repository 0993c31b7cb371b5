import shutil

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from skimage.measure import label
from synthetic import TINY_TRAIN, make_shapes

from unetkit.cli import main
from unetkit.inference import InferenceOptions, Predictor, predict_tiled, with_tta
from unetkit.inference.tiling import Blend, gaussian_window, tile_boxes, tile_starts
from unetkit.models import UNet


def eval_model_with_batchnorm_stats() -> UNet:
    torch.manual_seed(0)
    model = UNet(1, 3, base_channels=4, depth=2)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def forward_of(model):
    def forward(x):
        with torch.no_grad():
            return model(x)

    return forward


@pytest.mark.parametrize("size", [(150, 130), (97, 203), (40, 50)])
def test_tiled_prediction_matches_whole_image(size):
    model = eval_model_with_batchnorm_stats()
    image = torch.randn(1, *size)
    whole = forward_of(model)(image[None])[0]
    tiled = predict_tiled(forward_of(model), image, 3, tile=64, overlap=32, batch_size=3)
    assert tiled.shape == whole.shape
    difference = (torch.softmax(tiled, 0) - torch.softmax(whole, 0)).abs().max()
    assert difference < 0.05
    assert (tiled.argmax(0) == whole.argmax(0)).float().mean() >= 0.999


@pytest.mark.parametrize(("tile", "overlap"), [(64, 16), (64, 40), (64, 0), (64, 61)])
def test_blended_bands_taken_row_by_row_equal_the_whole_image_and_reuse_their_memory(tile, overlap):
    """Out of core a Blend holds a band and gives rows as soon as no later tile reaches them; the
    rows it keeps move up in place, so later bands reuse the first band's memory."""
    height, width = 300, 170
    boxes = tile_boxes(height, width, tile, overlap)
    torch.manual_seed(0)
    logits = {box: torch.randn(2, tile, tile) for box in boxes}
    whole = Blend(2, width, (tile, tile), height)
    for box in boxes:
        whole.add(box, logits[box])
    expected = whole.take()
    band, pieces, buffers = Blend(2, width, (tile, tile)), [], set()
    tops = tile_starts(height, tile, overlap)
    for index, top in enumerate(tops):
        for box in (b for b in boxes if b[0] == top):
            band.add(box, logits[box])
        final = tops[index + 1] if index + 1 < len(tops) else height
        pieces.append(band.take(final - band.top))
        buffers.add(band.logits.data_ptr() if band.rows else None)
    assert torch.equal(torch.cat(pieces, 1), expected)
    assert len(buffers - {None}) == 1  # one buffer for every band that holds rows
    assert band.rows == 0 and band.logits.numel() == 0  # all taken: the memory goes


def test_tiles_cover_every_pixel_and_stay_inside():
    for height, width in ((100, 100), (513, 70), (20, 1000)):
        cover = torch.zeros(height, width)
        for top, left, h, w in tile_boxes(height, width, 64, 16):
            assert top >= 0 and left >= 0 and top + h <= height and left + w <= width
            cover[top : top + h, left : left + w] += 1
        assert cover.min() >= 1
    window = gaussian_window(64, 64)
    assert window.max() == 1 and window.min() > 0 and window[32, 32] > window[0, 0]


def test_tta_keeps_shape_and_is_deterministic():
    model = eval_model_with_batchnorm_stats()
    for shape in ((2, 1, 32, 32), (1, 1, 24, 40)):  # square adds rotations, non-square only flips
        x = torch.randn(*shape)
        first, second = with_tta(forward_of(model))(x), with_tta(forward_of(model))(x)
        assert first.shape == (shape[0], 3, *shape[2:])
        assert torch.equal(first, second)


def test_tta_of_an_upright_model_shows_only_the_mirror():
    """A street model never saw its sky below its road: --tta averages the image and its
    left-right mirror only, even for square inputs, where other models also get turns."""
    seen = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return x.repeat(1, 2, 1, 1)

    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = with_tta(forward, upright=True)(x)
    assert len(seen) == 2 and torch.equal(seen[0], x) and torch.equal(seen[1], x.flip(-1))
    torch.testing.assert_close(out, x.repeat(1, 2, 1, 1))  # each view mapped back before averaging
    seen.clear()
    with_tta(forward)(x)
    assert len(seen) == 6  # identity, two mirrors, three turns


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    images, masks = make_shapes(root, count=5, size=(48, 64))
    assert (
        main(
            [
                "train",
                "--images",
                str(images),
                "--masks",
                str(masks),
                "--out",
                str(root / "run"),
                *TINY_TRAIN,
                "--epochs",
                "2",
            ]
        )
        == 0
    )
    return root, images, masks, root / "run" / "best.pt"


def test_predict_tiled_tta_probabilities_and_legend(trained, tmp_path, capsys):
    _root, images, _masks, checkpoint = trained
    code = main(
        [
            "predict",
            "--checkpoint",
            str(checkpoint),
            str(images),
            "--out",
            str(tmp_path / "p"),
            "--tiling",
            "on",
            "--tile",
            "32",
            "--overlap",
            "8",
            "--tta",
            "--probabilities",
            "--overlay",
            "--no-progress",
        ]
    )
    assert code == 0
    probabilities = tifffile.imread(tmp_path / "p" / "img00_probs.tif")
    assert probabilities.shape == (2, 48, 64) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(0), 1, atol=1e-5)
    mask = np.asarray(Image.open(tmp_path / "p" / "img00.png"))
    assert np.array_equal(mask == 255, probabilities[1] > 0.5)
    assert np.asarray(Image.open(tmp_path / "p" / "img00_overlay.png")).shape == (48, 64, 3)


def test_a_folder_predict_wrote_is_not_taken_for_images(trained, tmp_path, capsys):
    """Predicting predict's own folder took its masks, overlays and 2-page probability TIFFs as
    photos (a red-team round): refused where nothing else is there; beside an image, left out, said."""
    import shutil

    _root, images, _masks, checkpoint = trained
    first = tmp_path / "first"
    args = ["--checkpoint", str(checkpoint), "--overlay", "--probabilities", "--no-progress"]
    assert main(["predict", *args, str(images), "--out", str(first)]) == 0
    capsys.readouterr()
    assert main(["predict", *args, str(first), "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert "every image in it is an output predict wrote" in err and err.count("\n") == 1
    shutil.copy(images / "img00.png", first / "new.png")
    assert main(["predict", *args, str(first), "--out", str(tmp_path / "new")]) == 0
    assert "15 file(s) predict wrote there" in capsys.readouterr().out  # 5 masks, 5 overlays, 5 TIFFs
    assert sorted(p.name for p in (tmp_path / "new").iterdir() if not p.name.startswith(".")) == [
        "new.png", "new_overlay.png", "new_probs.tif"]  # fmt: skip


def test_onnx_export_matches_pytorch_and_predicts_the_same_masks(trained, tmp_path, capsys):
    _root, images, _masks, checkpoint = trained
    assert main(["export", "--checkpoint", str(checkpoint), "--onnx", str(tmp_path / "m.onnx")]) == 0
    said = capsys.readouterr().out
    assert "max abs logit difference" in said and "height and width are multiples of" in said
    onnx_predictor = Predictor(tmp_path / "m.onnx")
    torch_predictor = Predictor(checkpoint, amp="off", options=InferenceOptions(backend="torch"))
    for size in ((48, 64), (37, 91)):  # two sizes, one export; 37x91 is not a multiple of 4
        image = np.random.default_rng(1).random((*size, 1), dtype=np.float32)
        np.testing.assert_allclose(onnx_predictor.logits(image), torch_predictor.logits(image), atol=1e-4)
    main(["predict", "--onnx", str(tmp_path / "m.onnx"), str(images), "--out", str(tmp_path / "onnx")])
    main(
        ["predict", "--checkpoint", str(checkpoint), str(images), "--out", str(tmp_path / "torch"), "--amp", "off"]
        + ["--backend", "torch"]
    )
    for mask in (tmp_path / "torch").glob("*.png"):
        assert np.array_equal(np.asarray(Image.open(mask)), np.asarray(Image.open(tmp_path / "onnx" / mask.name)))


def test_inference_options_are_checked():
    from unetkit.errors import UnetkitError

    with pytest.raises(UnetkitError, match="--overlap 64 must be .* smaller than --tile 32"):
        InferenceOptions(tile=32, overlap=64)
    with pytest.raises(UnetkitError, match="--tiling"):
        InferenceOptions(tiling="sometimes")
    with pytest.raises(UnetkitError, match="--backend"):
        InferenceOptions(backend="tensorrt")


def test_check_reports_a_clean_data_set(tmp_path, capsys):
    images, masks = make_shapes(tmp_path, count=4)
    assert main(["check", "--images", str(images), "--masks", str(masks), "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "pairs: 4" in out and "mask values (2)" in out and "ok: training would work" in out


def test_check_warns_of_a_mask_value_only_one_mask_holds(tmp_path, capsys):
    """train takes its classes from its training masks: a value in one mask of several is refused
    where the validation split takes that mask, so check says so (and training can still work)."""
    images, masks = make_shapes(tmp_path, count=4)
    mask = np.asarray(Image.open(masks / "img01.png")).copy()
    mask[:3, :3] = 7
    Image.fromarray(mask).save(masks / "img01.png")
    assert main(["check", "--images", str(images), "--masks", str(masks)]) == 0
    out = capsys.readouterr().out
    assert (
        "mask value(s) 7 (only in img01.png's mask)" in out and "--mask-values" in out and "ok: training would" in out
    )


def test_check_counts_the_regions_of_one_value_masks_given_as_instances_and_says_so(tmp_path, capsys):
    """0/255 masks with --instance-masks were approved as one object a mask (a red-team round)."""
    images, masks = make_shapes(tmp_path, count=4)
    for path in masks.iterdir():  # a second object in each mask, of the same value
        mask = np.asarray(Image.open(path)).copy()
        mask[-4:, -4:] = mask.max()
        Image.fromarray(mask).save(path)
    regions = sum(label(np.asarray(Image.open(path)) > 0, connectivity=1).max() for path in sorted(masks.iterdir()))
    assert main(["check", "--images", str(images), "--masks", str(masks), "--instance-masks"]) == 0
    out = capsys.readouterr().out
    assert f"objects: {regions} " in out and regions > 4
    assert "4 of 4 instance masks hold one value over several regions" in out and "its own id" in out


def test_check_warns_of_images_of_several_bit_depths_as_train_notes_them(tmp_path, capsys):
    """Each file is scaled by its own type's maximum: a 16-bit file of 12-bit data reads 16x darker
    than the 8-bit images, so a mixed set is said (and training can still work)."""
    images, masks = make_shapes(tmp_path, count=4)
    dim = np.asarray(Image.open(images / "img01.png")).astype(np.uint16) * 16  # 12-bit data in 16 bits
    Image.fromarray(dim).save(images / "img01.png")
    assert main(["check", "--images", str(images), "--masks", str(masks)]) == 0
    out = capsys.readouterr().out
    assert "mix bit depths: 3 8-bit (e.g. img00.png), 1 16-bit (e.g. img01.png)" in out and "--normalize image" in out


@pytest.mark.parametrize(
    "breakage, needle",
    [
        ("orphan_mask", "mask has no image"),
        ("missing_mask", "image has no mask"),
        ("size", "mask is 10x10"),
        ("colour", "channels with different values"),
        ("corrupt", "cannot read"),
        ("jpeg_noise", "distinct values"),
        ("one_value", "only the value"),
        ("tiny", "02.png: the image is 3x2 pixels, too small to segment"),
    ],
)
def test_check_names_each_problem(tmp_path, capsys, breakage, needle):
    images, masks = make_shapes(tmp_path, count=4)
    if breakage == "orphan_mask":
        Image.fromarray(np.zeros((48, 48), np.uint8)).save(masks / "extra.png")
    elif breakage == "missing_mask":
        (masks / "img01.png").unlink()
    elif breakage == "size":
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / "img01.png")
    elif breakage == "colour":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(
            masks / "img01.png"
        )
    elif breakage == "corrupt":
        (images / "img02.png").write_bytes(b"broken")
    elif breakage == "jpeg_noise":
        for mask in masks.iterdir():
            Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)).save(mask)
    elif breakage == "tiny":
        Image.fromarray(np.zeros((2, 3), np.uint8)).save(images / "img02.png")
        Image.fromarray(np.zeros((2, 3), np.uint8)).save(masks / "img02.png")
    elif breakage == "one_value":
        for mask in masks.iterdir():
            Image.fromarray(np.zeros((48, 48), np.uint8)).save(mask)
    assert main(["check", "--images", str(images), "--masks", str(masks)]) == 1
    out = capsys.readouterr().out
    assert needle in out and "NOT ok" in out


def test_safetensors_export_from_the_cli_predicts_like_the_checkpoint(trained, tmp_path, capsys):
    _root, images, _masks, checkpoint = trained
    assert main(["export", "--checkpoint", str(checkpoint), "--safetensors", str(tmp_path / "m.safetensors")]) == 0
    image = np.random.default_rng(2).random((40, 52, 1), dtype=np.float32)
    torch_only = InferenceOptions(backend="torch")  # both sides on PyTorch, not whichever timed faster
    exported = Predictor(tmp_path / "m.safetensors", amp="off", options=torch_only).logits(image)
    torch.testing.assert_close(exported, Predictor(checkpoint, amp="off", options=torch_only).logits(image))
    assert main(["export", "--checkpoint", str(checkpoint)]) == 2


def test_checkpoint_runs_on_onnxruntime_when_asked_or_when_it_is_faster(trained, monkeypatch):
    import unetkit.inference.predictor as predictor_module

    _root, _images, _masks, checkpoint = trained
    image = np.random.default_rng(2).random((45, 70, 1), dtype=np.float32)
    on_torch = Predictor(checkpoint, amp="off", options=InferenceOptions(backend="torch"))
    on_ort = Predictor(checkpoint, amp="off", options=InferenceOptions(backend="onnxruntime"))
    assert (on_torch.backend, on_ort.backend) == ("torch", "onnxruntime")
    np.testing.assert_allclose(on_ort.logits(image), on_torch.logits(image), atol=1e-4)
    # auto times both and keeps the faster, but only where PyTorch would run fp32 on the CPU.
    speeds = iter([2.0, 1.0])  # PyTorch is timed first
    monkeypatch.setattr(predictor_module, "fastest_call", lambda call, repeats: next(speeds))
    timed = Predictor(checkpoint, amp="off")
    assert timed.backend == "torch"  # timed at the first forward in memory, not before
    timed.logits(image)
    assert timed.backend == "onnxruntime"
    speeds = iter([1.0, 2.0])
    timed = Predictor(checkpoint, amp="off")
    timed.choose_backend_now()
    assert timed.backend == "torch"
    Predictor(checkpoint, amp="bf16").choose_backend_now()  # no timing needed: bf16 stays on PyTorch


def test_auto_backend_stays_on_pytorch_when_the_export_fails(trained, monkeypatch):
    import unetkit.inference.export.onnx as export_module

    def broken_export(*args, **kwargs):
        raise RuntimeError("exporter bug")

    monkeypatch.setattr(export_module, "export_onnx", broken_export)
    _root, _images, _masks, checkpoint = trained
    fallback = Predictor(checkpoint, amp="off")
    fallback.choose_backend_now()  # the export is tried here, and its failure keeps PyTorch
    assert fallback.backend == "torch"
    with pytest.raises(RuntimeError, match="exporter bug"):
        Predictor(checkpoint, amp="off", options=InferenceOptions(backend="onnxruntime"))


def test_backend_choices_that_cannot_hold_are_refused_or_fall_back(trained, tmp_path, monkeypatch):
    import unetkit.inference.export.onnx as export_module
    from unetkit.errors import UnetkitError

    _root, _images, _masks, checkpoint = trained
    assert main(["export", "--checkpoint", str(checkpoint), "--onnx", str(tmp_path / "m.onnx")]) == 0
    with pytest.raises(UnetkitError, match="--backend torch pass --checkpoint"):
        Predictor(tmp_path / "m.onnx", options=InferenceOptions(backend="torch"))

    # An export whose logits drift from PyTorch's is not used.
    def drifting_export(state, path):
        shutil.copy(tmp_path / "m.onnx", path)
        return 0.5

    monkeypatch.setattr(export_module, "export_onnx", drifting_export)
    fallback = Predictor(checkpoint, amp="off")
    fallback.choose_backend_now()  # the export is tried here, and its failure keeps PyTorch
    assert fallback.backend == "torch"
    with pytest.raises(UnetkitError, match="differ from PyTorch's by 0.5"):
        Predictor(checkpoint, amp="off", options=InferenceOptions(backend="onnxruntime"))


@pytest.mark.parametrize("amp", ["off", "auto"])
def test_the_predictor_fuses_each_convolution_with_its_relu_and_keeps_the_logits(amp):
    """On a CPU the Predictor runs blocks.ConvReLU where this build of torch has oneDNN's fused call;
    its logits are those of the model with BatchNorm folded and nothing fused."""
    from pathlib import Path

    import unetkit
    from unetkit.models.blocks import ConvReLU, fuse_conv_bn
    from unetkit.models.checkpoint import load_checkpoint, model_from_checkpoint

    checkpoint = Path(unetkit.__file__).parent / "zoo" / "em-membranes.safetensors"
    predictor = Predictor(checkpoint, amp=amp, options=InferenceOptions(backend="torch"))
    assert any(isinstance(module, ConvReLU) for module in predictor.model.modules())
    plain = fuse_conv_bn(model_from_checkpoint(load_checkpoint(checkpoint)).eval())
    x = torch.rand(2, 1, 96, 80)
    with torch.inference_mode(), predictor.amp.autocast(predictor.device):
        expected = plain(x.contiguous(memory_format=predictor.memory_format)).float()
    tolerance = 1e-4 if predictor.amp.dtype is None else 2e-2 * float(expected.abs().max())
    torch.testing.assert_close(predictor.forward(x), expected, rtol=tolerance, atol=tolerance)


def test_the_overlay_legend_grows_with_the_image():
    """At 12 px a line the legend was a speck on a 4000 x 3000 photo (a red-team round)."""
    from unetkit.inference.outputs import LEGEND_SIDE, overlay

    labels = ["background", "road", "car"]
    for side, scale in ((360, 1), (4 * LEGEND_SIDE, 4)):
        image = np.full((side, side, 3), 0.8, np.float32)
        drawn = overlay(image, np.zeros((side, side), np.int64), labels)
        box_bottom = 4 * scale + 12 * scale * len(labels)
        assert (drawn[box_bottom - 1, 3] == 0).all() and (drawn[box_bottom + 2, 3] > 0).all()
        text = drawn[: box_bottom - 1, 18 * scale :]
        assert (text > 200).any()  # the names, in white


def test_the_overlay_legend_says_class_0_is_not_tinted():
    """Overlays leave class 0 clear; its legend line showed a gray swatch, read as the sky's colour
    in a street scene whose class 0 is sky (a red-team round). Its swatch is empty and it says so."""
    from unetkit.inference.outputs import class_colour, overlay

    image = np.full((200, 300, 3), 0.8, np.float32)
    ids = np.zeros((200, 300), np.int64)
    ids[150:, :] = 1
    drawn = overlay(image, ids, ["value 0", "value 1"])
    assert (drawn[8, 9] == 0).all()  # class 0's swatch: the box's black inside a white outline
    assert (drawn[5, 5] == 255).all()
    assert np.array_equal(drawn[20, 9], class_colour(1).astype(np.uint8))
    assert (drawn[100, 150] == 204).all() and not (drawn[180, 150] == 204).all()  # 0 clear, 1 tinted
    box_right = 10 + int(np.flatnonzero(drawn[3, 10:, 0] == 204)[0])  # where the black box ends

    def text_end(line: np.ndarray) -> int:  # the last column of light text in the box
        return int(np.flatnonzero((line[:, :box_right] > 120).any(axis=(0, 2))).max())

    assert text_end(drawn[4:16]) > text_end(drawn[16:28]) + 40  # "value 0 (not tinted)", "value 1"


def test_a_threshold_given_to_a_model_of_classes_is_said_to_change_nothing(monkeypatch):
    """The nuclei model (4 classes) took --threshold 0.95 in silence and wrote the same files."""
    from unetkit.runtime import notes
    from unetkit.runtime.notes import notes_to

    monkeypatch.setattr(notes, "_SAID", set())  # said once a process: whatever ran before in it
    said: list[str] = []
    with notes_to(said.append):
        Predictor.from_pretrained("nuclei", options=InferenceOptions(threshold=0.95))
        Predictor.from_pretrained("nuclei")  # the default: nothing to say
    assert len(said) == 1 and "--threshold 0.95 cuts binary models only: this model has 4 classes" in said[0]


def test_an_image_of_pure_noise_is_said_to_hold_no_signal():
    """The nuclei model found 450 nuclei in camera noise: scaled by its own percentiles, noise fills
    the whole range (a red-team round). Such an image is named; one with nuclei in the same noise,
    and a dataset-normalised model's input, are not."""
    from unetkit.runtime.notes import notes_to

    rng = np.random.default_rng(0)
    noise = rng.poisson(200, (128, 160)).astype(np.uint16)
    nuclei = noise.copy()
    yy, xx = np.mgrid[:128, :160]
    for y, x in ((30, 40), (90, 110), (60, 130)):
        nuclei[(yy - y) ** 2 + (xx - x) ** 2 < 64] += 400
    said: list[str] = []
    with notes_to(said.append):
        predictor = Predictor.from_pretrained("nuclei")
        predictor.logits(noise, "empty.tif")
        predictor.logits(nuclei, "cells.tif")
        predictor.logits(np.zeros((64, 64), np.uint16), "black.tif")  # flat: nothing at all
    assert len(said) == 2, said
    assert said[0].startswith("empty.tif: no signal above its noise") and said[1].startswith("black.tif")


def test_predict_says_which_classes_instances_cuts_objects_of(monkeypatch, tmp_path):
    """A street model's --instances gave no sky objects, unsaid: its class 0 is taken as the
    background (a red-team round). Said for models of several classes, not for binary ones."""
    from types import SimpleNamespace

    from unetkit.data import MaskValues
    from unetkit.inference.outputs import PredictOutputs
    from unetkit.predict import say_what_the_outputs_hold
    from unetkit.runtime import notes
    from unetkit.runtime.notes import notes_to

    said: list[str] = []
    with notes_to(said.append):
        for values, instances in (([0, 255], True), ([0, 1, 2, 3], False), ([0, 1, 2, 3], True)):
            monkeypatch.setattr(notes, "_SAID", set())
            predictor = SimpleNamespace(mask_values=MaskValues(values))
            say_what_the_outputs_hold(predictor, PredictOutputs(tmp_path, instances=instances))
    assert said == ["--instances: objects are cut of the values 1, 2, 3; value 0 is the background (no objects)"]
