"""The run layer: one training run, start to finish, its steps called in order as nnU-Net's
run_training calls its own: train (unetkit/train) -> choose the object rule on the run's validation
images (object_rule.py, a calibration step of its own, as stardist's optimize_thresholds) -> the
report (unetkit/report). Training and inference never import each other; this layer calls both."""

from unetkit.runs.training import run_training

__all__ = ["run_training"]
