"""Training loop: tf.distribute custom loop with resumable checkpoints and best-model keeping.

A run folder ``<models_dir>/<run_name>/`` holds:

- ``best.keras`` + ``best.json``: the model with the lowest validation loss so far;
- ``checkpoints/``: the last training state (weights, optimizer, epoch and step counters),
  written every ``checkpoint_every_steps`` steps and at each epoch end, for ``--resume``;
- ``train_loss.txt`` / ``val_loss.txt``: one value per epoch and line (as the reference suite);
  ``history.csv``: epoch, losses, validation SNR/LSD, learning rate, seconds, input-wait share;
- ``tensorboard/``: TensorBoard logs; ``settings/``: the settings the run used.

Strategies: ``default`` (one device), ``mirrored`` (all local GPUs, or CPUs made logical
devices), ``multiworker`` (machines listed in ``TF_CONFIG``; only the chief writes the run).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from speechsr import adversarial, dataset, losses, metrics
from speechsr import settings as settings_mod
from speechsr.audio import atomic_path
from speechsr.geometry import high_band_edge
from speechsr.model import build_model, required_multiple
from speechsr.model_io import save_model
from speechsr.plots import training_curves

log = logging.getLogger("speechsr")
STRATEGIES = ("default", "mirrored", "multiworker")


class TrainingError(RuntimeError):
    """A run cannot start or continue; the message says why and what to do."""


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy called ``name`` (see module docstring)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise TrainingError("--strategy multiworker needs the TF_CONFIG environment variable "
                                "(cluster spec and this worker's task)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise TrainingError(f"unknown strategy '{name}' (choose from {', '.join(STRATEGIES)})")


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run folder: always, except on non-chief multi-workers."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return not has_chief and resolver.task_type == "worker" and resolver.task_id == 0


def _write_lines(path: Path, values: list[float]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{v:.8g}\n" for v in values))


def _learning_rate(ts: settings_mod.TrainingSettings, total_steps: int):
    if ts.lr_schedule == "constant" and ts.warmup_steps == 0:
        return ts.learning_rate
    decay = max(1, total_steps - ts.warmup_steps)
    alpha = 1.0 if ts.lr_schedule == "constant" else 0.02
    if ts.warmup_steps:
        return keras.optimizers.schedules.CosineDecay(0.0, decay, alpha=alpha, warmup_target=ts.learning_rate,
                                                      warmup_steps=ts.warmup_steps)
    return keras.optimizers.schedules.CosineDecay(ts.learning_rate, decay, alpha=alpha)


def _optimizer(ts: settings_mod.TrainingSettings, total_steps: int) -> keras.optimizers.Optimizer:
    lr = _learning_rate(ts, total_steps)
    if ts.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=ts.weight_decay)
    return keras.optimizers.Adam(lr)


def check_inputs(ms: settings_mod.ModelSettings, ts: settings_mod.TrainingSettings) -> None:
    """Fail fast, before any work, on inputs that cannot train."""
    from speechsr.split import SplitError, read_split_csv
    for key in ("train_csv", "validation_csv"):
        path = settings_mod.project_path(getattr(ts, key))
        if not path.is_file():
            raise TrainingError(f"{key} '{path}' not found: run preprocessing/splice_raw_data.py and "
                                "preprocessing/test_train_split.py first (README, 'Train on your own corpus')")
        try:  # header, fields, every clip file present: checked before a run folder exists
            rows = read_split_csv(path)
        except SplitError as e:
            raise TrainingError(f"{key}: {e}") from None
        if not rows:
            raise TrainingError(f"{key} '{path}' lists no clips")
        if key == "train_csv" and len(rows) < ts.batch_size:  # one patch per clip and batch
            raise TrainingError(f"{key} '{path}': {len(rows)} clips, fewer than one batch of {ts.batch_size}")
    if ts.init_from and not settings_mod.project_path(ts.init_from).is_file():
        raise TrainingError(f"init_from '{settings_mod.project_path(ts.init_from)}' not found")
    if (ts.high_band_weight > 0 or ts.trainable == "high_band") and not ms.high_band_bands:
        raise TrainingError("high_band_weight / trainable 'high_band' need a high-band envelope layer: "
                            "set model high_band_bands > 0")
    if ts.trainable == "high_band" and not ts.init_from:
        raise TrainingError("trainable 'high_band' trains only the envelope layer: set init_from to the "
                            "trained U-Net it goes with")
    if ts.patch_length % required_multiple(ms):
        raise TrainingError(f"patch_length {ts.patch_length} must be a multiple of {required_multiple(ms)} "
                            f"(2 ** (num_blocks + 1) low-res samples)")


class Trainer:
    """Owns the model, optimizer, checkpoint and run folder of one training run."""

    def __init__(self, ms: settings_mod.ModelSettings, ts: settings_mod.TrainingSettings,
                 strategy: str = "default", resume: bool = False, overwrite: bool = False):
        check_inputs(ms, ts)
        self.ms, self.ts = ms, ts
        self.factor = ms.output_rate // ms.input_rate
        self.strategy = make_strategy(strategy)
        self.chief = _is_chief(self.strategy)
        if strategy != "default":
            log.info("strategy %s: %d replica(s) on %s", strategy, self.strategy.num_replicas_in_sync,
                     ", ".join(self.strategy.extended.worker_devices))
        self.run_dir = settings_mod.project_path(ts.models_dir) / ts.run_name
        ckpt_dir = self.run_dir / "checkpoints"
        if self.chief:
            self._check_run_dir(ckpt_dir, resume, overwrite)  # checks only: fit() writes the folder
        # non-chief workers must still write their checkpoint shards somewhere: a private temp dir
        self.ckpt_dir = ckpt_dir if self.chief else Path(tempfile.mkdtemp(prefix="speechsr-worker-"))
        if not self.chief and resume and ckpt_dir.exists():
            shutil.copytree(ckpt_dir, self.ckpt_dir, dirs_exist_ok=True)

        self.steps_per_epoch = ts.steps_per_epoch or dataset.steps_in_epoch(settings_mod.project_path(ts.train_csv), ts.batch_size)
        if self.steps_per_epoch < 1:
            raise TrainingError(f"{ts.train_csv}: fewer clips than one batch of {ts.batch_size}")
        tf.keras.utils.set_random_seed(ts.seed)
        with self.strategy.scope():
            self.model = build_model(ms)
            if ts.trainable == "high_band":  # the U-Net is init_from's and stays so
                for layer in self.model.layers:
                    layer.trainable = layer.name == "high_band"
            self.optimizer = _optimizer(ts, ts.epochs * self.steps_per_epoch)
            self.optimizer.build(self.model.trainable_variables)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.best_val = tf.Variable(np.inf, dtype=tf.float64, trainable=False)
            self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False)  # this epoch's, so far
            self.adversarial = ts.adversarial_weight > 0
            tracked = {}
            if self.adversarial:
                self.discriminators = adversarial.build_discriminators(
                    ts.discriminator_periods, [[n, n // 4] for n in ts.discriminator_stft_sizes],
                    ts.discriminator_channels, ts.patch_length * self.factor)
                self.d_optimizer = keras.optimizers.Adam(ts.discriminator_learning_rate, beta_1=0.8, beta_2=0.99)
                self.d_optimizer.build(self.discriminators.trainable_variables)
                # this epoch's sums so far of: discriminator loss, generator adversarial loss, feature matching
                self.gan_sums = tf.Variable(tf.zeros([3], tf.float64), trainable=False)
                tracked = {"discriminators": self.discriminators, "d_optimizer": self.d_optimizer,
                           "gan_sums": self.gan_sums}
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, epoch=self.epoch,
                                              step_in_epoch=self.step_in_epoch, best_val=self.best_val,
                                              loss_sum=self.loss_sum, **tracked)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.ckpt_dir), max_to_keep=2)
        if ts.init_from and not resume:
            self._init_weights(settings_mod.project_path(ts.init_from))
        if resume:
            if self.manager.latest_checkpoint is None:
                raise TrainingError(f"--resume: no checkpoint in {ckpt_dir}")
            self.checkpoint.restore(self.manager.latest_checkpoint).expect_partial()
            log.info("resumed %s at epoch %d, step %d", self.manager.latest_checkpoint,
                     int(self.epoch.numpy()) + 1, int(self.step_in_epoch.numpy()))
        self._train_step = self._make_train_step()
        self._gan_step = self._make_gan_step() if self.adversarial else None
        self._predict = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)

    def _init_weights(self, path: Path) -> None:
        """Copy the weights of the saved model at ``path`` (same architecture) into the new model."""
        from speechsr.model_io import ModelNotFoundError, load_model
        try:
            source, source_settings, _ = load_model(path)
        except ModelNotFoundError as e:
            raise TrainingError(f"init_from: {e}") from None
        # the U-Net must match; a high-band layer may be added to (or be new beside) init_from's
        same = lambda s: {k: v for k, v in settings_mod.to_json(s).items()  # noqa: E731
                          if k != "subpixel_implementation" and not k.startswith("high_band")}
        if same(source_settings) != same(self.ms):
            diff = sorted(k for k, v in same(self.ms).items() if same(source_settings).get(k) != v)
            raise TrainingError(f"init_from '{path}': its model settings differ from model_settings.json "
                                f"in {', '.join(diff)}")
        copy_high_band = high_band_edge(source_settings) == high_band_edge(self.ms) and all(
            getattr(source_settings, k) == getattr(self.ms, k) for k in (
                "high_band_bands", "high_band_channels", "high_band_layers", "high_band_kernel"))
        for layer in self.model.layers:
            if layer.weights and (layer.name != "high_band" or copy_high_band):
                layer.set_weights(source.get_layer(layer.name).get_weights())
        log.info("initialised from %s%s", path, "" if copy_high_band else " (the U-Net; a new high-band layer)")

    # -- run folder -------------------------------------------------------------------------
    def _check_run_dir(self, ckpt_dir: Path, resume: bool, overwrite: bool) -> None:
        """Refuse a run folder that cannot be used as asked (nothing is written here)."""
        self._start_afresh = self.run_dir.exists() and not resume
        if self._start_afresh and not overwrite and any(self.run_dir.iterdir()):
            raise TrainingError(f"run folder {self.run_dir} exists: pass --resume to continue it, "
                                "--overwrite to start again, or another --run-name")
        if resume and not ckpt_dir.exists():
            raise TrainingError(f"--resume: no checkpoint in {ckpt_dir}")
        if resume:
            self._check_resumed_settings()

    def _write_run_dir(self) -> None:
        """Empty the run folder when starting afresh (--overwrite), then write its settings."""
        if self._start_afresh:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self._start_afresh = False
            # a manager made before the removal still lists the removed checkpoints
            self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.ckpt_dir), max_to_keep=2)
        (self.run_dir / "settings").mkdir(parents=True, exist_ok=True)
        for kind, s in (("model", self.ms), ("training", self.ts)):
            with atomic_path(self.run_dir / "settings" / settings_mod.SETTINGS_FILES[kind]) as tmp:
                tmp.write_text(json.dumps(settings_mod.to_json(s), indent=2) + "\n")

    #: Keys that may change on --resume: they do not change what the run computes.
    RESUME_MAY_CHANGE = ("subpixel_implementation", "checkpoint_every_steps")

    def _check_resumed_settings(self) -> None:
        """--resume with other settings than the run's saved ones: TrainingError listing them."""
        changed = []
        for kind, s in (("model", self.ms), ("training", self.ts)):
            saved_path = self.run_dir / "settings" / settings_mod.SETTINGS_FILES[kind]
            if not saved_path.is_file():
                continue
            try:
                saved = settings_mod.to_json(settings_mod.validate(kind, json.loads(saved_path.read_text()),
                                                                   str(saved_path)))
            except (ValueError, OSError):
                continue  # unreadable: it is rewritten below
            now = settings_mod.to_json(s)
            changed += [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in now.items()
                        if k not in self.RESUME_MAY_CHANGE and saved.get(k) != v]
        if changed:
            raise TrainingError(f"--resume: settings differ from the run's ({', '.join(changed)}); resume with "
                                f"--settings {self.run_dir / 'settings'}, or start a new run (--run-name, --overwrite)")

    # -- steps ------------------------------------------------------------------------------
    def _make_train_step(self):
        global_batch = self.ts.batch_size
        ts = self.ts

        def replica_step(lr, hr):
            with tf.GradientTape() as tape:
                y_hat = self.model(lr, training=True)
                per_example = losses.reconstruction(hr, y_hat, ts, self.ms)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                if self.model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
            grads = tape.gradient(loss, self.model.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
            return loss

        return self._distributed(replica_step)

    def _distributed(self, replica_step):
        """``replica_step(lr, hr)`` run on every replica as one tf.function; results summed over replicas."""
        @tf.function(jit_compile=False)
        def step(batch):
            per_replica = self.strategy.run(replica_step, args=batch)
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        return step

    def _make_gan_step(self):
        """One adversarial step: discriminators and generator updated together from one forward pass.

        Returns the summed (over replicas) ``[generator loss, discriminator loss, adversarial loss,
        feature-matching loss]``, each averaged over the global batch.
        """
        global_batch, ts = self.ts.batch_size, self.ts
        g_vars, d_vars = self.model.trainable_variables, self.discriminators.trainable_variables

        def replica_step(lr, hr):
            with tf.GradientTape(persistent=True) as tape:
                y_hat = self.model(lr, training=True)
                real = self.discriminators(hr, training=True)
                fake = self.discriminators(y_hat, training=True)
                d_loss = adversarial.discriminator_loss(real, fake)
                adv = adversarial.generator_loss(fake)
                fm = adversarial.feature_matching_loss(real, fake)
                g_loss = (losses.reconstruction(hr, y_hat, ts, self.ms) + ts.adversarial_weight * adv
                          + ts.feature_matching_weight * fm)
                average = lambda t: tf.nn.compute_average_loss(t, global_batch_size=global_batch)  # noqa: E731
                g_total, d_total = average(g_loss), average(d_loss)
            # d_loss reaches the generator only through its own input, and only discriminator
            # variables are asked for: the discriminators never push the generator and vice versa
            d_grads = tape.gradient(d_total, d_vars)
            g_grads = tape.gradient(g_total, g_vars)
            del tape
            self.d_optimizer.apply_gradients(zip(d_grads, d_vars))
            self.optimizer.apply_gradients(zip(g_grads, g_vars))
            return tf.stack([g_total, d_total, average(adv), average(fm)])

        return self._distributed(replica_step)

    def _step(self, batch) -> float:
        """Run one training step on ``batch``; returns the generator's loss (GAN terms tallied apart)."""
        if self.adversarial and int(self.optimizer.iterations.numpy()) >= self.ts.gan_start_step:
            values = self._gan_step(batch)
            self.gan_sums.assign_add(tf.cast(values[1:], tf.float64))
            return float(values[0])
        return float(self._train_step(batch))

    def _epoch_dataset(self, epoch: int, skip: int):
        """Epoch ``epoch``'s batches from batch ``skip`` on (the same ones an uninterrupted run sees)."""
        ds = dataset.training_dataset(settings_mod.project_path(self.ts.train_csv), self.factor, self.ts.patch_length,
                                      self.ts.batch_size, self.ts.seed, epoch, self.ts.augment_gain_db,
                                      self.ts.shuffle_buffer, self.ts.augment_lowpass_min)
        if self.ts.steps_per_epoch:
            ds = ds.repeat().take(self.steps_per_epoch)
        ds = ds.skip(skip)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return self.strategy.experimental_distribute_dataset(ds.with_options(options))

    VALIDATION_KEYS = ("snr", "lsd", "lsd_hf", "hf_energy", "pause_noise")

    def validate(self) -> tuple[dict, list]:
        """Clip means of the validation loss (the reconstruction loss), SNR (dB), LSD, LSD-HF,
        high-band energy (dB) and pause noise (dB) (:mod:`speechsr.metrics`, cutoff = input
        Nyquist); and ``(reference, output)`` ``[time]`` arrays of the first two clips.
        """
        clips = dataset.validation_clips(settings_mod.project_path(self.ts.validation_csv), required_multiple(self.ms),
                                         self.ts.validation_max_clips)
        loss, values, examples = [], {k: [] for k in self.VALIDATION_KEYS}, []
        for lr, hr in clips:
            y_hat = self._predict(tf.constant(lr[None, :, None]))
            loss.append(float(losses.reconstruction(tf.constant(hr[None, :, None]), y_hat, self.ts, self.ms)[0]))
            y_hat = y_hat.numpy()[0, :, 0]
            scores = metrics.spectral(hr, y_hat, self.ms.output_rate, self.ms.input_rate / 2)
            for k in self.VALIDATION_KEYS:
                values[k].append(scores[k])
            if len(examples) < 2:
                examples.append((hr, y_hat))
        record = {"val_loss": float(np.mean(loss))}
        record.update({f"val_{k}": float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
                       for k, v in values.items()})
        return record, examples

    # -- the loop ---------------------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        self.manager.save()

    def fit(self) -> dict:
        """Train until ``epochs``; returns the last epoch's record. The run folder is written
        from here on (creating a Trainer writes nothing)."""
        if self.chief:
            self._write_run_dir()
        writer = tf.summary.create_file_writer(str(self.run_dir / "tensorboard")) if self.chief else None
        record = {}
        while int(self.epoch.numpy()) < self.ts.epochs:
            epoch = int(self.epoch.numpy())
            skip = int(self.step_in_epoch.numpy())
            iterator = iter(self._epoch_dataset(epoch, skip))
            bar = tqdm(total=self.steps_per_epoch, initial=skip, desc=f"epoch {epoch + 1}/{self.ts.epochs}",
                       unit="step", disable=not self.chief, dynamic_ncols=True, mininterval=2)
            started, waited = time.perf_counter(), 0.0
            while True:
                t0 = time.perf_counter()
                try:
                    batch = next(iterator)
                except StopIteration:
                    break
                waited += time.perf_counter() - t0
                loss = self._step(batch)
                if not math.isfinite(loss):
                    raise TrainingError(f"loss became {loss} at epoch {epoch + 1}; lower learning_rate")
                self.loss_sum.assign_add(loss)
                self.step_in_epoch.assign_add(1)
                bar.update(1)
                bar.set_postfix(loss=f"{self.loss_sum.numpy() / self.step_in_epoch.numpy():.3g}", refresh=False)
                if int(self.step_in_epoch.numpy()) % self.ts.checkpoint_every_steps == 0:
                    self._save_checkpoint()
            bar.close()
            elapsed = time.perf_counter() - started
            steps_done = max(int(self.step_in_epoch.numpy()), 1)
            validation, examples = self.validate()
            record = {"epoch": epoch + 1, "train_loss": float(self.loss_sum.numpy()) / steps_done, **validation}
            if self.adversarial:
                sums = self.gan_sums.numpy() / steps_done
                record.update(d_loss=float(sums[0]), g_adversarial=float(sums[1]), feature_matching=float(sums[2]))
                self.gan_sums.assign(tf.zeros([3], tf.float64))
            record.update(learning_rate=float(keras.ops.convert_to_numpy(self.optimizer.learning_rate)),
                          seconds=elapsed, input_wait_share=waited / max(elapsed, 1e-9))
            improved = record["val_loss"] < float(self.best_val.numpy())
            if improved:
                self.best_val.assign(record["val_loss"])
            self.epoch.assign_add(1)
            self.step_in_epoch.assign(0)
            self.loss_sum.assign(0.0)
            if self.chief:
                self._write_epoch(record, improved, writer, examples)
            self._save_checkpoint()
            log.info("epoch %d: train_loss %.4g val_loss %.4g val SNR %.2f dB val LSD %.3f%s (%.0f s, input wait %.1f%%)",
                     record["epoch"], record["train_loss"], record["val_loss"], record["val_snr"], record["val_lsd"],
                     " *best*" if improved else "", elapsed, 100 * record["input_wait_share"])
        if not self.chief:
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)
        return record

    def _write_epoch(self, record: dict, improved: bool, writer, examples: list) -> None:
        metadata = {"epoch": record["epoch"], **{k: v for k, v in record.items() if k.startswith("val_")},
                    "training_settings": settings_mod.to_json(self.ts)}
        if improved:
            save_model(self.model, self.run_dir / "best.keras", self.ms, metadata)
        every = self.ts.snapshot_every_epochs
        if every and record["epoch"] % every == 0:
            save_model(self.model, self.run_dir / "snapshots" / f"epoch_{record['epoch']:03d}.keras", self.ms, metadata)
        history = self.run_dir / "history.csv"
        rows = list(csv.DictReader(history.open())) if history.exists() else []
        rows = [r for r in rows if int(r["epoch"]) < record["epoch"]] + [{k: str(v) for k, v in record.items()}]
        with atomic_path(history) as tmp, tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(record))
            w.writeheader()
            w.writerows(rows)
        _write_lines(self.run_dir / "train_loss.txt", [float(r["train_loss"]) for r in rows])
        _write_lines(self.run_dir / "val_loss.txt", [float(r["val_loss"]) for r in rows])
        with writer.as_default(step=record["epoch"]):
            for key, value in record.items():
                if key != "epoch":
                    tf.summary.scalar(key, value)
            for i, (reference, output) in enumerate(examples):
                pair = np.stack([reference, output])[..., None].astype(np.float32)  # [2, time, 1]
                tf.summary.audio(f"validation_clip_{i}", pair, self.ms.output_rate, max_outputs=2,
                                 description="reference, then the model's output")
        writer.flush()
        training_curves(self.run_dir / "curves.png", rows)

