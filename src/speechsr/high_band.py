"""Learned high-band envelope: the band above the input's Nyquist at the level speech has there.

Trained on mean squared error, the U-Net restores the phase-safe part of the missing band and
leaves it about 17 dB too quiet; perceptual metrics reward a high band whose *spectro-temporal
envelope* is right far more than its waveform (``../shared/TOOLCHAIN.md``: the true envelope
with random phase scores +1.05 ViSQOL over sinc). :class:`HighBandEnvelope` sits after the
U-Net and re-levels its output above ``edge_hz`` as spectral band replication does:

1. STFT of the U-Net output ``y`` (``N_FFT`` = 512, hop ``hop`` output samples: ``HOP`` = 128
   unless the model settings say ``high_band_hop``; periodic Hann), computed as frames times a
   fixed DFT matrix (:mod:`speechsr.framed_dft`: exports to LiteRT, runs as a matrix product).
2. A small dilated Conv1D stack reads the log power of the bins below ``edge_hz`` (shape of the
   frame's low-band spectrum and its level) and predicts ``log10`` energies of ``bands`` mel
   bands between ``edge_hz`` and Nyquist, per frame, relative to the frame's low-band level.
3. The excitation (fine structure and phase) is the U-Net's own high band, and above
   ``copy_hz`` (if set) the band below the edge replicated upwards (:func:`copy_source_bins`);
   each part is scaled so its smoothed band envelope becomes the predicted one (separately, so
   there is no step where they meet), played ``gain_db`` dB relative to it at the edge and
   ``tilt_db`` dB more per octave above it (:func:`played_level_db`), its spread across the bands
   about the frame's level multiplied by ``contrast`` (:func:`with_contrast`: the prediction is a
   conditional mean, flatter than any one frame of speech).
4. Only the change is synthesised (fixed inverse-DFT matrix of the high band's bins, overlap-add
   divided by the summed squared window) and added to ``y``: bins below ``edge_hz`` stay the
   U-Net's exactly.

:func:`band_energy_loss` trains the predictor: squared difference of ``log10`` band energies of
the output and of the reference raised by the played level (so the predictor learns the true
level, and ``gain_db`` / ``tilt_db`` / ``contrast`` set how it is played). Shapes: ``[batch, time, 1]`` waveforms at
``rate`` Hz; frames ``[batch, frames, ...]``.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from speechsr.framed_dft import BINS, N_FFT, analyse, dft_matrices, kept_float, synthesise
from speechsr.geometry import HIGH_BAND_HOP as HOP  # output samples
from speechsr.settings import HIGH_BAND_HOPS

LOG_EPS = 1e-10
MAX_GAIN = 1e3  # +60 dB: a cap for bins where the U-Net's band is (near) silent
COPY_WIDTH = 32  # bins per replicated patch (1 kHz at 16 kHz)
COPY_MARGIN = 4  # bins left out below the edge (the anti-alias filter's roll-off)


def edge_bin(rate: int, edge_hz: float) -> int:
    """Number of STFT bins strictly below ``edge_hz`` (the features; the rest are the high band)."""
    return int(np.ceil(edge_hz * N_FFT / rate))


def band_matrix(rate: int, edge_hz: float, bands: int) -> np.ndarray:
    """Mel triangles ``[BINS, bands]`` from ``edge_hz`` to ``rate / 2`` (zero below the edge)."""
    with tf.init_scope():  # eager even when called while tracing
        w = tf.signal.linear_to_mel_weight_matrix(bands, BINS, rate, float(edge_hz), rate / 2).numpy()
    w[:edge_bin(rate, edge_hz)] = 0.0
    return w.astype(np.float32)


def played_level_db(rate: int, edge_hz: float, gain_db: float, tilt_db: float) -> np.ndarray:
    """Level ``[BINS]`` (dB) played relative to the predicted envelope: ``gain_db`` at the edge,
    ``tilt_db`` more per octave above it (0 below the edge, where nothing is changed)."""
    f = np.arange(BINS) * rate / N_FFT
    octaves = np.log2(np.maximum(f, edge_hz) / edge_hz)
    return np.where(f >= edge_hz, gain_db + tilt_db * octaves, 0.0).astype(np.float32)


def with_contrast(log_energies, contrast: float):
    """``log10`` band energies ``[..., bands]`` (a tensor) with their deviations from the frame's
    level (``log10`` of the mean band energy) multiplied by ``contrast``; the level is kept.
    ``contrast`` 1 returns the input."""
    if contrast == 1.0:
        return log_energies
    level = tf.math.log(tf.reduce_mean(tf.exp(log_energies * np.log(10.0)), axis=-1, keepdims=True) + LOG_EPS)
    level = level / np.log(10.0)
    return level + contrast * (log_energies - level)


def copy_source_bins(rate: int, edge_hz: float, copy_hz: float, hop: int = HOP) -> np.ndarray:
    """Source bin ``[BINS]`` of each bin of the replicated band: bins below ``edge_hz`` are their
    own; above it, patches of ``COPY_WIDTH`` bins from just below the edge (leaving ``COPY_MARGIN``
    bins of filter roll-off out) repeat, one starting at ``copy_hz``, as spectral band replication
    does. Every shift is a multiple of ``N_FFT / hop`` bins (``hop``: the STFT hop, output samples),
    so the copied frames' phases stay consistent from hop to hop."""
    edge, first = edge_bin(rate, edge_hz), edge_bin(rate, copy_hz)
    step = N_FFT // hop
    start = edge - COPY_MARGIN - COPY_WIDTH
    start -= (first - start) % step
    if start < 1 or first < edge:
        raise ValueError(f"copying from {copy_hz} Hz needs copy_hz >= the {edge_hz} Hz edge and "
                         f"{COPY_WIDTH + COPY_MARGIN} bins below the edge")
    k = np.arange(BINS)
    return np.where(k < edge, k, start + (k - first) % COPY_WIDTH).astype(np.int32)


