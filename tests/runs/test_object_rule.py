"""runs/object_rule.py: how a rule is chosen on few validation images, and where ties go."""

from __future__ import annotations

import numpy as np

from unetkit.models.spec import ObjectRule
from unetkit.runs.object_rule import TIE, safest, start_tie


def test_the_tie_of_a_run_from_a_model_is_the_sampling_error_of_its_objects():
    one_image = [(None, np.arange(21).reshape(3, 7))]  # 20 objects
    many = [(None, np.arange(901).reshape(17, 53))]  # 900 objects
    assert round(start_tie(one_image), 3) == round(0.3 / np.sqrt(20), 3) > 0.05
    assert start_tie(many) == TIE  # never tighter than the default


def test_ties_go_to_the_anchor_and_a_clear_win_does_not():
    anchor, other = ObjectRule(seed=0.5, flood=0.7, smooth=1.0), ObjectRule(seed=0.9, flood=0.3, smooth=2.0)
    assert safest([(0.30, other), (0.33, anchor)], anchor, tie=0.05)[1] == anchor  # within the tie
    assert safest([(0.30, other), (0.33, anchor)], anchor, tie=TIE)[1] == other  # past it
