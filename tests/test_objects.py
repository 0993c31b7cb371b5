"""Objects: the object scores against hand-computed values, seeded watershed on touching discs,
`predict --instances` files, the object scores in `evaluate --json`, and the rule chosen on a
run's validation images."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage
from skimage.measure import label
from skimage.metrics import adapted_rand_error, contingency_table, variation_of_information
from skimage.morphology import remove_small_holes, remove_small_objects
from skimage.segmentation import watershed
from synthetic import run_cli

from unetkit.data import Pair
from unetkit.data.fingerprint import PairScan, looks_like_instances
from unetkit.data.objects import instance_classes, mask_objects, relabel, true_objects
from unetkit.inference.objects import ObjectRule, object_table, split_objects
from unetkit.models.checkpoint import load_checkpoint
from unetkit.scoring.objects import contingency, mean_scores, object_scores


def two_squares() -> np.ndarray:
    true = np.zeros((10, 10), dtype=np.int64)
    true[1:5, 1:5] = 1  # 16 pixels
    true[6:9, 6:9] = 2  # 9 pixels
    return true


def test_a_merge_scored_by_hand():
    true = two_squares()
    merged = (true > 0).astype(np.int64)
    scores = object_scores(true, merged)
    # Rand over pixel pairs (self-pairs left out): same-object pairs in both 16^2 + 9^2 - 25 = 312,
    # in the prediction 25^2 - 25 = 600, in the truth 312: precision 0.52, recall 1.
    assert scores["adapted_rand_error"] == pytest.approx(1 - 2 * 0.52 / 1.52)
    # Merge: H(true | predicted) = the entropy of (16/25, 9/25) bits; nothing is split.
    assert scores["vi_merge"] == pytest.approx(-(0.64 * math.log2(0.64) + 0.36 * math.log2(0.36)))
    assert scores["vi_split"] == pytest.approx(0, abs=1e-12)
    # The merged object overlaps square 1 with IoU 16/25 = 0.64: one match of 2 true, 1 predicted.
    assert (scores["matches"], scores["precision"], scores["recall"]) == (1, 1.0, 0.5)
    assert scores["f1"] == pytest.approx(2 / 3) and scores["matched_iou"] == pytest.approx(0.64)
    # AP: IoU 0.64 clears thresholds 0.5, 0.55, 0.6 (1 / (2 + 1 - 1) each), not the other 7.
    assert scores["ap"] == pytest.approx(3 * 0.5 / 10)


def test_a_split_scored_by_hand():
    true = two_squares()
    split = true.copy()
    split[1:5, 3:5] = 3  # square 1 cut into two halves of IoU 0.5 each: not a match (IoU must exceed 0.5)
    scores = object_scores(true, split)
    assert scores["vi_split"] == pytest.approx(16 / 25 * 1.0)  # half the 16 pixels go each way: 1 bit
    assert scores["vi_merge"] == pytest.approx(0, abs=1e-12)
    assert (scores["matches"], scores["true_objects"], scores["predicted_objects"]) == (1, 2, 3)
    assert scores["ap"] == pytest.approx(1 / (2 + 3 - 1))  # square 2 matches at every threshold


def test_perfect_and_empty_answers():
    true = two_squares()
    perfect = object_scores(true, true)
    assert perfect["adapted_rand_error"] == pytest.approx(0) and perfect["ap"] == 1.0 and perfect["f1"] == 1.0
    empty = np.zeros_like(true)
    nothing = object_scores(empty, empty)
    assert nothing["ap"] == 1.0 and math.isnan(nothing["adapted_rand_error"])
    means = mean_scores([perfect, nothing])
    assert means["adapted_rand_error"] == pytest.approx(0) and means["true_objects"] == 2


@pytest.mark.parametrize("density", [0.6, 0.995])  # thousands of labels (np.unique's path), a few (bincount's)
def test_one_contingency_table_gives_scikit_images_scores(density):
    """The table counted once, and every score from it, against scikit-image computing each score
    from its own table: with predicted objects on the true background, ids skipped, and none."""
    rng = np.random.default_rng(1)
    true = label(rng.random((120, 90)) > density)
    for pred in (label(rng.random((120, 90)) > density) * 3, np.zeros_like(true)):
        reference = contingency_table(true, pred, ignore_labels=(0,)).toarray()
        assert np.array_equal(contingency(true, pred).toarray(), reference)
        scores = object_scores(true, pred)
        rand = adapted_rand_error(true, pred, ignore_labels=(0,))[0] if pred.any() else 1.0  # nothing found: 1
        assert scores["adapted_rand_error"] == rand
        split, merge = variation_of_information(true, pred, ignore_labels=(0,))
        assert scores["vi_split"] == pytest.approx(split, abs=1e-12)
        assert scores["vi_merge"] == pytest.approx(merge, abs=1e-12)


def test_pooled_ap_sums_objects_over_images_before_dividing():
    """StarDist's DSB2018 score: TP / (TP + FP + FN) over the folder, not a mean of per-image ratios."""
    true = two_squares()
    merged = object_scores(true, (true > 0).astype(np.int64))  # 1 match at IoU 0.64 of 2 true, 1 predicted
    perfect = object_scores(true, true)  # 2 matches of 2 and 2 at every threshold
    means = mean_scores([merged, perfect])
    assert means["ap50"] == pytest.approx(3 / (4 + 3 - 3))  # TP 3, FN 1, FP 0
    # Thresholds 0.5-0.6 (3 of the 9 up to 0.9): TP 3 of 4 + 3 objects; 0.65-0.9 (6): TP 2, FP 1, FN 2.
    assert means["ap50_90"] == pytest.approx((3 * 3 / 4 + 6 * 2 / 5) / 9)
    assert mean_scores([object_scores(np.zeros_like(true), np.zeros_like(true))])["ap50"] is None


