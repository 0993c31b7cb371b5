"""StarDist's own training and prediction, for benchmarks/time_to_quality.py, in StarDist's
environment (TensorFlow; not unetkit's): `PYTHON benchmarks/stardist_peer.py TRAIN_IMAGES TRAIN_MASKS
VAL_IMAGES OUT SECONDS`, where PYTHON has `pip install tensorflow-cpu stardist`.

As StarDist's example notebook for DSB2018 trains it (examples/2D/2_training.ipynb): images
normalised by their 1 and 99.8 percentiles, label holes filled, 15% of the training images held
out for validation, Config2D(n_rays=32, grid=(2, 2)) with its other defaults (U-Net backbone,
256 px patches, batches of 4, 100 steps an epoch), the notebook's augmenter (flips, 90 degree
turns, intensity); stopped when SECONDS are spent (its default is 400 epochs), the best weights on
validation kept (its own checkpointing), thresholds tuned on the validation images
(`optimize_thresholds`). Then `predict_instances` on each VAL image, written as OUT/<stem>.tif.
Prints one JSON line: seconds, epochs. Standalone: it imports nothing of unetkit."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image


def read(path: Path) -> np.ndarray:
    array = tifffile.imread(path) if path.suffix.lower() in (".tif", ".tiff") else np.asarray(Image.open(path))
    return array[..., 0] if array.ndim == 3 else array


def augmenter(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The notebook's: a random flip and 90 degree turn of both, the image's intensity scaled and shifted."""
    turns = np.random.randint(4)
    x, y = np.rot90(x, turns), np.rot90(y, turns)
    if np.random.rand() < 0.5:
        x, y = np.fliplr(x), np.fliplr(y)
    x = x * np.random.uniform(0.6, 2) + np.random.uniform(-0.2, 0.2)
    return x, y


def main(argv: list[str]) -> None:
    started = time.perf_counter()
    train_images, train_masks, val_images, out, seconds = (
        Path(argv[0]),
        Path(argv[1]),
        Path(argv[2]),
        Path(argv[3]),
        float(argv[4]),
    )
    import tensorflow as tf
    from csbdeep.utils import normalize
    from stardist import fill_label_holes
    from stardist.models import Config2D, StarDist2D

    tf.config.threading.set_intra_op_parallelism_threads(2)
    images = sorted(train_images.iterdir())
    x = [normalize(read(p).astype(np.float32), 1, 99.8, axis=(0, 1)) for p in images]
    y = [fill_label_holes(read(next(train_masks.glob(p.stem + ".*")))) for p in images]
    order = np.random.RandomState(42).permutation(len(x))
    n_val = max(1, int(round(0.15 * len(x))))
    val, trn = order[:n_val], order[n_val:]
    model = StarDist2D(
        Config2D(n_rays=32, grid=(2, 2), n_channel_in=1, use_gpu=False, train_tensorboard=False),
        name="stardist",
        basedir=str(out / "model"),
    )
    model.prepare_for_training()
    model.callbacks.append(Budget(started, seconds))
    model.train([x[i] for i in trn], [y[i] for i in trn], validation_data=([x[i] for i in val], [y[i] for i in val]),
                augmenter=augmenter, epochs=400)  # fmt: skip
    model.optimize_thresholds([x[i] for i in val], [y[i] for i in val])
    trained = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(val_images.iterdir()):
        labels, _ = model.predict_instances(normalize(read(path).astype(np.float32), 1, 99.8, axis=(0, 1)))
        tifffile.imwrite(out / f"{path.stem}.tif", labels.astype(np.uint16))
    print(json.dumps({"train_seconds": round(trained, 1), "epochs": model.callbacks[-1].epochs}), flush=True)


class Budget:
    """A Keras callback that stops training once `seconds` have passed since `started`."""

    def __new__(cls, started: float, seconds: float):
        import tensorflow as tf

        class _Budget(tf.keras.callbacks.Callback):
            epochs = 0

            def on_epoch_begin(self, epoch, logs=None):
                self.epochs = epoch + 1  # an epoch cut short counts

            def on_train_batch_end(self, batch, logs=None):
                if time.perf_counter() - started >= seconds:
                    self.model.stop_training = True

        return _Budget()


if __name__ == "__main__":
    main(sys.argv[1:])
