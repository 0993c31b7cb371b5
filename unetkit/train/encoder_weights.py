"""The weights an encoder model's run starts from (--encoder-weights), and what they imply:

  none      the encoder as built, trained from scratch;
  imagenet  timm's own pretrained weights, downloaded by timm into its cache (only because the
            user asked: nothing else in unetkit downloads); offline, one line within seconds
            naming the two other ways;
  FILE      a state dict (.pt/.pth, or the "model"/"state_dict" entry of a checkpoint) or a
            safetensors file of that encoder, e.g. `timm.create_model(NAME).state_dict()`, or an
            encoder-unet run's checkpoint (best.pt), whose encoder it takes:
            checked key by key and shape by shape, a classifier's tensors ignored (a feature
            pyramid has none), a first convolution of another channel count adapted as timm does.

Pretrained weights expect the input normalised as they were trained (timm's pretrained config:
ImageNet's mean and std), so the run records that normalisation (data_plan.preprocess_for) and
every later use (predict, export, out of core) applies it (an encoder from an unetkit run saw its
data standardised, so the new data is standardised too: the recipe's normalisation); and the
encoder learns at the fraction of the decoder's rate that --encoder-lr says (the recipe's:
recipes.PRETRAINED_ENCODER_LR)."""

from __future__ import annotations

import socket
import urllib.parse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unetkit.errors import UnetkitError
from unetkit.models.encoder_unet import DEFAULT_ENCODER, import_timm

HUB_WAIT_SECONDS = 3.0  # how long `imagenet` waits to reach the hub before saying it is offline


def check_encoder_early(model: str, encoder: str | None, weights: str | None) -> None:
    """What the arguments alone decide, refused before the training set is read (a large folder
    took its fingerprint's time first: a red-team round): a missing --encoder-weights FILE, a
    missing timm, an encoder timm does not know. ImageNet's download is tried where it is needed."""
    if model != "encoder-unet":
        return
    if pretrained(weights) and weights != "imagenet":
        existing(Path(str(weights)).expanduser())
    timm, name = import_timm(), encoder or DEFAULT_ENCODER
    if not timm.is_model(name):
        raise UnetkitError(f"--encoder {name}: timm has no such model; `unetkit encoders` lists the ones tested")


# The words --encoder-weights takes besides a file's path.
ENCODER_WORDS = ("imagenet", "none")


def pretrained(source: str | None) -> bool:
    """Whether the encoder starts from trained weights (imagenet or a file), not from scratch."""
    return source not in (None, "", "none")


def load_encoder_weights(model: nn.Module, source: str) -> str:
    """Load `source` (imagenet or a FILE) into `model.encoder`; the line the run's log shows."""
    encoder = model.encoder
    wanted = encoder.state_dict()
    if source == "imagenet":
        state, origin = imagenet_state(model.encoder_name, first_conv_channels(encoder)), "timm's ImageNet weights"
    else:
        state, origin = file_state(Path(source).expanduser()), source
        if not set(wanted) & set(state) and holds_an_encoder_unet(state):
            state, origin = encoder_part(state), f"the encoder of {origin}"
    missing = [key for key in wanted if key not in state]
    if missing:
        raise UnetkitError(
            f"{origin}: not weights of the {model.encoder_name} encoder: {len(missing)} of its {len(wanted)} tensors "
            f"are missing (e.g. {', '.join(missing[:3])}); give that encoder's state dict or safetensors, or "
            "--encoder-weights none"
        )
    fitted, adapted = {}, []
    for key, target in wanted.items():
        value = state[key]
        if value.shape != target.shape and is_first_conv(value, target):
            value, adapted = adapt_input_conv(target.shape[1], value), [key]
        if value.shape != target.shape:
            raise UnetkitError(
                f"{origin}: {key} is {tuple(value.shape)} but the {model.encoder_name} encoder's is "
                f"{tuple(target.shape)}; give weights of that encoder (another size of it does not fit)"
            )
        fitted[key] = value.to(target.dtype)
    whole = classifier_keys(model.encoder_name, first_conv_channels(encoder)) | set(wanted)
    foreign = [key for key in state if key not in whole]
    if foreign:
        raise UnetkitError(
            f"{origin}: not weights of the {model.encoder_name} encoder: {len(foreign)} tensor(s) it does not have "
            f"(e.g. {', '.join(foreign[:3])}: a larger model of its family?); give that encoder's own weights"
        )
    encoder.load_state_dict(fitted)
    ignored = len(state) - len(wanted)
    notes = f", {ignored} classifier tensor(s) ignored" if ignored > 0 else ""
    notes += f", first convolution adapted to {wanted[adapted[0]].shape[1]} channel(s)" if adapted else ""
    return f"encoder {model.encoder_name}: {len(wanted)} tensors from {origin}{notes}"


ENCODER_PREFIX = "encoder."  # an encoder-unet model's encoder tensors (its checkpoint, its safetensors)


def run_encoder(source: str | None) -> bool:
    """Whether `source` is an encoder-unet run's weights (its checkpoint or safetensors), whose
    encoder saw its data standardised (mean and std), not timm's normalisation."""
    if not pretrained(source) or source == "imagenet":
        return False
    return holds_an_encoder_unet(file_state(Path(str(source)).expanduser()))