def touching_discs(rows: int = 6, cols: int = 7, radius: int = 9, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Discs packed so that neighbours touch, and a probability map that is sure inside each disc
    and unsure (0.6: still foreground at 0.5) in the seams between them, as a model's is."""
    rng = np.random.default_rng(seed)
    spacing = 2 * radius - 2  # closer than two radii: every disc touches its neighbours
    size = (rows * spacing + 2 * radius, cols * spacing + 2 * radius)
    centres = [
        (radius + r * spacing + rng.integers(-1, 2), radius + c * spacing + rng.integers(-1, 2))
        for r in range(rows)
        for c in range(cols)
    ]
    yy, xx = np.mgrid[: size[0], : size[1]]
    distance = np.stack([np.hypot(yy - cy, xx - cx) for cy, cx in centres])
    nearest = distance.argmin(axis=0)
    inside = distance.min(axis=0) <= radius
    truth = np.where(inside, nearest + 1, 0)
    seams = ndimage.morphological_gradient(truth, size=3) > 0
    p = np.where(inside, 0.99, 0.02)
    p[seams & inside] = 0.6
    return np.stack([1 - p, p]), truth


def test_watershed_counts_touching_discs():
    probabilities, truth = touching_discs()
    assert label(probabilities[1] > 0.5, connectivity=1).max() == 1  # thresholding: one blob
    labels, classes = split_objects(probabilities, ObjectRule())
    found, true_count = int(labels.max()), int(truth.max())
    assert abs(found - true_count) <= 0.05 * true_count
    assert set(classes[1:]) == {1}
    assert object_scores(truth, labels.astype(np.int64))["adapted_rand_error"] < 0.05


def one_watershed(core: np.ndarray, region: np.ndarray, rule: ObjectRule) -> np.ndarray:
    """The reference: one seeded watershed of the whole region (split_region before issue 36), and
    each part of the region without a core as one object."""
    region = remove_small_holes(region, max_size=rule.max_hole) if rule.max_hole else region
    seeds = label(region & (core > rule.seed), connectivity=1)
    parts = label(region, connectivity=1)
    orphans = region & ~np.isin(parts, np.unique(parts[seeds > 0]))
    seeds[orphans] = parts[orphans] + seeds.max()
    objects = watershed(-core, seeds, mask=region)
    objects = remove_small_objects(objects, max_size=rule.min_size - 1) if rule.min_size > 1 else objects
    _, inverse = np.unique(objects, return_inverse=True)
    return inverse.reshape(objects.shape)


@pytest.mark.parametrize("seed", range(6))
def test_the_watershed_of_shared_parts_from_the_cores_edges_labels_as_one_watershed_of_the_whole(seed):
    """Parts with one core, parts with none and parts of several cores, as blurred noise makes them."""
    rng = np.random.default_rng(seed)
    plane = ndimage.gaussian_filter(rng.random((300, 260)), 4 + seed)
    plane = (plane - plane.min()) / (plane.max() - plane.min())
    rule = ObjectRule(seed=0.75, flood=0.45 + 0.03 * seed, smooth=0.0, min_size=1 + 5 * (seed % 3),
                      max_hole=10 * (seed % 2))  # fmt: skip
    labels, _ = split_objects(np.stack([1 - plane, plane]), rule)
    reference = one_watershed(plane, plane > rule.flood, rule)
    assert labels.max() > 5 and np.array_equal(labels, reference)


def test_relabel_keeps_the_order_of_ids_far_apart_or_close():
    close = np.array([[0, 7, 7], [3, 0, 9]], np.uint32)
    far = close.astype(np.int64) * 10**9
    assert relabel(close).tolist() == relabel(far).tolist() == [[0, 2, 2], [1, 0, 3]]
    assert relabel(np.array([[5, 6]])).tolist() == [[1, 2]]  # no background: ids from 1


def test_object_table_matches_the_label_image():
    probabilities, _ = touching_discs(rows=2, cols=2)
    labels, classes = split_objects(probabilities, ObjectRule())
    table = object_table(labels, classes, probabilities)
    assert list(table["id"]) == list(range(1, labels.max() + 1))
    assert list(table["area"]) == list(np.bincount(labels.ravel())[1:])
    assert np.all((0.5 < table["mean_probability"]) & (table["mean_probability"] <= 1))


def test_true_objects_are_4_connected_per_class_and_skip_ignored_pixels():
    class_ids = np.array([[1, 0, 2], [0, 1, 2], [255, 255, 0]])
    objects = true_objects(class_ids, [1, 2], ignore_id=255)
    assert objects.max() == 3  # two diagonal 1s are two objects (4-connected), the 2s one
    assert objects[2, 0] == 0


def test_predict_instances_writes_labels_and_table(rgb_run, tmp_path, capsys):
    _, images, _, checkpoint = rgb_run
    code, _, _ = run_cli(capsys, "predict", "--checkpoint", checkpoint, images, "--out", tmp_path, "--instances")
    assert code == 0
    labels = tifffile.imread(tmp_path / "img00_objects.tif")
    assert labels.dtype == np.uint16
    with open(tmp_path / "img00_objects.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["id"]) for r in rows] == sorted(set(np.unique(labels)) - {0})
    assert [int(r["area"]) for r in rows] == [int((labels == int(r["id"])).sum()) for r in rows]
    assert all(r["mask_value"] == "255" for r in rows)


def test_evaluate_reports_objects_and_training_chose_the_rule(rgb_run, tmp_path, capsys):
    _, images, masks, checkpoint = rgb_run
    report_path = tmp_path / "eval.json"
    code, out, _ = run_cli(
        capsys, "evaluate", "--checkpoint", checkpoint, "--images", images, "--masks", masks, "--json", report_path
    )
    assert code == 0 and "adapted Rand error" in out
    report = json.loads(report_path.read_text())
    objects = report["objects"]
    assert objects["true_objects"] == 5  # one shape per image
    assert 0 <= objects["adapted_rand_error"] <= 1 and 0 <= objects["ap"] <= 1
    assert objects["pixel_error"] == pytest.approx(1 - report["pixel_accuracy"])
    assert all("adapted_rand_error" in row for row in report["per_image"])
    rule = load_checkpoint(checkpoint)["object_rule"]  # chosen on the run's validation image
    assert objects["rule"] == rule and set(rule) == set(ObjectRule().to_dict())
    assert "true = 4-connected components of the mask" in objects["about"]


def test_instance_masks_become_classes_and_keep_their_objects():
    labels = np.zeros((6, 9), dtype=np.uint16)
    labels[1:5, 1:4] = 7
    labels[1:5, 4:8] = 300  # touching object 7
    objects_only = instance_classes(labels, "objects")
    assert set(np.unique(objects_only)) == {0, 1} and (objects_only > 0).sum() == 28
    with_boundary = instance_classes(labels, "boundary")
    assert with_boundary[2, 3] == 2 and with_boundary[2, 4] == 2  # both sides of the contact are edge
    assert with_boundary[2, 2] == 2 or with_boundary[2, 2] == 1
    assert with_boundary[2, 5] == 1 and with_boundary[0, 0] == 0  # an inner pixel, the background
    # The interiors (class 1) of the two touching objects no longer touch:
    assert label(with_boundary == 1, connectivity=1).max() == 2
    objects = mask_objects(labels, with_boundary, "boundary", [1])
    assert sorted(np.unique(objects)) == [0, 1, 2]  # the instances, relabelled 1..n
    assert label(objects_only == 1, connectivity=1).max() == 1  # as a semantic mask they are one component
    with_centres = instance_classes(labels, "centres")
    assert np.array_equal(with_centres == 2, with_boundary == 2)  # the same edge
    assert np.array_equal(with_centres > 0, labels > 0)
    # Each object's centre: its deepest pixels, one component an object, apart from the other's:
    centres = label(with_centres == 3, connectivity=1)
    assert centres.max() == 2 and set(np.unique(labels[centres > 0])) == {7, 300}
    assert with_centres[2, 2] == 3 and with_centres[2, 5] == 3 and with_centres[2, 4] == 2


def test_a_mask_of_one_value_given_as_instances_holds_its_regions_as_objects():
    """A dsb2018-dev 0/255 mask of 23 nuclei was one true object to an instance model (AP 0.000),
    and trained as one: its objects are its 4-connected regions, as a semantic mask's are."""
    binary = np.zeros((20, 30), np.uint8)
    binary[2:8, 2:8] = binary[10:18, 12:20] = binary[3:6, 22:28] = 255
    binary[0, 0] = 9  # the ignore value: no object, and not a second id
    classes = instance_classes(binary, "centres", ignore_value=9)
    assert label(classes == 3, connectivity=1).max() == 3 and classes[0, 0] == 9  # a centre an object
    class_ids = np.where(binary == 9, 99, binary == 255).astype(np.uint8)  # 99: encode's ignore id
    objects = mask_objects(binary, class_ids, "centres", [1], ignore_id=99)
    assert objects.max() == 3 and np.array_equal(objects > 0, binary == 255)
    instances = np.where(binary == 255, 4, 0).astype(np.uint16)
    instances[10:18, 12:20] = 5  # two ids: the mask's own, the region with id 4 twice stays one object
    assert mask_objects(instances, (instances > 0).astype(np.uint8), "centres", [1]).max() == 2


def test_centres_are_the_deepest_pixels_of_each_object():
    """A 9x9 square's centre is its pixels at least half its deepest distance from outside; an
    object two pixels thick is all edge, so has no centre (its objects are cut without a seed)."""
    labels = np.zeros((13, 20), np.int64)
    labels[2:11, 2:11] = 5
    labels[4:6, 14:19] = 9
    classes = instance_classes(labels, "centres")
    depth = ndimage.distance_transform_edt(np.pad(labels == 5, 1))[1:-1, 1:-1]
    assert np.array_equal(classes == 3, (depth >= 0.5 * depth.max()) & (classes != 2) & (labels == 5))
    assert not (classes[labels == 9] == 3).any() and (classes[labels == 9] == 2).all()


def make_instance_data(root, count: int = 12, size: int = 48) -> tuple:
    """Gray images of touching discs with darker rims, and 16-bit instance masks (ids from 1000)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    total = 0
    for index in range(count):
        labels = np.zeros((size, size), dtype=np.uint16)
        image = rng.normal(0.1, 0.03, (size, size))
        for k, cx in enumerate((12, 25, 38)):  # centres 13 px apart, radius 7: neighbours touch
            disc = (yy - 24 - rng.integers(-2, 3)) ** 2 + (xx - cx) ** 2 <= 49
            labels[disc & (labels == 0)] = 1000 + 10 * k
            image[disc] = 0.8
        rim = ndimage.morphological_gradient(labels, size=3) > 0
        image[rim & (labels > 0)] = 0.45
        total += len(np.unique(labels)) - 1
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(root / "images" / f"c{index:02d}.png")
        Image.fromarray(labels).save(root / "masks" / f"c{index:02d}.png")
    return root / "images", root / "masks", total


def test_training_on_instance_masks_with_a_boundary_target_and_border_weights(tmp_path, capsys):
    from synthetic import TINY_TRAIN

    images, masks, total = make_instance_data(tmp_path / "data")
    out = tmp_path / "run"
    args = ["train", "--images", images, "--masks", masks, "--out", out, *TINY_TRAIN]
    code, _, err = run_cli(capsys, *args, "--instance-masks", "--instance-target", "boundary", "--border-weight", "10")
    assert code == 0, err
    state = load_checkpoint(out / "best.pt")
    assert state["mask_values"]["values"] == [0, 1, 2] and state["mask_values"]["instances"] == "boundary"
    report_path = tmp_path / "eval.json"
    code, _, _ = run_cli(
        capsys, "evaluate", "--checkpoint", out / "best.pt", "--images", images, "--masks", masks, "--json", report_path
    )
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["objects"]["true_objects"] == total  # touching instances count one by one
    assert report["objects"]["about"].startswith("objects of an instance model: true = the mask's own ids")
    code, _, err = run_cli(
        capsys, "train", "--images", images, "--masks", masks, "--out", tmp_path / "r2", "--instance-target", "centres"
    )
    assert code == 2 and "--instance-target centres needs instance masks" in err  # 3 ids a mask: not detected


def instance_scan(ids: np.ndarray) -> PairScan:
    """What the fingerprint keeps of one mask for the instance-mask rule."""
    values, counts = np.unique(ids, return_counts=True)
    scan = PairScan(Pair(Path("i.png"), Path("m.png")), *ids.shape, 1, np.zeros(1), np.zeros(1), np.ones(1), values,
                   counts, counts)  # fmt: skip
    scan.ids, scan.regions = len(values) - (values[0] == 0), int(label(ids, connectivity=1).max())
    return scan


def test_instance_masks_are_told_from_class_masks():
    """300 masks of each kind. Nuclei with their own ids (some touching), ids unique over the set:
    instances. Relabelled 1..n in each mask: only a hint (organs, one shape per class, look the
    same). Binary, scene classes, nested classes, one shape of each of 4 classes and JPEG-noisy
    masks (many values, each in many specks) are neither."""
    rng = np.random.default_rng(0)
    kinds: dict[str, list] = {
        name: [] for name in ("unique", "relabelled", "binary", "scene", "nested", "shapes", "jpeg")
    }
    for index in range(300):
        labels = np.zeros((40, 40), np.uint16)
        for k in range(int(rng.integers(4, 9))):
            y, x = rng.integers(0, 34, 2)
            labels[y : y + 6, x : x + 6] = k + 1
        kinds["relabelled"].append(instance_scan(labels))
        kinds["unique"].append(instance_scan(np.where(labels > 0, labels + 10 * index, 0)))
        kinds["binary"].append(instance_scan((labels > 0).astype(np.uint8) * 255))
        kinds["scene"].append(instance_scan(np.repeat(np.arange(8, dtype=np.uint8), 5)[None, :].repeat(40, axis=0)))
        cell = np.zeros((40, 40), np.uint8)
        cell[5:30, 5:30], cell[12:20, 12:20] = 1, 2
        kinds["nested"].append(instance_scan(cell))
        one_of_each = np.zeros((40, 40), np.uint8)
        for value, (y, x) in enumerate(((2, 2), (2, 30), (30, 2), (30, 30)), start=1):  # classes 1-4, one shape each
            one_of_each[y : y + int(rng.integers(4, 8)), x : x + 6] = value
        kinds["shapes"].append(instance_scan(one_of_each))
        noisy = (labels > 0).astype(np.int64) * 255 + rng.integers(-6, 7, labels.shape) * (
            rng.random(labels.shape) < 0.2
        )
        kinds["jpeg"].append(instance_scan(np.clip(noisy, 0, 255).astype(np.uint8)))
    assert looks_like_instances(kinds["unique"])
    assert not looks_like_instances(kinds["relabelled"]) and looks_like_instances(kinds["relabelled"], sure=False)
    for name in ("binary", "scene", "nested", "shapes", "jpeg"):
        assert not looks_like_instances(kinds[name], sure=False), name


def test_instance_masks_train_without_being_named(tmp_path, capsys):
    """Detected from the masks (16-bit ids unique over the set): trained as background / object /
    boundary / centre, and said so."""
    from synthetic import TINY_TRAIN

    rng = np.random.default_rng(1)
    for kind in ("images", "masks"):
        (tmp_path / kind).mkdir()
    for index in range(12):
        labels = np.zeros((40, 40), np.uint16)
        for k in range(6):
            y, x = rng.integers(0, 32, 2)
            labels[y : y + 7, x : x + 7] = 1 + k + 100 * index
        Image.fromarray((labels > 0).astype(np.uint8) * 200).save(tmp_path / "images" / f"n{index}.png")
        Image.fromarray(labels).save(tmp_path / "masks" / f"n{index}.png")
    out = tmp_path / "run"
    args = ["train", "--images", tmp_path / "images", "--masks", tmp_path / "masks", "--out", out, *TINY_TRAIN]
    code, text, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "instance label images" in text and "--no-instance-masks" in text
    assert "background / object / boundary / centre" in text
    assert load_checkpoint(out / "best.pt")["mask_values"]["instances"] == "centres"


def test_check_spots_instance_masks_and_counts_their_objects(tmp_path, capsys):
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for index in range(10):
        labels = np.zeros((32, 64), dtype=np.uint16)
        for k in range(8):  # 80 ids over the set: more than any semantic mask has classes
            labels[4:12, 2 + 8 * k : 8 + 8 * k] = 1 + index * 8 + k
        Image.fromarray((labels > 0).astype(np.uint8) * 200).save(tmp_path / "images" / f"m{index}.png")
        Image.fromarray(labels).save(tmp_path / "masks" / f"m{index}.png")
    folders = ("--images", tmp_path / "images", "--masks", tmp_path / "masks")
    code, out, _ = run_cli(capsys, "check", *folders)  # recognised, as train recognises them
    assert code == 0 and "objects: 80 (median 8 per mask)" in out
    code, out, _ = run_cli(capsys, "check", *folders, "--instance-masks")
    assert code == 0 and "objects: 80 (median 8 per mask)" in out
    code, out, _ = run_cli(capsys, "check", *folders, "--no-instance-masks")
    assert code == 1 and "with 0 the most common: instance masks" in out and "--instance-masks" in out


def test_objects_across_tile_borders_stay_whole(rgb_run, tmp_path, capsys):
    _, images, _, checkpoint = rgb_run
    whole, tiled = tmp_path / "whole", tmp_path / "tiled"
    run_cli(capsys, "predict", "--checkpoint", checkpoint, images, "--out", whole, "--instances", "--tiling", "off")
    tiles = ("--tiling", "on", "--tile", "24", "--overlap", "8")  # 40x56 images: every shape crosses a tile border
    run_cli(capsys, "predict", "--checkpoint", checkpoint, images, "--out", tiled, "--instances", *tiles)
    for name in ("img00", "img01", "img02"):
        a, b = (tifffile.imread(folder / f"{name}_objects.tif") for folder in (whole, tiled))
        assert a.max() == b.max()  # the same objects, none cut in two at a tile border


@pytest.mark.parametrize(("boundary", "instances", "target"), [(True, True, "boundary"), (False, True, "objects"),
                                                                (None, None, None)])  # fmt: skip
def test_runs_from_before_instance_target_resume_as_they_trained(boundary, instances, target):
    """Runs saved the toggle --boundary-class; resumed, it reads as the --instance-target it meant."""
    from dataclasses import asdict

    from unetkit.train.config import TrainConfig
    from unetkit.train.option_layers import resolve

    saved = asdict(TrainConfig(images="i", masks="m", instance_masks=instances))
    del saved["instance_target"]
    saved["boundary_class"] = boundary
    assert resolve(TrainConfig(resume="run/last.pt"), set(), saved).instance_target == target


def test_the_rule_choice_breaks_ties_towards_the_default():
    """A rule better by less than TIE on the validation images is noise: the default wins."""
    from unetkit.runs.object_rule import TIE, safest

    default, near, far = ObjectRule(), ObjectRule(seed=0.9), ObjectRule(seed=0.5, flood=0.5, smooth=1.0)
    assert safest([(0.100, far), (0.100 + TIE / 2, default)], default) == (0.100 + TIE / 2, default)
    assert safest([(0.100, far), (0.100 + 2 * TIE, default)], default) == (0.100, far)
    assert safest([(0.100, far), (0.105, near)], default)[1] == near  # the nearer of the tied
    assert ObjectRule.default("centres").seed < ObjectRule.default().seed  # instance seeds are their own class
    sizes = [(0.100, ObjectRule(min_size=6)), (0.105, default), (0.107, ObjectRule(min_size=32))]
    assert safest(sizes, default)[1] == default  # a tie on the smallest object kept keeps the default's 16 px


def test_an_object_in_another_classs_hole_keeps_its_id_and_pixels():
    """Red-team finding (CamVid): a class's small holes were filled over another class's object
    inside them, which lost every pixel while its id stayed counted, so the ids had a gap. Holes
    are now filled over pixels no object class won."""
    winner = np.zeros((20, 20), np.int64)
    winner[5:15, 5:15] = 2  # a ring of class 2 ...
    winner[8:12, 8:12] = 1  # ... around a 16-pixel object of class 1, which comes first
    probabilities = np.stack([np.where(winner == k, 0.98, 0.01) for k in range(3)]).astype(np.float32)
    labels, classes = split_objects(probabilities, ObjectRule(smooth=0))
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2] and classes.tolist() == [0, 1, 2]
    assert (labels[8:12, 8:12] == 1).all() and (labels[winner == 2] == 2).all()
    ring = np.zeros((20, 20), np.int64)  # a hole over background is still filled
    ring[5:15, 5:15], ring[8:12, 8:12] = 2, 0
    probabilities = np.stack([np.where(ring == k, 0.98, 0.01) for k in range(3)]).astype(np.float32)
    labels, _ = split_objects(probabilities, ObjectRule(smooth=0))
    assert (labels[5:15, 5:15] == 1).all()


def test_an_instance_models_object_probability_is_its_foreground():
    """A red-team round: the CSV gave a dsb2018 nucleus the probability of the object class alone
    (median 0.39, 77% of nuclei under 0.5), leaving out its boundary and centre classes; a user
    filtering by it threw most nuclei away. An instance object's probability is 1 - P(background)."""
    probabilities = np.zeros((4, 6, 6), np.float32)
    probabilities[0] = 1.0
    probabilities[:, 1:5, 1:5] = np.array([0.1, 0.3, 0.2, 0.4])[:, None, None]  # object 0.9, spread over 3 classes
    labels = np.zeros((6, 6), np.uint32)
    labels[1:5, 1:5] = 1
    classes = np.array([0, 1])
    assert object_table(labels, classes, probabilities, instances=True)["mean_probability"][0] == pytest.approx(0.9)
    semantic = object_table(labels, classes, probabilities)  # a class's objects: that class's probability
    assert semantic["mean_probability"][0] == pytest.approx(0.3)


def test_objects_labelled_8_connected_fit_as_instances():
    """scikit-image's label() joins pixels that touch at a corner: a nuclei mask labelled so held 16
    ids in 39 regions counted 4-connected, and the napari loop trained it as 17 classes (a red-team
    round). Regions are counted 8-connected, as those objects were made."""
    from unetkit.data.fingerprint import mask_facts

    blobs = np.zeros((96, 96), bool)
    for top in range(2, 90, 12):
        for left in range(2, 90, 12):  # two squares that meet at a corner: one object 8-connected
            blobs[top : top + 3, left : left + 3] = blobs[top + 3 : top + 6, left + 3 : left + 6] = True
    objects = label(blobs)  # 8-connected, the default
    assert label(blobs, connectivity=1).max() == 2 * objects.max()  # twice the regions 4-connected
    facts = mask_facts(objects.astype(np.uint16))
    assert facts.regions == facts.ids == objects.max()
    assert looks_like_instances([facts], fits=True)


def test_an_overlays_legend_names_an_instance_models_classes():
    """An instance model's overlay read "value 0 ... value 3", values its masks never held."""
    from unetkit.data import MaskValues

    assert MaskValues([0, 1, 2, 3], instances="centres").legend[2:] == ["value 2: boundary", "value 3: centre"]
    assert MaskValues([0, 255]).legend == ["value 0", "value 255"]


def test_a_single_value_mask_counts_its_objects_only_when_asked():
    """check reads a 0/255 mask given as instances as its 4-connected regions; train's scan, which
    never reads the count, skips that labelling (one label() a binary mask, hc18 and ISBI alike)."""
    from unetkit.data.fingerprint import mask_facts

    mask = np.zeros((20, 20), np.uint8)
    mask[2:5, 2:5] = mask[5:8, 5:8] = mask[12:15, 12:15] = 255  # 2 regions 8-connected, 3 objects 4-connected
    assert mask_facts(mask).objects is None
    facts = mask_facts(mask, count_objects=True)
    assert (facts.ids, facts.regions, facts.objects) == (1, 2, 3)
    two_ids = np.where(mask[:, :10] > 0, 1, 0).astype(np.uint8)
    two_ids[12:15, 2:5] = 2
    assert mask_facts(two_ids).objects == 2  # ids are counted as they are
