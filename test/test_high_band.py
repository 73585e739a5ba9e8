"""The learned high-band envelope layer: what it changes, its loss, export, streaming and training."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from conftest import check_streams_and_exports, perturbed_model, speech_like, tiny_model_settings
from speechsr import geometry, high_band, model_io, runtime, settings
from speechsr.export import export_model, snr_db

RATE, EDGE = 16000, 2000.0


def band_db(x: np.ndarray, lo: float, hi: float) -> float:
    """Energy (dB) of ``x`` [time] between ``lo`` and ``hi`` Hz."""
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / RATE)
    return 10 * np.log10(spec[(f >= lo) & (f < hi)].sum() + 1e-20)


@pytest.fixture(scope="module", params=[128, 256], ids=["hop128", "hop256"])
def layer(request):
    lay = high_band.HighBandEnvelope(RATE, EDGE, bands=8, channels=8, layers=2, hop=request.param)
    lay.build((None, None, 1))
    rng = np.random.default_rng(0)
    lay.set_weights([w + rng.normal(0, 0.1, w.shape).astype(np.float32) for w in lay.get_weights()])
    return lay


def test_layer_changes_only_the_band_above_the_edge_and_gain_sets_its_level(layer):
    y = speech_like(1.0, RATE, seed=2)[None, :, None]
    out = layer(tf.constant(y)).numpy()
    assert out.shape == y.shape
    change = (out - y)[0, :, 0]
    # the STFT-domain change leaks below the edge only through the window's side lobes
    assert band_db(change, 0, EDGE - 200) < band_db(y[0, :, 0], 0, EDGE - 200) - 40
    assert band_db(change, EDGE + 100, 8000) > band_db(y[0, :, 0], 0, EDGE - 200) - 40  # it does change the band
    quieter = high_band.HighBandEnvelope(**{**layer.get_config(), "gain_db": -6.0})
    quieter.build((None, None, 1))
    quieter.set_weights(layer.get_weights())
    out6 = quieter(tf.constant(y)).numpy()[0, :, 0]
    assert band_db(out6, EDGE + 100, 8000) - band_db(out[0, :, 0], EDGE + 100, 8000) == pytest.approx(-6.0, abs=0.3)
    np.testing.assert_allclose(band_db(out6, 50, EDGE - 200), band_db(out[0, :, 0], 50, EDGE - 200), atol=0.01)


def test_tilt_lowers_the_band_more_the_further_above_the_edge(layer):
    y = tf.constant(speech_like(1.0, RATE, seed=2)[None, :, None])
    tilted = high_band.HighBandEnvelope(**{**layer.get_config(), "tilt_db": -6.0})
    tilted.build((None, None, 1))
    tilted.set_weights(layer.get_weights())
    flat, low = layer(y).numpy()[0, :, 0], tilted(y).numpy()[0, :, 0]
    near = band_db(low, 2100, 2300) - band_db(flat, 2100, 2300)   # ~0.1-0.2 octave above the edge
    far = band_db(low, 6500, 7500) - band_db(flat, 6500, 7500)    # ~1.7-1.9 octaves above
    assert -2.0 < near < 0.0 and -12.5 < far < -9.0
    assert high_band.played_level_db(RATE, EDGE, -3.0, -6.0)[[0, 64, 128, 256]].tolist() == [0.0, -3.0, -9.0, -15.0]


def test_layer_accepts_lengths_that_are_not_a_multiple_of_its_hop(layer):
    y = speech_like(0.3, RATE, seed=4)[None, :1000, None]
    assert layer(tf.constant(y)).shape == (1, 1000, 1)


def test_band_energy_loss_is_zero_at_the_played_level_and_grows_away_from_it():
    y = tf.constant(speech_like(0.5, RATE, seed=1)[None, :, None])
    loss = lambda y_hat, gain_db: float(high_band.band_energy_loss(y, y_hat, RATE, EDGE, 8, gain_db)[0])  # noqa: E731
    assert loss(y, 0.0) == pytest.approx(0.0, abs=1e-9)
    assert loss(y * 10 ** (-6 / 20), -6.0) == pytest.approx(0.0, abs=1e-6)  # the reference raised by gain_db
    assert loss(y * 10 ** (-6 / 20), 0.0) == pytest.approx(0.36, rel=1e-3)  # (log10 of -6 dB)^2


def test_overshoot_weight_counts_a_too_loud_band_more_than_a_too_quiet_one():
    y = tf.constant(speech_like(0.5, RATE, seed=1)[None, :, None])
    loss = lambda y_hat, w: float(high_band.band_energy_loss(y, y_hat, RATE, EDGE, 8, overshoot_weight=w)[0])  # noqa: E731
    louder, quieter = y * 10 ** (6 / 20), y * 10 ** (-6 / 20)
    assert loss(louder, 1.0) == pytest.approx(loss(quieter, 1.0), rel=1e-4)
    assert loss(louder, 4.0) == pytest.approx(4 * loss(quieter, 4.0), rel=1e-4)
    assert loss(quieter, 4.0) == pytest.approx(loss(quieter, 1.0), rel=1e-6)


def test_contrast_scales_the_spread_across_bands_about_the_frame_level(layer):  # layer: its configuration
    rng = np.random.default_rng(3)
    energies = rng.normal(-3, 1, (2, 5, 8)).astype(np.float32)
    assert high_band.with_contrast(energies, 1.0) is energies
    sharp = high_band.with_contrast(tf.constant(energies), 2.0).numpy()
    level = np.log10(np.mean(10 ** energies, axis=-1, keepdims=True))
    np.testing.assert_allclose(sharp - level, 2 * (energies - level), atol=1e-5)
    # in the layer: the band energies of the output spread further (the played level unchanged);
    # weights drawn from a seeded generator, not Keras' unseeded initialisers, so the figure is fixed
    y = tf.constant(speech_like(1.0, RATE, seed=2)[None, :, None])
    base = high_band.HighBandEnvelope(**layer.get_config())
    base.build((None, None, 1))
    base.set_weights([rng.normal(0, 0.2, w.shape).astype(np.float32) for w in base.get_weights()])
    sharper = high_band.HighBandEnvelope(**{**base.get_config(), "contrast": 2.0})
    sharper.build((None, None, 1))
    sharper.set_weights(base.get_weights())
    # exactly: contrast 2 plays what a contrast-1 layer plays for the prediction given contrast 2
    predicted = base.predict_log_energies
    base.predict_log_energies = lambda power: high_band.with_contrast(predicted(power), 2.0)
    np.testing.assert_allclose(sharper(y).numpy(), base(y).numpy(), atol=1e-6)
    base.predict_log_energies = predicted
    w = tf.constant(high_band.band_matrix(RATE, EDGE, 8))

    def spread(x):  # std over bands of log10 band energies, mean over frames
        spec = tf.signal.stft(x[..., 0], 512, 128, 512, window_fn=tf.signal.hann_window)
        e = np.log10(tf.matmul(tf.abs(spec) ** 2, w).numpy() + 1e-10)[0, 4:-4]
        return float(np.mean(np.std(e, axis=-1)))
    assert spread(sharper(y)) > 1.5 * spread(base(y))
    # the loss gives the reference the same contrast: the predictor keeps learning the true envelope
    loss = float(high_band.band_energy_loss(y, y, RATE, EDGE, 8, contrast=2.0)[0])
    assert loss > 0.01 and float(high_band.band_energy_loss(y, y, RATE, EDGE, 8)[0]) == pytest.approx(0.0, abs=1e-9)


def test_floor_ignores_quiet_reference_bands_unless_the_output_rises_above_the_floor():
    x = speech_like(0.5, RATE, seed=1)
    y = tf.constant(np.concatenate([x, 1e-4 * x])[None, :, None])  # speech, then the same 80 dB quieter
    loss = lambda y_hat, floor: float(high_band.band_energy_loss(y, y_hat, RATE, EDGE, 8, floor_db=floor)[0])  # noqa: E731
    louder_pause = tf.constant(np.concatenate([x, 1e-2 * x])[None, :, None])  # the pause 40 dB too loud
    every = loss(louder_pause, 0.0)
    assert every > 4.0  # (4 log10 units)^2 over half the frames
    assert loss(louder_pause, 30.0) < 1e-3  # the pause (40 dB down) stays under a floor 30 dB down
    assert 0.1 < loss(louder_pause, 60.0) < 0.5 * every  # a floor 60 dB down: what rises above it counts
    assert loss(y, 60.0) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("copy_hz, hop", [(EDGE, 128), (3000.0, 128), (3000.0, 256)])
def test_copy_source_bins_replicate_from_below_the_edge_with_hop_consistent_shifts(copy_hz, hop):
    source = high_band.copy_source_bins(RATE, EDGE, copy_hz, hop)
    edge, first = high_band.edge_bin(RATE, EDGE), high_band.edge_bin(RATE, copy_hz)
    assert source[:edge].tolist() == list(range(edge))
    assert source[edge:].max() < edge - high_band.COPY_MARGIN
    assert source[first] == source[edge:].min()  # a patch starts at copy_hz
    assert all((k - source[k]) % (high_band.N_FFT // hop) == 0 for k in range(high_band.BINS))


def test_copy_excitation_replicates_the_band_below_the_edge_upwards():
    lay = high_band.HighBandEnvelope(RATE, EDGE, bands=8, channels=8, layers=2, copy_hz=EDGE)
    lay.build((None, None, 1))
    t = np.arange(RATE) / RATE
    tone = (0.1 * np.sin(2 * np.pi * 1500 * t)).astype(np.float32)  # bin 48: copied to bins 84, 116, ...
    out = lay(tf.constant(tone[None, :, None])).numpy()[0, :, 0]
    assert band_db(out, 2000, 8000) > band_db(tone, 2000, 8000) + 40  # a band made from nothing there
    for f in (1500 + 36 * 31.25, 1500 + 68 * 31.25):  # the tone's first two copies
        assert band_db(out, f - 40, f + 40) > band_db(out, f + 200, f + 800) + 20
    with pytest.raises(ValueError, match="copy_hz >= the 2000.0 Hz edge"):
        high_band.HighBandEnvelope(RATE, EDGE, bands=8, copy_hz=1000.0)


def test_own_and_copied_parts_each_meet_the_envelope_so_there_is_no_step_between_them():
    """A loud low band and a faint own high band: above copy_hz the copy is brought to the same
    envelope as the own band below it, so the spectrum steps at copy_hz no more than the
    envelope itself does (the same layer with the own band throughout)."""
    rng = np.random.default_rng(1)
    low = np.convolve(rng.normal(0, 0.1, 2 * RATE), np.sinc(np.arange(-400, 401) / 8.4) / 8.4, "same")  # < 1.9 kHz
    x = tf.constant((low + rng.normal(0, 1e-4, 2 * RATE)).astype(np.float32)[None, :, None])  # faint own band
    steps = []
    for copy_hz in (0.0, 3000.0):
        lay = high_band.HighBandEnvelope(RATE, EDGE, bands=8, channels=8, layers=2, copy_hz=copy_hz)
        lay.build((None, None, 1))
        out = lay(x).numpy()[0, :, 0]
        steps.append(band_db(out, 3050, 3300) - band_db(out, 2700, 2950))
    assert abs(steps[1] - steps[0]) < 1.5, steps


# the first case is the shipped telephony model's layer; the second (copied excitation, contrast,
# hop 256: no shipped model) runs in the slow set
@pytest.mark.parametrize("copy_hz, edge_hz, contrast, hop", [
    (0.0, 0.0, 1.0, 128), pytest.param(4000.0, 1800.0, 1.5, 256, marks=pytest.mark.slow)])
def test_model_with_the_layer_saves_exports_and_streams_like_one_pass(tmp_path, copy_hz, edge_hz, contrast, hop):
    s = tiny_model_settings(high_band_bands=8, high_band_channels=8, high_band_layers=2, high_band_hop=hop,
                            high_band_copy_hz=copy_hz, high_band_edge_hz=edge_hz, high_band_contrast=contrast)
    model = perturbed_model(s, seed=3)
    path = tmp_path / "hb.keras"
    model_io.save_model(model, path, s)
    loaded, loaded_s, _ = model_io.load_model(path)
    assert loaded_s.high_band_bands == 8 and loaded.get_layer("high_band").gain_db == 0.0
    assert loaded.get_layer("high_band").copy_hz == copy_hz
    assert loaded.get_layer("high_band").contrast == loaded_s.high_band_contrast == contrast
    assert loaded.get_layer("high_band").hop == loaded_s.high_band_hop == hop
    assert loaded.get_layer("high_band").edge_hz == (edge_hz or 2000.0)
    x = speech_like(3.0, 4000, seed=5)
    assert geometry.receptive_context(s) > geometry.receptive_context(tiny_model_settings())
    check_streams_and_exports(loaded, loaded_s, path, x[:len(x) // 32 * 32], stream_snr_db=40)


@pytest.mark.slow  # a train.py fit with the layer: about 15 s
def test_training_only_the_layer_keeps_the_unet_of_init_from(tiny_settings_dir, tmp_path):
    from speechsr.training import TrainingError, fit, prepare
    plain = settings.load("model", tiny_settings_dir)
    source = perturbed_model(plain, seed=0)
    model_io.save_model(source, tmp_path / "unet.keras", plain)
    ms = settings.apply_overrides(plain, {"high_band_bands": 8, "high_band_channels": 8, "high_band_layers": 2})
    ts = settings.apply_overrides(settings.load("training", tiny_settings_dir), {
        "init_from": str(tmp_path / "unet.keras"), "trainable": "high_band", "mse_weight": 0.0,
        "high_band_weight": 1.0, "epochs": 1, "steps_per_epoch": 3, "patch_length": 1024})
    with pytest.raises(TrainingError, match="high_band_bands > 0"):
        prepare(plain, ts)
    trainer, run = prepare(ms, ts)
    head_before = [w.copy() for w in trainer.model.get_layer("high_band").get_weights()]
    fit(trainer, run, ms, ts)
    for layer in source.layers:
        for got, want in zip(trainer.model.get_layer(layer.name).get_weights(), layer.get_weights(), strict=True):
            np.testing.assert_array_equal(got, want)
    head_after = trainer.model.get_layer("high_band").get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(head_before, head_after, strict=True))


def test_flops_count_the_layer():
    from speechsr.model import build_model, conv_flops_per_second
    plain = tiny_model_settings()
    with_layer = tiny_model_settings(high_band_bands=8, high_band_channels=8, high_band_layers=2)
    layer_flops = build_model(with_layer).get_layer("high_band").flops_per_second()
    edge = high_band.edge_bin(16000, 2000.0)
    dft = 2 * 512 * 2 * (257 + 257 - edge) * 16000 / 128  # analysis of all bins, synthesis of the high band
    assert dft < layer_flops < 1.2 * dft
    assert conv_flops_per_second(with_layer) == pytest.approx(conv_flops_per_second(plain) + layer_flops)
    hop256 = tiny_model_settings(high_band_bands=8, high_band_channels=8, high_band_layers=2, high_band_hop=256)
    assert build_model(hop256).get_layer("high_band").flops_per_second() == pytest.approx(layer_flops / 2)
    with pytest.raises(ValueError, match="hop must be one of"):
        high_band.HighBandEnvelope(RATE, EDGE, bands=8, hop=100)


def test_receptive_context_bounds_what_an_input_sample_changes():
    """geometry.receptive_context comes from the table the model is built from: an input change
    moves no output sample further away than it says (and does move samples near its bound)."""
    from speechsr.model import build_model
    for s in (tiny_model_settings(), tiny_model_settings(num_blocks=3, kernel_sizes=[15, 9, 5])):
        model = perturbed_model(s, seed=1)
        conv_layers = {layer.name: layer for layer in model.layers if layer.name.endswith("_conv")}
        table = geometry.conv_table(s)
        assert [f"{c.name}_conv" for c in table] == [layer.name for layer in build_model(s).layers
                                                     if layer.name.endswith("_conv")]
        for c in table:
            layer = conv_layers[f"{c.name}_conv"]
            assert (layer.filters, layer.kernel_size[0], layer.strides[0]) == (c.filters, c.kernel, c.stride)
        n, center = 1024, 512
        x = np.random.default_rng(0).normal(0, 0.1, (1, n, 1)).astype(np.float32)
        bumped = x.copy()
        bumped[0, center, 0] += 0.5
        diff = np.abs(model(bumped).numpy()[0, :, 0] - model(x).numpy()[0, :, 0])
        moved = np.nonzero(diff > 1e-6)[0] / 4 - center  # in input samples
        context = geometry.receptive_context(s)
        assert np.abs(moved).max() <= context
        assert np.abs(moved).max() > context / 3


@pytest.mark.slow  # several seconds of model work or processes: CI runs it (make test stays near a minute)
def test_int8_export_quantizes_the_network_and_keeps_the_layers_dft_float(tmp_path):
    """Dynamic-range int8 quantizes constant weights; the layer's DFT and band matrices must stay
    float32 (``float_constants``), else the output is ruined."""
    from speechsr.export import build_export_model, check_signal, convert, copy_weights
    s = tiny_model_settings(high_band_bands=8, high_band_channels=8, high_band_layers=2, high_band_copy_hz=3000.0)
    model = perturbed_model(s, seed=4)
    path = tmp_path / "hb.keras"
    model_io.save_model(model, path, s)
    res = export_model(path, "lite-int8")
    float_res = export_model(path, "lite")
    assert res["written"] and res["snr_db"] >= 35 and res["snr_db"] < float_res["snr_db"] - 20  # int8: close, not equal
    quantizable = sum(int(np.prod(w.shape)) for w in model.weights if np.prod(w.shape) >= 1024)  # the converter's threshold
    assert float_res["bytes"] - res["bytes"] > 0.8 * 3 * quantizable  # those weights: 1 byte each instead of 4
    x = check_signal(s)
    export = build_export_model(s)
    copy_weights(model, export, s)
    assert export.get_layer("high_band").float_constants is False
    plain = tmp_path / "all_int8.tflite"
    plain.write_bytes(convert(export, "lite-int8"))  # what the converter does to them otherwise

    def dft_types(path):  # dtypes of the tensors holding the analysis DFT matrix [N_FFT, 2 * BINS]
        from ai_edge_litert.interpreter import Interpreter
        tensors = Interpreter(model_path=str(path)).get_tensor_details()
        return {t["dtype"].__name__ for t in tensors if int(np.prod(t["shape"])) == high_band.N_FFT * 2 * high_band.BINS}

    assert dft_types(res["path"]) == {"float32"}
    assert dft_types(plain) == {"int8"}
    assert snr_db(model(x, training=False).numpy(), runtime.LiteRunner(res["path"])(x)) == pytest.approx(res["snr_db"])