@keras.saving.register_keras_serializable(package="speechsr")
class HighBandEnvelope(keras.layers.Layer):
    """``[batch, time, 1]`` -> same shape: the band above ``edge_hz`` re-levelled to a predicted envelope.

    ``bands`` mel bands, a predictor of ``layers`` Conv1D (``channels``, ``kernel``, dilation
    1, 2, 4, ...); ``gain_db`` / ``tilt_db`` the level played relative to the prediction
    (:func:`played_level_db`), ``contrast`` its spread across bands (:func:`with_contrast`). The
    fine structure scaled to it is the input's own band, or above ``copy_hz`` (0 = nowhere) the
    band below the edge replicated upwards (:func:`copy_source_bins`). ``hop``: the STFT's hop,
    output samples (one of ``HIGH_BAND_HOPS``); the predictor's frames are that far apart.
    Any length works.
    """

    def __init__(self, rate: int, edge_hz: float, bands: int, channels: int = 128, layers: int = 4,
                 kernel: int = 3, gain_db: float = 0.0, tilt_db: float = 0.0, copy_hz: float = 0.0,
                 contrast: float = 1.0, hop: int = HOP, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.edge_hz, self.bands = int(rate), float(edge_hz), int(bands)
        self.channels, self.num_layers, self.kernel = int(channels), int(layers), int(kernel)
        self.gain_db, self.tilt_db = float(gain_db), float(tilt_db)
        self.copy_hz, self.contrast = float(copy_hz), float(contrast)
        self.hop = int(hop)
        if self.hop not in HIGH_BAND_HOPS:
            raise ValueError(f"hop must be one of {HIGH_BAND_HOPS} output samples, got {hop}")
        self.edge = edge_bin(self.rate, self.edge_hz)
        self.float_constants = False  # see _matrices
        if self.copy_hz:
            copy_source_bins(self.rate, self.edge_hz, self.copy_hz, self.hop)  # checks copy_hz
        self.predictor = [keras.layers.Conv1D(self.channels, self.kernel, padding="same", dilation_rate=2 ** i,
                                              activation="gelu", name=f"envelope{i}") for i in range(self.num_layers)]
        self.predictor.append(keras.layers.Conv1D(self.bands, 1, name="envelope_out",
                                                  kernel_initializer="zeros"))

    def build(self, input_shape):
        width = self.edge + 1
        for conv in self.predictor:
            conv.build((None, None, width))
            width = conv.filters
        analysis, synthesis = dft_matrices()
        high_bins = np.r_[self.edge:BINS, BINS + self.edge:2 * BINS]  # only the band above the edge changes
        synthesis = synthesis[:, high_bins].T.copy()  # [2 * (BINS - edge), N_FFT]
        w = band_matrix(self.rate, self.edge_hz, self.bands)
        spread = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-9)  # band -> bin interpolation [BINS, bands]
        self._analysis, self._synthesis = tf.constant(analysis), tf.constant(synthesis)
        e = self.edge  # from here on only the bins above the edge: [..., BINS - edge]
        self._bands, self._spread_t = tf.constant(w[e:]), tf.constant(spread.T[:, e:].copy())  # zero below e
        self._played = tf.constant(10 ** (played_level_db(self.rate, self.edge_hz, self.gain_db, self.tilt_db)[e:] / 20))
        self._source = self._copied = None
        if self.copy_hz:
            self._source = tf.constant(copy_source_bins(self.rate, self.edge_hz, self.copy_hz, self.hop)[e:])
            self._copied = tf.constant((np.arange(e, BINS) >= edge_bin(self.rate, self.copy_hz)).astype(np.float32))

    def _matrices(self, y: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """The fixed (analysis, synthesis, band, spread) matrices; kept float32 through int8
        quantization with ``float_constants`` (set by the int8 export; :func:`speechsr.framed_dft.kept_float`)."""
        matrices = (self._analysis, self._synthesis, self._bands, self._spread_t)
        return kept_float(y, matrices) if self.float_constants else matrices

    def predict_log_energies(self, power: tf.Tensor) -> tf.Tensor:
        """``log10`` band energies ``[batch, frames, bands]`` from STFT power ``[batch, frames, BINS]``."""
        low = power[..., :self.edge]
        level = tf.math.log(tf.reduce_mean(low, axis=-1, keepdims=True) + LOG_EPS) / np.log(10.0)
        shape = tf.math.log(low + LOG_EPS) / np.log(10.0) - level
        h = tf.concat([shape, (level + 5.0) / 3.0], axis=-1)
        for conv in self.predictor:
            h = conv(h)
        return h + level

    def call(self, y):
        analysis, synthesis, bands, spread = self._matrices(y)
        spec = analyse(y, analysis, self.hop)  # [B, F, 2 * BINS]
        re, im = spec[..., :BINS], spec[..., BINS:]
        power = re * re + im * im
        played = with_contrast(self.predict_log_energies(power), self.contrast)
        target = tf.matmul(tf.exp(played * np.log(10.0)), spread)
        e = self.edge
        new_re, new_im = self._scaled(re[..., e:], im[..., e:], target, bands, spread)  # the input's own band
        if self._source is not None:  # above copy_hz, the replicated band, brought to the envelope on its own
            copy_re, copy_im = self._scaled(tf.gather(re, self._source, axis=-1), tf.gather(im, self._source, axis=-1),
                                            target, bands, spread)
            new_re = new_re + (copy_re - new_re) * self._copied
            new_im = new_im + (copy_im - new_im) * self._copied
        # only the change is synthesised: the high band replaced, nothing below the edge
        change = tf.concat([new_re - re[..., e:], new_im - im[..., e:]], axis=-1)  # [B, F, 2 * (BINS - e)]
        return y + synthesise(change, synthesis, self.hop, tf.shape(y)[1])

    def _scaled(self, ex_re: tf.Tensor, ex_im: tf.Tensor, target: tf.Tensor, bands: tf.Tensor,
                spread: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Excitation bins ``[B, F, BINS - edge]`` scaled so their smoothed band envelope (``bands``
        then ``spread``: :meth:`_matrices`) becomes ``target`` (power per bin, same shape), times the
        played level."""
        current = tf.matmul(tf.matmul(ex_re * ex_re + ex_im * ex_im, bands), spread)
        gain = tf.minimum(tf.sqrt((target + LOG_EPS) / (current + LOG_EPS)), MAX_GAIN) * self._played
        return ex_re * gain, ex_im * gain

    def flops_per_second(self) -> float:
        """Multiply-adds x 2 for one second of audio: the two DFT matrix products, the predictor and
        the band matrices (element-wise operations left out)."""
        per_frame = 2 * N_FFT * 2 * (BINS + BINS - self.edge)  # analysis + synthesis of the high band
        width = self.edge + 1
        for conv in self.predictor:
            per_frame += 2 * conv.kernel_size[0] * width * conv.filters
            width = conv.filters
        per_frame += 2 * 3 * BINS * self.bands  # band energies and two band -> bin spreads
        return per_frame * self.rate / self.hop

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "edge_hz": self.edge_hz, "bands": self.bands,
                "channels": self.channels, "layers": self.num_layers, "kernel": self.kernel, "gain_db": self.gain_db,
                "tilt_db": self.tilt_db, "copy_hz": self.copy_hz, "contrast": self.contrast, "hop": self.hop}


def band_energy_loss(y: tf.Tensor, y_hat: tf.Tensor, rate: int, edge_hz: float, bands: int,
                     gain_db: float = 0.0, tilt_db: float = 0.0, overshoot_weight: float = 1.0,
                     contrast: float = 1.0, floor_db: float = 0.0) -> tf.Tensor:
    """Per-example mean squared ``log10`` band-energy error above ``edge_hz``, ``[batch, time, 1]`` -> ``[batch]``.

    The reference's energies are given the contrast (:func:`with_contrast`) and raised by the level
    (:func:`played_level_db`, averaged over each band) that the model plays. Errors where the
    output is louder count ``overshoot_weight`` times
    (an expectile loss: with weight w the predictor learns the 1 / (1 + w) expectile, below the
    mean where the envelope is uncertain, since a wrong loud band costs more than a quiet one).
    ``floor_db`` > 0: a reference band more than that many dB below the example's loudest band
    (pauses, the recording's noise floor) only asks the output not to rise above that floor, so
    the predictor is not trained on the level of silence.
    """
    w = band_matrix(rate, edge_hz, bands)
    level = (played_level_db(rate, edge_hz, gain_db, tilt_db) @ w) / np.maximum(w.sum(axis=0), 1e-9)  # [bands] dB
    w = tf.constant(w)

    def log_bands(x):
        spec = tf.signal.stft(x[..., 0], N_FFT, HOP, N_FFT, window_fn=tf.signal.hann_window)
        power = tf.square(tf.math.real(spec)) + tf.square(tf.math.imag(spec))  # |z|^2 without |z|'s NaN gradient at 0
        return tf.math.log(tf.matmul(power, w) + LOG_EPS) / np.log(10.0)

    reference = with_contrast(log_bands(y), contrast) + tf.constant(level.astype(np.float32)) / 10.0
    output = log_bands(y_hat)
    error = output - reference
    if floor_db > 0:
        floor = tf.reduce_max(reference, axis=[1, 2], keepdims=True) - floor_db / 10.0
        error = tf.where(reference >= floor, error, tf.nn.relu(output - floor))
    weight = tf.where(error > 0, float(overshoot_weight), 1.0)
    return tf.reduce_mean(weight * tf.square(error), axis=[1, 2])
