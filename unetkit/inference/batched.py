"""Prediction over many images with the model kept busy.

One image at a time, the model waits while each image is decoded and its outputs encoded, and
runs batches of one. With the demo's model on 256 x 256 crops (2-core Xeon, bf16) a forward of one
image took 22-25 ms, decoding it 1.5 ms and writing its PNG mask 2.4 ms, and a batch of 4 cost
~20% less per image than batches of one. So three stages, each bounded:

  decode  read_image and preprocessing in `workers` threads, ahead of the model;
  model   the calling thread: model inputs of one shape stacked up to batch_size, whole images or
          tiles (tiles of several images share a batch), run and blended back per image by the
          tiling engine (tiling.py) that predict_tiled uses;
  write   the caller's `write(ref, image, logits)` (mask, TIFFs, overlay) in the same threads.

Images in flight (decoding, waiting for their batch, or being written) are at most 4 batches and
at most PIXEL_BUDGET pixels, so memory is a few batches of small images, or one large image at a
time as in the sequential loop. Pillow's and zlib's codecs release the GIL, so the threads work
beside the model. Measured on that 2-core machine (200 crops, median of 6 runs): 34 images/s one
at a time, 39 with 2 workers and batches of 4. There the model's two OpenMP threads already fill
both cores, so the worker threads mostly take turns with them (a forward took ~40% longer per
image beside them) and the gain is mostly batching; with idle cores, or a GPU that leaves the CPU
waiting, decoding and writing overlap for real. workers=0 is the sequential loop: read,
Predictor.logits, write, one image at a time, all in the calling thread."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from unetkit.data.io import ImageRef
from unetkit.inference import tiling
from unetkit.inference.predictor import Predictor, at_image_size
from unetkit.inference.tiling import Blend, crop, forward_batches, tile_boxes

Write = Callable[[ImageRef, np.ndarray, torch.Tensor], None]  # (image, its (H, W, C) pixels, (1, K, H, W) logits)
Box = tiling.Box | None  # a tile (top, left, height, width); None: the whole input
PIXEL_BUDGET = 16 * 2**20  # image pixels in flight: e.g. 256 of 256^2 (capped by batches), one 4096^2


@dataclass(eq=False)
class Job:
    """One image from decoding to writing; its logits fill in as its pieces (tiles, or the whole
    input) come back from the model."""

    ref: ImageRef
    image: np.ndarray
    x: torch.Tensor | None  # (C, h, w) model input, dropped once every piece has run
    boxes: list[Box]
    blended: Blend | None = None  # a tiled image's tiles, blended by tiling.py's engine
    logits: torch.Tensor | None = None  # (K, h, w): a whole input's

    def piece(self, box: Box) -> torch.Tensor:
        return self.x if box is None else crop(self.x, box)

    def add(self, box: Box, logits: torch.Tensor) -> None:
        if box is None:
            self.logits = logits
        else:
            self.blended.add(box, logits)  # as predict_tiled, in the same order

    def result(self) -> torch.Tensor:
        """(1, K, H, W) logits at the image's size, as Predictor.logits returns them."""
        logits = self.logits if self.blended is None else self.blended.take()
        return at_image_size(logits[None], self.image.shape[:2])


def decode(predictor: Predictor, ref: ImageRef) -> Job:
    """Read and preprocess one image; a tiled one gets its tiles and blending buffers (in a worker)."""
    image = ref.read()
    x = predictor.preprocess.image_tensor(image, ref.path)
    if not predictor.tiled(x):
        return Job(ref, image, x, [None])
    _, height, width = x.shape
    boxes = tile_boxes(height, width, predictor.tile, predictor.options.overlap)
    return Job(ref, image, x, boxes, Blend(predictor.num_outputs, width, boxes[0][2:], height))


class Batches:
    """Pieces waiting for the model, by input shape; a shape's batch runs once it is full."""

    def __init__(self, predictor: Predictor) -> None:
        self.forward, self.size = predictor.forward, predictor.batch_size
        self.tile, self.tiles = (predictor.tile, predictor.tile), predictor.tile_batch_size  # a tile's own batch
        self.waiting: dict[tuple[int, ...], list[tuple[Job, Box]]] = {}  # oldest shape first
        self.left: dict[Job, int] = {}  # images with pieces still waiting -> how many

    def add(self, job: Job) -> list[Job]:
        """Queue an image's pieces; returns the images completed by the batches that filled."""
        self.left[job] = len(job.boxes)
        done: list[Job] = []
        for box in job.boxes:
            shape = tuple(job.piece(box).shape)
            self.waiting.setdefault(shape, []).append((job, box))
            if len(self.waiting[shape]) == (self.tiles if shape[-2:] == self.tile else self.size):
                done += self.run(shape)
        return done

    def run(self, shape: tuple[int, ...] | None = None) -> list[Job]:
        """One forward pass over the batch of `shape` (default: the longest-waiting, however small)."""
        pieces = self.waiting.pop(next(iter(self.waiting)) if shape is None else shape)
        done = []
        with torch.inference_mode():
            for (job, box), logits in forward_batches(
                self.forward, [(p, p[0].piece(p[1])) for p in pieces], len(pieces)
            ):
                job.add(box, logits)
                self.left[job] -= 1
                if not self.left[job]:
                    del self.left[job]
                    job.x = None
                    done.append(job)
        return done


def finish(job: Job, write: Write) -> ImageRef:
    write(job.ref, job.image, job.result())
    return job.ref


def predict_images(predictor: Predictor, refs: Sequence[ImageRef], write: Write, workers: int) -> Iterator[ImageRef]:
    """Call `write(ref, image, logits)` for every image (a file, or a plane of a stack); yields each
    once it is written (not necessarily in order). The first error (e.g. an unreadable image) is
    raised here once the writes under way have finished; what was written stays, nothing more is read."""
    if workers == 0 or len(refs) < 2:  # one image: nothing to overlap (and predict_tiled's tile bar)
        for ref in refs:
            image = ref.read()
            write(ref, image, predictor.logits(image, ref.path))
            yield ref
        return
    todo, batches, largest = deque(refs), Batches(predictor), 0
    reading: deque[Future[Job]] = deque()
    writing: deque[Future[ImageRef]] = deque()
    # The workers' torch calls (preprocessing, logits to masks) run single-threaded: each would
    # otherwise start an OpenMP team of its own beside the model's (no difference measured at 256^2).
    with ThreadPoolExecutor(workers, "unetkit-predict", torch.set_num_threads, (1,)) as pool:
        try:
            while todo or reading or batches.left or writing:
                # Until an image is decoded its size is unknown: one at a time, not `workers` huge ones.
                limit = max(1, min(4 * batches.size, PIXEL_BUDGET // largest)) if largest else 1
                while todo and len(reading) + len(batches.left) + len(writing) < limit:
                    reading.append(pool.submit(decode, predictor, todo.popleft()))
                if reading:
                    job = reading.popleft().result()
                    largest = max(largest, job.image.shape[0] * job.image.shape[1])
                    done = batches.add(job)
                elif batches.left:  # nothing more may be read yet: run a batch, even a small one
                    done = batches.run()
                else:  # only writes in flight: wait for the oldest
                    yield writing.popleft().result()
                    continue
                writing.extend(pool.submit(finish, job, write) for job in done)
                while writing and writing[0].done():
                    yield writing.popleft().result()
        finally:
            for future in reading:  # the writes under way finish (the pool waits for them)
                future.cancel()
