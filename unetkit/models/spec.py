"""What it takes to rebuild a trained model and use it the way it was trained: the registered
model's name and arguments, the mask values its classes stand for, the preprocessing of its
input, and whether it has one sigmoid logit (binary) or softmax; and the rule that cuts its
objects. Checkpoints, .safetensors and .onnx exports all carry these under the same keys
(docs/checkpoint-format.md), and `ModelSpec.from_state` / `ObjectRule.from_state` are the one
check of them for every format: a file that passes predicts the way training meant it to."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from unetkit.data import MaskValues, Preprocess
from unetkit.data.objects import INSTANCE_VALUES
from unetkit.errors import UnetkitError
from unetkit.models import MODELS, create_model
from unetkit.runtime.options import each, number, whole

# How every refusal of a checkpoint's keys ends: what the user can do about it.
DAMAGED = "it is damaged or was edited, use a best.pt or last.pt written by 'unetkit train' (or its export)"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    args: dict[str, Any]
    mask_values: MaskValues
    preprocess: Preprocess
    binary: bool

    KEYS = ("model_name", "model_args", "mask_values", "preprocess", "binary")

    @classmethod
    def from_state(cls, state: dict[str, Any], source: str | Path = "checkpoint") -> ModelSpec:
        """From a checkpoint's (or export's) keys, checked; a one-line error naming `source` if
        they are missing, malformed, or do not fit each other (preprocessing, output channels)."""
        missing = [key for key in cls.KEYS if key not in state] if isinstance(state, dict) else list(cls.KEYS)
        if missing:
            raise UnetkitError(f"{source}: checkpoint lacks {', '.join(missing)}; {DAMAGED}")
        if isinstance(state["model_name"], str) and state["model_name"] not in MODELS:
            # A model of the user's own, whose module this process has not imported: it read as "damaged"
            raise UnetkitError(
                f"{source}: a {state['model_name'][:40]} model, which is not registered in this process (it knows "
                f"{', '.join(sorted(MODELS))}); import the module that registers it first (registry.py says how)"
            )
        spec = cls(
            state["model_name"],
            _parsed(state, "model_args", dict, source),
            _parsed(state, "mask_values", MaskValues.from_dict, source),
            _parsed(state, "preprocess", lambda value: Preprocess(**value), source),
            state["binary"],
        )
        spec._check_preprocess(source)
        spec._check_outputs(source)
        return spec

    def _check_preprocess(self, source: str | Path) -> None:
        """A std of 0 or a NaN mean would turn every input into NaN or inf, and a mean per channel
        that the model does not take would be broadcast over the wrong channels: refuse both."""
        p, channels = self.preprocess, self.args.get("in_channels")
        per_channel = whole(1, 256)(channels) and all(isinstance(v, list | tuple) and len(v) == channels
                                                      for v in (p.mean, p.std))  # fmt: skip
        sound = per_channel and each(number)(list(p.mean)) and each(lambda v: number(v) and v > 0)(list(p.std))
        sound = sound and _percentiles_sound(p.percentiles)
        if not (sound and number(p.scale) and p.scale > 0 and p.in_channels == channels):
            raise UnetkitError(
                f"{source}: the checkpoint's preprocessing (in_channels {_short(p.in_channels)}, mean "
                f"{_short(p.mean)}, std {_short(p.std)}, scale {_short(p.scale)}, percentiles "
                f"{_short(p.percentiles)}) is not usable for its model of {_short(channels)} input channel(s) (std "
                f"must be above 0, every number finite, one mean and std per channel, percentiles low < high in "
                f"0..100); {DAMAGED}"
            )

    def _check_outputs(self, source: str | Path) -> None:
        """Class id k is written as mask value k: a model with more or fewer outputs than the values
        (or a binary model with other than two) would write its classes as the wrong values."""
        values, outputs = self.mask_values.values, self.args.get("num_classes")
        if not isinstance(self.binary, bool):
            raise UnetkitError(f"{source}: the checkpoint's binary {str(self.binary)[:40]} is not true or false; "
                               f"{DAMAGED}")  # fmt: skip
        if not (len(values) == 2 and outputs == 1 if self.binary else outputs == len(values)):
            kind = "a binary model: one output for two values" if self.binary else "one output per value"
            raise UnetkitError(
                f"{source}: the checkpoint's mask values {values} do not fit its model's {outputs} output "
                f"channel(s) ({kind}); {DAMAGED}"
            )
        self._check_instances(source)

    def _check_instances(self, source: str | Path) -> None:
        """A model of instance masks has the classes of its mode (data/objects.py) as ids 0, 1 (2, 3),
        whatever the masks held: objects are cut from class 1 (inference/objects.py)."""
        instances, values = self.mask_values.instances, self.mask_values.values
        if instances is None:
            return
        if not isinstance(instances, str) or instances not in INSTANCE_VALUES:
            raise UnetkitError(f"{source}: the checkpoint's instances {str(instances)[:40]!r} is neither "
                               f"{' nor '.join(map(repr, INSTANCE_VALUES))}; {DAMAGED}")  # fmt: skip
        expected = list(INSTANCE_VALUES[instances])
        if values != expected:
            raise UnetkitError(
                f"{source}: the checkpoint's instance-mask classes are {values}, not {expected} ({instances}), so "
                "its objects cannot be cut; train the run again (earlier versions dropped the object class when "
                "every object pixel was edge)"
            )

    def to_state(self) -> dict[str, Any]:
        """The keys a checkpoint stores, as plain data."""
        return {
            "model_name": self.name,
            "model_args": self.args,
            "mask_values": self.mask_values.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "binary": self.binary,
        }

    @property
    def in_channels(self) -> int:
        return self.args["in_channels"]

    @property
    def num_outputs(self) -> int:
        """Logits per pixel: 1 for a binary model, else one per class."""
        return self.args["num_classes"]

    def build(self) -> nn.Module:
        return create_model(self.name, **self.args)


def _short(value: Any) -> str:
    """Numbers to 4 significant digits (a list of them too), so a message stays a short line."""
    if isinstance(value, list | tuple):  # a few items: a list of a million is a bomb, not a message
        return "[" + ", ".join(map(_short, value[:6])) + (", ..." if len(value) > 6 else "") + "]"
    return f"{value:.4g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)[:40]


def _parsed(state: dict[str, Any], key: str, parse: Any, source: str | Path) -> Any:
    """`parse(state[key])`, or a one-line error naming the key."""
    try:
        return parse(state[key])
    except UnetkitError as err:  # MaskValues' own check; its fix is for training data, not for a checkpoint
        reason = str(err).split(";")[0]
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:  # e.g. a list for a dict
        reason = f"{err.__class__.__name__}: {str(err)[:80]}"
    raise UnetkitError(f"{source}: the checkpoint's {key} {str(state[key])[:120]} is malformed ({reason}); {DAMAGED}")


def trained_orientation(state: dict[str, Any]) -> str | None:
    """How training turned the images: "upright" (left-right mirrors only: a street's sky stays
    above its road), "any", or None when unknown; an export's own key, else the checkpoint's
    config. Test-time augmentation shows the model only these views."""
    config = state.get("config")
    return state.get("orientation") or (config.get("orientation") if isinstance(config, dict) else None)


@dataclass(frozen=True)
class ObjectRule:
    """How objects are cut from class probabilities (unetkit/inference/objects.py)."""

    # The defaults: the best of the end-of-training grid on the demo's validation slices 22-24
    # (adapted Rand error 0.045; seed 0.9 gave 0.18, 0.98 split cells into thousands of cores:
    # docs/objects.md).
    seed: float = 0.95  # object cores: probability above this
    flood: float = 0.3  # cores grow over pixels above this
    smooth: float = 2.0  # Gaussian sigma (pixels) on the probabilities first: one core per object
    min_size: int = 16  # smaller objects (pixels) are dropped
    max_hole: int = 16  # holes up to this many pixels inside an object are filled

    def to_dict(self) -> dict:
        return asdict(self)

    def at_zoom(self, zoom: float) -> ObjectRule:
        """The rule for images predicted at `zoom` (predict --zoom): its sizes are in the training
        images' pixels, and at zoom 0.5 an object of those covers twice the side here."""
        if zoom == 1:
            return self
        side = 1 / zoom
        return replace(self, smooth=self.smooth * side, min_size=round(self.min_size * side**2),
                       max_hole=round(self.max_hole * side**2))  # fmt: skip

    @classmethod
    def default(cls, instances: str | None = None) -> ObjectRule:
        """The rule when training chose none, and where the choice breaks ties: the class defaults,
        or for a model of instance masks (whose seed class is the object's inside or centre, less
        sure towards its rim) the pick of the 10-minute dsb2018-dev model's run (issue 21)."""
        return cls(seed=0.5, flood=0.7, smooth=1.0) if instances else cls()

    @classmethod
    def from_state(cls, rule: Any, source: str | Path = "checkpoint") -> ObjectRule | None:
        """A checkpoint's `object_rule` (None: training chose none), checked: an unknown field or a
        number out of range would cut objects by a rule nobody chose, or fail mid-prediction."""
        valid = {
            "seed": lambda v: number(v) and 0 < v < 1,
            "flood": lambda v: number(v) and 0 < v < 1,
            "smooth": lambda v: number(v) and 0 <= v <= 1000,
            "min_size": whole(0, 2**31),
            "max_hole": whole(0, 2**31),
        }
        if rule is None:
            return None
        if not (isinstance(rule, dict) and all(key in valid and valid[key](v) for key, v in rule.items())):
            raise UnetkitError(
                f"{source}: the checkpoint's object_rule {str(rule)[:160]} is not usable (fields seed and flood "
                f"between 0 and 1, smooth 0 or more, min_size and max_hole whole pixels); {DAMAGED}"
            )
        return cls(**rule)


def _percentiles_sound(bounds: object) -> bool:
    """None (the type's range only) or [low, high] with 0 <= low < high <= 100."""
    if bounds is None:
        return True
    pair = isinstance(bounds, list | tuple) and len(bounds) == 2 and each(number)(list(bounds))
    return bool(pair and 0 <= bounds[0] < bounds[1] <= 100)
