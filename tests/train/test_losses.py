import pytest
import torch

from unetkit.data import IGNORE_ID
from unetkit.models.heads import class_probabilities
from unetkit.train.losses import LOSSES, SegmentationLoss


def confident_logits(target: torch.Tensor, num_classes: int, right: bool = True) -> torch.Tensor:
    classes = target if right else (target + 1) % num_classes
    return torch.nn.functional.one_hot(classes, num_classes).permute(0, 3, 1, 2).float() * 20 - 10


@pytest.mark.parametrize("kind", LOSSES)
def test_right_answers_cost_little_and_wrong_ones_a_lot(kind):
    target = torch.randint(0, 4, (2, 8, 8))
    loss = SegmentationLoss(kind)
    assert loss(confident_logits(target, 4), target) < 0.01
    assert loss(confident_logits(target, 4, right=False), target) > 0.5


def test_binary_model_uses_one_sigmoid_logit():
    target = torch.randint(0, 2, (2, 8, 8))
    logits = (target.float() * 20 - 10)[:, None]
    probs = class_probabilities(logits)
    assert probs.shape == (2, 2, 8, 8) and torch.allclose(probs.sum(1), torch.ones(2, 8, 8))
    assert SegmentationLoss()(logits, target) < 0.01


def test_ignored_pixels_change_nothing():
    target = torch.randint(0, 3, (1, 6, 6))
    logits = torch.randn(1, 3, 6, 6)
    loss = SegmentationLoss("ce+dice")
    marked = target.clone()
    marked[0, :2] = IGNORE_ID
    scrambled = logits.clone()
    scrambled[0, :, :2] = torch.randn(3, 2, 6) * 50  # whatever is predicted on ignored pixels
    assert loss(logits, marked) == pytest.approx(float(loss(scrambled, marked)))


def test_class_weights_scale_each_class():
    target = torch.tensor([[[0, 1]]])
    logits = torch.zeros(1, 2, 1, 2)
    plain = SegmentationLoss("ce")(logits, target)
    weighted = SegmentationLoss("ce", class_weights=[1.0, 3.0])(logits, target)
    assert weighted == pytest.approx(float(plain))  # uniform logits: the weighted mean is the same
    logits[0, 1, 0, 1] = 5.0  # class 1 right, class 0 unsure: weighting class 1 lowers the loss
    assert SegmentationLoss("ce", class_weights=[1.0, 3.0])(logits, target) < SegmentationLoss("ce")(logits, target)


def test_lovasz_is_one_minus_iou_where_the_probabilities_are_hard():
    """At 0/1 probabilities the Lovasz extension is the Jaccard loss itself: checked against
    scikit-learn's per-class IoU (the mean over the classes present in the target)."""
    from sklearn.metrics import jaccard_score

    from unetkit.train.losses import lovasz_softmax_loss

    generator = torch.Generator().manual_seed(3)
    target = torch.randint(0, 4, (2, 9, 7), generator=generator)
    predicted = torch.where(torch.rand(target.shape, generator=generator) < 0.3, (target + 1) % 5, target)
    probs = torch.nn.functional.one_hot(predicted, 5).permute(0, 3, 1, 2).float()  # class 4 only predicted
    valid = torch.rand(target.shape, generator=generator) > 0.1
    loss = lovasz_softmax_loss(probs, target, valid)
    present = sorted(set(target[valid].tolist()))
    ious = jaccard_score(target[valid], predicted[valid], labels=present, average=None)
    assert float(loss) == pytest.approx(1 - ious.mean(), abs=1e-6)


def test_lovasz_gradient_lowers_the_loss():
    target = torch.randint(0, 3, (2, 8, 8))
    logits = torch.zeros(2, 3, 8, 8, requires_grad=True)
    loss = SegmentationLoss("ce+lovasz")
    before = loss(logits, target)
    before.backward()
    with torch.no_grad():
        after = loss(logits - 0.5 * logits.grad, target)
    assert after < before
