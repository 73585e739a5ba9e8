"""Model geometry from model settings, without TensorFlow: the U-Net's per-level convolution table,
and for both architectures (the U-Net, the spectral model) the input multiple and receptive field.

:func:`conv_table` is the one description of the U-Net's convolutions: :func:`speechsr.model.build_model`
builds its layers from it and :func:`receptive_context` derives the receptive field from it, so
a change to the U-Net changes both. Shared with the TensorFlow-free inference path
(:mod:`speechsr.inference`, :mod:`speechsr.runtime`).
"""

from __future__ import annotations

import dataclasses

from speechsr import low_band
from speechsr.settings import ModelSettings


def required_multiple(s: ModelSettings) -> int:
    """Input lengths and window starts (low-res samples) must be multiples of this: the U-Net's
    ``2 ** (num_blocks + 1)``; the spectral model's STFT hop in input samples (its frame grid)."""
    if s.architecture == "spectral":
        return max(1, SPECTRAL_HOP // (s.output_rate // s.input_rate))
    return 2 ** (s.num_blocks + 1)


def level_filters(s: ModelSettings) -> list[int]:
    """Filters of downsampling blocks 0..num_blocks-1, then the bottleneck (last entry)."""
    return [min(s.filter_cap, int(round(s.first_filters * s.filter_growth ** i)))
            for i in range(s.num_blocks + 1)]


def level_kernel(s: ModelSettings, level: int) -> int:
    """Kernel size (taps) at ``level``; the last configured value repeats."""
    return s.kernel_sizes[min(level, len(s.kernel_sizes) - 1)]


#: Window (output samples) of the framed STFT of the high-band and spectral layers
#: (:mod:`speechsr.framed_dft`), and the high-band layer's default hop (model setting ``high_band_hop``).
FRAMED_FFT, HIGH_BAND_HOP = 512, 128
#: Hop (output samples) of the spectral model's STFT (:mod:`speechsr.spectral`).
SPECTRAL_HOP = 128


def high_band_edge(s: ModelSettings) -> float:
    """Lower edge (Hz) of the band the high-band envelope layer restores."""
    return s.high_band_edge_hz or s.input_rate / 2


def high_band_context(s: ModelSettings) -> int:
    """Output samples on each side of a point that the high-band envelope layer reads
    (half the STFT window + the predictor's dilated stack); 0 without the layer."""
    if not s.high_band_bands:
        return 0
    frames = (s.high_band_kernel - 1) // 2 * (2 ** s.high_band_layers - 1)
    return frames * s.high_band_hop + FRAMED_FFT // 2


@dataclasses.dataclass(frozen=True)
class Conv:
    """One Conv1D of the U-Net: layer ``{name}_conv``, ``filters`` x ``kernel`` taps, ``stride``;
    ``shuffle``: the subpixel shuffle factor after it (1 = none); ``jump``: low-res input samples
    between two of its input samples (its input rate is ``input_rate / jump``)."""
    name: str
    filters: int
    kernel: int
    stride: int = 1
    shuffle: int = 1
    jump: int = 1


def conv_table(s: ModelSettings) -> list[Conv]:
    """The U-Net's convolutions in build order: downsampling blocks ``down0..``, ``bottleneck``,
    upsampling blocks ``up{n-1}..up0`` (shuffle 2), ``top`` (shuffle 2, back to the input rate)
    and ``final`` (``factor`` channels, shuffle ``factor``: the residual at the output rate)."""
    filters, n = level_filters(s), s.num_blocks
    table = [Conv(f"down{level}", filters[level], level_kernel(s, level), stride=2, jump=2 ** level)
             for level in range(n)]
    table.append(Conv("bottleneck", filters[n], level_kernel(s, n), stride=2, jump=2 ** n))
    table += [Conv(f"up{level}", 2 * filters[level], level_kernel(s, level), shuffle=2, jump=2 ** (level + 2))
              for level in reversed(range(n))]
    table.append(Conv("top", 2 * filters[0], level_kernel(s, 0), shuffle=2, jump=2))
    factor = s.output_rate // s.input_rate
    table.append(Conv("final", factor, level_kernel(s, 0), shuffle=factor, jump=1))
    return table


def spectral_context_frames(dilations) -> int:
    """STFT frames on each side of a frame that the spectral model's prediction for it reads: one
    for the entry Conv1D (kernel 3), ``d`` for each residual block of dilation ``d``."""
    return 1 + sum(dilations)


def receptive_context(s: ModelSettings) -> int:
    """Low-res samples on each side of an output point that influence it (half receptive field).

    From :func:`conv_table`: each convolution widens the field by ``(kernel - 1) * jump`` input
    samples; the fixed sinc interpolator reaches ``interpolation_taps``; padding asymmetry is
    covered by one extra ``required_multiple``; the high-band envelope layer reads
    :func:`high_band_context` output samples further; the input's low band
    (``low_band_from_input``, :mod:`speechsr.low_band`) :func:`speechsr.low_band.context` more.
    The spectral model: the interpolator, the STFT frames over a point (half a window each side)
    and the frames their predictions read (:func:`spectral_context_frames`), one multiple more.
    """
    factor = s.output_rate // s.input_rate
    extra = low_band.context(factor) if s.low_band_from_input else 0
    if s.architecture == "spectral":
        reach = FRAMED_FFT + spectral_context_frames(s.spectral_dilations) * SPECTRAL_HOP  # output samples
        return s.interpolation_taps + -(-reach // factor) + required_multiple(s) + extra
    field = 1 + sum((c.kernel - 1) * c.jump for c in conv_table(s))
    context = max(field // 2 + required_multiple(s), s.interpolation_taps)
    context += -(-high_band_context(s) // factor)
    return context + extra
