"""The pixel noise that tells an image of no signal (data/preprocess.pixel_noise, NO_SIGNAL_RANGE)."""

import numpy as np
import pytest


@pytest.mark.parametrize("level", [3, 50, 2000])
def test_pixel_noise_reads_the_noise_of_poisson_images_at_any_level(level):
    """pixel_noise against the known std of Poisson noise, sqrt(level), and the range of pure noise
    below NO_SIGNAL_RANGE times it; with an edge in the image (a bright half) the noise is still read."""
    from unetkit.data.preprocess import NO_SIGNAL_RANGE, pixel_noise

    image = np.random.default_rng(level).poisson(level, (300, 400)).astype(np.float32)
    # At 3 counts the differences take few values: ties at the cut keep over 90% of them (+6%).
    assert pixel_noise(image) == pytest.approx(np.sqrt(level), rel=0.1)
    low, high = np.percentile(image, [1, 99.8])
    assert (high - low) / pixel_noise(image) < NO_SIGNAL_RANGE
    image[:, 200:] += 50 * np.sqrt(level)
    assert pixel_noise(image) == pytest.approx(np.sqrt(level), rel=0.1)


def test_pixel_noise_of_quantised_8_bit_noise_is_not_zero():
    """Most neighbours are equal in dim 8-bit fluorescence: a median absolute difference reads 0 there."""
    from unetkit.data.preprocess import pixel_noise

    image = np.random.default_rng(0).normal(4, 0.6, (200, 200)).round().astype(np.float32)
    assert 0.4 < pixel_noise(image) < 0.8
