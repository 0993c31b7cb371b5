"""The weights' moving average (unetkit/train/averaging.py) against the same sums done by hand."""

import torch
from torch import nn

from unetkit.train.averaging import WeightAverage


def test_the_average_is_the_warmed_up_exponential_average_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    average = WeightAverage(model, decay=0.5)
    expected_weight, expected_mean = None, None
    for step in range(6):
        with torch.no_grad():
            model[0].weight.add_(torch.randn_like(model[0].weight))
        model.train()(torch.randn(4, 1, 6, 6))  # moves BatchNorm's running mean
        weight, mean = model[0].weight.detach().clone(), model[1].running_mean.clone()
        if step == 0:  # the first update copies
            expected_weight, expected_mean = weight, mean
        else:
            rate = min(0.5, (1 + step) / (10 + step))  # step = updates before this one
            expected_weight = rate * expected_weight + (1 - rate) * weight
            expected_mean = rate * expected_mean + (1 - rate) * mean
        average.update(model)
    torch.testing.assert_close(average.model[0].weight, expected_weight)
    torch.testing.assert_close(average.model[1].running_mean, expected_mean)
    assert average.updates == 6
    assert int(average.model[1].num_batches_tracked) == int(model[1].num_batches_tracked)  # copied, not averaged
    assert not torch.equal(average.model[0].weight, model[0].weight)


def test_restore_carries_on_where_the_saved_average_stopped():
    model = nn.Linear(3, 2)
    first = WeightAverage(model, decay=0.9)
    for _ in range(4):
        with torch.no_grad():
            model.weight.add_(1.0)
        first.update(model)
    second = WeightAverage(nn.Linear(3, 2), decay=0.9)
    second.restore(first.model.state_dict(), first.updates)
    with torch.no_grad():
        model.weight.add_(1.0)
    first.update(model)
    second.update(model)
    torch.testing.assert_close(second.model.weight, first.model.weight)
    assert second.rate() == first.rate()