def holds_an_encoder_unet(state: dict[str, torch.Tensor]) -> bool:
    """Whether a weights file is a whole encoder-unet model's (its encoder's tensors under ENCODER_PREFIX)."""
    return any(key.startswith(ENCODER_PREFIX) for key in state)


def encoder_part(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An encoder-unet model's encoder tensors, named as the encoder names them: a run of unetkit
    hands its encoder, trained on other data, to the next run (its decoder and head are left)."""
    return {key.removeprefix(ENCODER_PREFIX): value for key, value in state.items() if key.startswith(ENCODER_PREFIX)}


def classifier_keys(name: str, channels: int) -> set[str]:
    """The names of the whole timm model's tensors (its classifier included), which a state dict of
    it may hold beside the feature pyramid's."""
    return set(import_timm().create_model(name, pretrained=False, in_chans=channels).state_dict())


def first_conv_channels(encoder: nn.Module) -> int:
    return next(m for m in encoder.modules() if isinstance(m, nn.Conv2d)).in_channels


def is_first_conv(value: torch.Tensor, target: torch.Tensor) -> bool:
    """A convolution's weight that differs only in its input channels: the stem, given RGB weights."""
    return value.ndim == 4 and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]


def adapt_input_conv(channels: int, weight: torch.Tensor) -> torch.Tensor:
    """timm's rule for a stem of another channel count: gray sums the RGB filters; more channels
    repeat them, scaled so the response keeps its size."""
    return import_timm().models.adapt_input_conv(channels, weight.float())


def existing(path: Path) -> Path:
    if not path.is_file():
        raise UnetkitError(f"{path}: no such file; --encoder-weights takes imagenet, a weights file, or none")
    return path


def file_state(path: Path) -> dict[str, torch.Tensor]:
    existing(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader's failure is one line naming the file
        raise UnetkitError(
            f"{path}: not a weights file ({type(err).__name__}: {first_line(err)}); give a state dict or safetensors"
        ) from None
    for key in ("state_dict", "model"):  # a training checkpoint's weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UnetkitError(f"{path}: holds no state dict of tensors; give an encoder's state dict or safetensors")
    return state


def first_line(err: Exception) -> str:
    """A library's error, cut to its first line (torch.load's run to a dozen)."""
    text = str(err).strip().splitlines()
    return text[0][:200] if text else ""


def imagenet_state(name: str, channels: int) -> dict[str, torch.Tensor]:
    """timm's pretrained weights of `name` (from its cache, or downloaded now with its progress
    bar); one line when the hub cannot be reached and they are not cached."""
    timm = import_timm()
    import huggingface_hub.constants as hub

    offline = not hub_reachable(hub.ENDPOINT)
    kept, hub.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE or offline  # offline: the cache only
    try:
        model = timm.create_model(name, features_only=True, pretrained=True, in_chans=channels)
    except Exception as err:  # noqa: BLE001 - timm's and the hub's many errors are one line
        reason = "this machine is offline and timm's cache does not hold them" if offline else first_line(err)
        raise UnetkitError(
            f"--encoder-weights imagenet: timm could not load the {name} weights ({reason}); give a weights FILE "
            "(saved where timm can download it: timm.create_model(NAME, pretrained=True).state_dict()), or "
            "--encoder-weights none to train the encoder from scratch"
        ) from None
    finally:
        hub.HF_HUB_OFFLINE = kept
    return model.state_dict()


def hub_reachable(endpoint: str) -> bool:
    host = urllib.parse.urlparse(endpoint).hostname or endpoint
    try:
        socket.create_connection((host, 443), timeout=HUB_WAIT_SECONDS).close()
    except OSError:
        return False
    return True


def encoder_normalisation(name: str, channels: int) -> tuple[list[float], list[float]]:
    """The mean and std (of [0, 1] pixels) the pretrained encoder was trained with, per channel:
    timm's pretrained config; a gray image takes the channels' mean, more channels repeat them."""
    config = import_timm().get_pretrained_cfg(name)
    mean, std = list(getattr(config, "mean", None) or (0.5,) * 3), list(getattr(config, "std", None) or (0.5,) * 3)
    if channels == len(mean):
        return mean, std
    if channels == 1:
        return [sum(mean) / len(mean)], [sum(std) / len(std)]
    return [mean[i % len(mean)] for i in range(channels)], [std[i % len(std)] for i in range(channels)]


def parameter_groups(model: nn.Module, lr: float, encoder_lr: float | None) -> list[dict[str, Any]] | Any:
    """The optimizer's parameters: the encoder's at `encoder_lr` of --lr (--encoder-lr), the rest at --lr
    (the first group, whose rate the run's log and metrics.csv show)."""
    encoder = getattr(model, "encoder", None)
    if encoder is None or encoder_lr is None or encoder_lr == 1.0:
        return model.parameters()
    inside = {id(p) for p in encoder.parameters()}
    rest = [p for p in model.parameters() if id(p) not in inside]
    return [{"params": rest, "lr": lr}, {"params": list(encoder.parameters()), "lr": lr * encoder_lr}]
