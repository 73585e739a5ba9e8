"""U-Net geometry from model settings, without TensorFlow: filters, kernels, input multiple.

Shared by :mod:`speechsr.model` (which builds the Keras graph) and the TensorFlow-free
inference path (:mod:`speechsr.inference`, :mod:`speechsr.runtime`).
"""

from __future__ import annotations

from speechsr.settings import ModelSettings


def required_multiple(s: ModelSettings) -> int:
    """Input lengths (low-res samples) must be a multiple of this: ``2 ** (num_blocks + 1)``."""
    return 2 ** (s.num_blocks + 1)


def level_filters(s: ModelSettings) -> list[int]:
    """Filters of downsampling blocks 0..num_blocks-1, then the bottleneck (last entry)."""
    return [min(s.filter_cap, int(round(s.first_filters * s.filter_growth ** i)))
            for i in range(s.num_blocks + 1)]


def level_kernel(s: ModelSettings, level: int) -> int:
    """Kernel size (taps) at ``level``; the last configured value repeats."""
    return s.kernel_sizes[min(level, len(s.kernel_sizes) - 1)]


#: STFT of the learned high-band envelope (:mod:`speechsr.high_band`), output samples.
HIGH_BAND_FFT, HIGH_BAND_HOP = 512, 128


def high_band_edge(s: ModelSettings) -> float:
    """Lower edge (Hz) of the band the high-band envelope layer restores."""
    return s.high_band_edge_hz or s.input_rate / 2


def high_band_context(s: ModelSettings) -> int:
    """Output samples on each side of a point that the high-band envelope layer reads
    (half the STFT window + the predictor's dilated stack); 0 without the layer."""
    if not s.high_band_bands:
        return 0
    frames = (s.high_band_kernel - 1) // 2 * (2 ** s.high_band_layers - 1)
    return frames * HIGH_BAND_HOP + HIGH_BAND_FFT // 2
