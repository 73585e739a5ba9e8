"""Discriminators and GAN losses for adversarial training (training settings switch them on).

Two kinds of discriminator look at the 16 kHz waveform ``[batch, time, 1]``, each returning
``(logits, feature_maps)``:

- :class:`PeriodDiscriminator` (HiFi-GAN's multi-period idea): the waveform folded into
  ``[batch, time / period, period, 1]`` and strided 2-D convolutions along time, one per period;
  it sees periodic (harmonic) structure.
- :class:`SpectrogramDiscriminator` (UnivNet's multi-resolution idea): 2-D convolutions over the
  log-magnitude STFT ``[batch, frames, bins, 1]`` at one resolution; it sees the spectro-temporal
  envelope — the level and timing of the high band — which is what listeners and ViSQOL reward.

Widths are small (``channels``) so that a discriminator step costs less than the generator's on a
2-core CPU; ``benchmarks/bench_training.py`` prints the costs. Losses are least-squares GAN
(real -> 1, fake -> 0) and L1 feature matching, each per example (``[batch]``) like
:mod:`speechsr.losses`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

LOG_EPS = 1e-5


def _conv_stack(convs: list, post: keras.layers.Layer, h: tf.Tensor) -> tuple:
    """``convs`` with leaky ReLU (0.1), then ``post``: ``(logits, [every layer's output])``."""
    features = []
    for conv in convs:
        h = tf.nn.leaky_relu(conv(h), 0.1)
        features.append(h)
    logits = post(h)
    return logits, features + [logits]


@keras.saving.register_keras_serializable(package="speechsr")
class PeriodDiscriminator(keras.layers.Layer):
    """Waveform ``[batch, time, 1]`` folded by ``period`` samples -> ``(logits, features)``."""

    def __init__(self, period: int, channels: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.period, self.channels = period, channels
        widths = [channels, 2 * channels, 4 * channels, 4 * channels]
        self.convs = [keras.layers.Conv2D(w, (5, 1), strides=(3, 1), padding="same", name=f"conv{i}")
                      for i, w in enumerate(widths)]
        self.post = keras.layers.Conv2D(1, (3, 1), padding="same", name="post")

    def call(self, x):
        time = tf.shape(x)[1]
        pad = (-time) % self.period
        x = tf.pad(x, [[0, 0], [0, pad], [0, 0]], mode="REFLECT")
        return _conv_stack(self.convs, self.post, tf.reshape(x, [tf.shape(x)[0], -1, self.period, 1]))

    def get_config(self):
        return {**super().get_config(), "period": self.period, "channels": self.channels}


@keras.saving.register_keras_serializable(package="speechsr")
class SpectrogramDiscriminator(keras.layers.Layer):
    """Log-magnitude STFT (``n_fft``, ``hop`` in output samples) of ``[batch, time, 1]`` -> ``(logits, features)``."""

    def __init__(self, n_fft: int, hop: int, channels: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.n_fft, self.hop, self.channels = n_fft, hop, channels
        self.convs = [keras.layers.Conv2D(channels, (3, 9), strides=s, padding="same", name=f"conv{i}")
                      for i, s in enumerate([(1, 1), (1, 2), (1, 2), (1, 2)])]
        self.post = keras.layers.Conv2D(1, (3, 3), padding="same", name="post")

    def call(self, x):
        spec = tf.abs(tf.signal.stft(x[..., 0], self.n_fft, self.hop, self.n_fft, window_fn=tf.signal.hann_window))
        return _conv_stack(self.convs, self.post, tf.math.log(spec + LOG_EPS)[..., None])

    def get_config(self):
        return {**super().get_config(), "n_fft": self.n_fft, "hop": self.hop, "channels": self.channels}


class Discriminators(keras.Model):
    """All discriminators of a run: ``call(x)`` -> list of ``(logits, features)``, one per discriminator."""

    def __init__(self, periods: list[int], resolutions: list[list[int]], channels: int, **kwargs):
        super().__init__(**kwargs)
        self.members = ([PeriodDiscriminator(p, channels, name=f"period{p}") for p in periods]
                        + [SpectrogramDiscriminator(n, h, channels, name=f"stft{n}") for n, h in resolutions])

    def call(self, x):
        return [member(x) for member in self.members]


def build_discriminators(periods: list[int], resolutions: list[list[int]], channels: int,
                         patch_samples: int) -> Discriminators:
    """Discriminators built (weights created) for waveforms of ``patch_samples`` output samples."""
    d = Discriminators(periods, resolutions, channels, name="discriminators")
    d(tf.zeros([1, patch_samples, 1]))
    return d


def _mean_per_example(t: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.reshape(t, [tf.shape(t)[0], -1]), axis=1)


def discriminator_loss(real: list, fake: list) -> tf.Tensor:
    """Least-squares loss of the discriminators, per example ``[batch]``: real -> 1, fake -> 0."""
    return tf.add_n([_mean_per_example(tf.square(1.0 - r)) + _mean_per_example(tf.square(f))
                     for (r, _), (f, _) in zip(real, fake)])


def generator_loss(fake: list) -> tf.Tensor:
    """Least-squares adversarial loss of the generator, per example ``[batch]``: fake -> 1."""
    return tf.add_n([_mean_per_example(tf.square(1.0 - f)) for f, _ in fake])


def feature_matching_loss(real: list, fake: list) -> tf.Tensor:
    """Mean L1 distance of the discriminators' feature maps, real (held fixed) vs fake, per example."""
    terms = []
    for (_, real_features), (_, fake_features) in zip(real, fake):
        for r, f in zip(real_features, fake_features):
            terms.append(_mean_per_example(tf.abs(tf.stop_gradient(r) - f)))
    return tf.add_n(terms) / len(real)
