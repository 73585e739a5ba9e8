"""Training, in parts that each do one thing (after DDSP's trainer):

- **building**: :func:`make_strategy`, :func:`build_training_model` (``trainable`` freezing),
  :func:`build_optimizer`, :func:`build_gan` (discriminators and their optimizer, for
  adversarial training) and :func:`init_weights` (``init_from``);
- :class:`Trainer` ``(model, optimizer, strategy, ...)``: the training and validation steps
  and checkpoint save/restore of the training state; it touches no disk unless asked to save
  or restore a checkpoint;
- :class:`RunFolder`: the only writer of a run folder ``<models_dir>/<run_name>/``:

  - ``best.keras`` + ``best.json``: the model with the lowest validation loss so far;
  - ``checkpoints/``: the last training state (weights, optimizers, epoch and step counters),
    written every ``checkpoint_every_steps`` steps and at each epoch end, for ``--resume``;
  - ``train_loss.txt`` / ``val_loss.txt``: one value per epoch and line (as the reference suite);
    ``history.csv``: epoch, losses, validation SNR/LSD, learning rate, seconds, input-wait share;
    ``curves.png``; ``snapshots/`` (``snapshot_every_epochs``);
  - ``tensorboard/``: TensorBoard logs; ``settings/``: the settings the run used;

- :func:`fit`: the epoch loop over a Trainer and a RunFolder; :func:`prepare` builds both from
  the validated settings (what ``train.py`` calls).

Strategies (:data:`speechsr.settings.STRATEGIES`): ``default`` (one device), ``mirrored`` (all
local GPUs, or CPUs made logical devices), ``multiworker`` (machines listed in ``TF_CONFIG``;
only the chief writes the run folder, the other workers checkpoint to a private temporary folder).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
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

from speechsr import adversarial, dataset, losses, metrics, signals
from speechsr import settings as settings_mod
from speechsr.audio import atomic_path
from speechsr.geometry import high_band_edge
from speechsr.model import HIGH_BAND_LAYER, build_model, copy_layer_weights, required_multiple
from speechsr.model_io import ModelNotFoundError, load_model, save_model
from speechsr.plots import training_curves
from speechsr.split import SplitError, check_clip_rates, read_split_csv

log = logging.getLogger("speechsr")
STRATEGIES = settings_mod.STRATEGIES


class TrainingError(RuntimeError):
    """A run cannot start or continue; the message says why and what to do."""


# ------------------------------------------------------------------ checks and building

def check_inputs(ms: settings_mod.ModelSettings, ts: settings_mod.TrainingSettings, resume: bool = False) -> None:
    """Fail fast, before any work, on inputs that cannot train. ``init_from`` must exist for a new run
    only: a resumed run takes its weights from its checkpoint (the model it started from may be gone)."""
    for key in ("train_csv", "validation_csv"):
        path = settings_mod.project_path(getattr(ts, key))
        if not path.is_file():
            raise TrainingError(f"{key} '{path}' not found: run preprocessing/splice_raw_data.py and "
                                "preprocessing/test_train_split.py first (README, 'Train on your own corpus')")
        try:  # header, fields, every clip file present, their rates: checked before a run folder exists
            rows = read_split_csv(path)
            if not rows:
                raise TrainingError(f"{key} '{path}' lists no clips")
            check_clip_rates(path, rows, ms.output_rate, ms.input_rate)
        except SplitError as e:
            raise TrainingError(f"{key}: {e}") from None
        if key == "train_csv" and len(rows) < ts.batch_size:  # one patch per clip and batch
            raise TrainingError(f"{key} '{path}': {len(rows)} clips, fewer than one batch of {ts.batch_size}")
    if ts.init_from and not resume and not settings_mod.project_path(ts.init_from).is_file():
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


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run folder: always, except on non-chief multi-workers."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return not has_chief and resolver.task_type == "worker" and resolver.task_id == 0


def steps_per_epoch(ts: settings_mod.TrainingSettings) -> int:
    """Training steps per epoch: ``steps_per_epoch``, else one patch per training clip."""
    steps = ts.steps_per_epoch or dataset.steps_in_epoch(settings_mod.project_path(ts.train_csv), ts.batch_size)
    if steps < 1:
        raise TrainingError(f"{ts.train_csv}: fewer clips than one batch of {ts.batch_size}")
    return steps


def build_training_model(ms: settings_mod.ModelSettings, ts: settings_mod.TrainingSettings,
                         strategy: tf.distribute.Strategy) -> keras.Model:
    """The model of ``ms`` in ``strategy``'s scope; ``trainable`` 'high_band' freezes all but that layer."""
    with strategy.scope():
        model = build_model(ms)
        if ts.trainable == "high_band":  # the U-Net is init_from's and stays so
            for layer in model.layers:
                layer.trainable = layer.name == "high_band"
    return model


def learning_rate(ts: settings_mod.TrainingSettings, total_steps: int):
    """``learning_rate`` or a (warm-up +) cosine schedule over ``total_steps`` training steps."""
    if ts.lr_schedule == "constant" and ts.warmup_steps == 0:
        return ts.learning_rate
    decay = max(1, total_steps - ts.warmup_steps)
    alpha = 1.0 if ts.lr_schedule == "constant" else 0.02
    if ts.warmup_steps:
        return keras.optimizers.schedules.CosineDecay(0.0, decay, alpha=alpha, warmup_target=ts.learning_rate,
                                                      warmup_steps=ts.warmup_steps)
    return keras.optimizers.schedules.CosineDecay(ts.learning_rate, decay, alpha=alpha)


def build_optimizer(ts: settings_mod.TrainingSettings, total_steps: int, model: keras.Model,
                    strategy: tf.distribute.Strategy) -> keras.optimizers.Optimizer:
    """The optimizer of ``ts`` for ``model``'s trainable weights, built in ``strategy``'s scope."""
    with strategy.scope():
        lr = learning_rate(ts, total_steps)
        if ts.optimizer == "adamw":
            optimizer = keras.optimizers.AdamW(lr, weight_decay=ts.weight_decay)
        else:
            optimizer = keras.optimizers.Adam(lr)
        optimizer.build(model.trainable_variables)
    return optimizer


@dataclasses.dataclass
class Gan:
    """Adversarial training's parts: the discriminators, their optimizer, the generator's loss
    weights and the step (counted over the run) from which the discriminators train."""
    discriminators: adversarial.Discriminators
    optimizer: keras.optimizers.Optimizer
    adversarial_weight: float
    feature_matching_weight: float
    start_step: int


def build_gan(ms: settings_mod.ModelSettings, ts: settings_mod.TrainingSettings,
              strategy: tf.distribute.Strategy) -> Gan | None:
    """The discriminators of ``ts`` and their optimizer, or None when ``adversarial_weight`` is 0."""
    if ts.adversarial_weight <= 0:
        return None
    factor = ms.output_rate // ms.input_rate
    with strategy.scope():
        discriminators = adversarial.build_discriminators(
            ts.discriminator_periods, [[n, n // 4] for n in ts.discriminator_stft_sizes],
            ts.discriminator_channels, ts.patch_length * factor)
        optimizer = keras.optimizers.Adam(ts.discriminator_learning_rate, beta_1=0.8, beta_2=0.99)
        optimizer.build(discriminators.trainable_variables)
    return Gan(discriminators, optimizer, ts.adversarial_weight, ts.feature_matching_weight, ts.gan_start_step)


def init_weights(model: keras.Model, ms: settings_mod.ModelSettings, path: Path) -> None:
    """Copy the weights of the saved model at ``path`` (same U-Net) into ``model``.

    A high-band layer is copied when ``path``'s has the same shape, else ``model``'s stays new.
    """
    try:
        source, source_settings, _ = load_model(path)
    except ModelNotFoundError as e:
        raise TrainingError(f"init_from: {e}") from None
    same = lambda s: {k: v for k, v in settings_mod.to_json(s).items()  # noqa: E731
                      if k != "subpixel_implementation" and not k.startswith("high_band")}
    if same(source_settings) != same(ms):
        diff = sorted(k for k, v in same(ms).items() if same(source_settings).get(k) != v)
        raise TrainingError(f"init_from '{path}': its model settings differ from model_settings.json "
                            f"in {', '.join(diff)}")
    copy_high_band = high_band_edge(source_settings) == high_band_edge(ms) and all(
        getattr(source_settings, k) == getattr(ms, k) for k in (
            "high_band_bands", "high_band_channels", "high_band_layers", "high_band_kernel"))
    copy_layer_weights(model, source, skip=() if copy_high_band else (HIGH_BAND_LAYER,))
    log.info("initialised from %s%s", path, "" if copy_high_band else " (the U-Net; a new high-band layer)")


# ------------------------------------------------------------------ the trainer

class Trainer:
    """The training and validation steps of ``model`` under ``strategy``, and its checkpoints.

    ``loss(y, y_hat)`` is the per-example reconstruction loss ``[batch]`` of ``[batch, time, 1]``
    tensors, averaged over ``global_batch_size`` (all replicas). With ``gan`` the steps from
    ``gan.start_step`` on are adversarial. The training state — model, optimizers, counters
    (:attr:`epoch`, :attr:`step_in_epoch`, :attr:`best_val`, this epoch's :attr:`loss_sum` and
    :attr:`gan_sums`) — is one ``tf.train.Checkpoint``; nothing is written or read until
    :meth:`save` / :meth:`restore`.
    """

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                 strategy: tf.distribute.Strategy, loss, global_batch_size: int, gan: Gan | None = None):
        self.model, self.optimizer, self.strategy, self.gan = model, optimizer, strategy, gan
        self.loss, self.global_batch_size = loss, global_batch_size
        with strategy.scope():
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.best_val = tf.Variable(np.inf, dtype=tf.float64, trainable=False)
            self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False)  # this epoch's, so far
            # this epoch's sums so far of: discriminator loss, generator adversarial loss, feature matching
            self.gan_sums = tf.Variable(tf.zeros([3], tf.float64), trainable=False) if gan else None
        tracked = ({"discriminators": gan.discriminators, "d_optimizer": gan.optimizer, "gan_sums": self.gan_sums}
                   if gan else {})
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=self.epoch,
                                              step_in_epoch=self.step_in_epoch, best_val=self.best_val,
                                              loss_sum=self.loss_sum, **tracked)
        self._managers: dict[str, tf.train.CheckpointManager] = {}
        self._train_step = self._distributed(self._replica_step)
        self._gan_step = self._distributed(self._replica_gan_step) if gan else None
        self._predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    # -- steps --------------------------------------------------------------------------------
    def _average(self, per_example: tf.Tensor) -> tf.Tensor:
        return tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)

    def _replica_step(self, lr, hr):
        with tf.GradientTape() as tape:
            y_hat = self.model(lr, training=True)
            loss = self._average(self.loss(hr, y_hat))
            if self.model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
        grads = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss

    def _replica_gan_step(self, lr, hr):
        """Discriminators and generator updated together from one forward pass: ``[generator
        loss, discriminator loss, adversarial loss, feature-matching loss]``, batch averages."""
        gan = self.gan
        g_vars, d_vars = self.model.trainable_variables, gan.discriminators.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            y_hat = self.model(lr, training=True)
            real = gan.discriminators(hr, training=True)
            fake = gan.discriminators(y_hat, training=True)
            d_loss = adversarial.discriminator_loss(real, fake)
            adv = adversarial.generator_loss(fake)
            fm = adversarial.feature_matching_loss(real, fake)
            g_loss = self.loss(hr, y_hat) + gan.adversarial_weight * adv + gan.feature_matching_weight * fm
            g_total, d_total = self._average(g_loss), self._average(d_loss)
        # d_loss reaches the generator only through its own input, and only discriminator
        # variables are asked for: the discriminators never push the generator and vice versa
        d_grads = tape.gradient(d_total, d_vars)
        g_grads = tape.gradient(g_total, g_vars)
        del tape
        gan.optimizer.apply_gradients(zip(d_grads, d_vars))
        self.optimizer.apply_gradients(zip(g_grads, g_vars))
        return tf.stack([g_total, d_total, self._average(adv), self._average(fm)])

    def _distributed(self, replica_step):
        """``replica_step(lr, hr)`` run on every replica as one tf.function; results summed over replicas."""
        @tf.function(jit_compile=False)
        def step(batch):
            per_replica = self.strategy.run(replica_step, args=batch)
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        return step

    def step(self, batch) -> float:
        """One training step on ``batch`` ``(lr [batch, time, 1], hr [batch, time * factor, 1])``
        (per replica, from a distributed dataset); returns the generator's loss (GAN terms are
        added to :attr:`gan_sums`)."""
        if self.gan and int(self.optimizer.iterations.numpy()) >= self.gan.start_step:
            values = self._gan_step(batch)
            self.gan_sums.assign_add(tf.cast(values[1:], tf.float64))
            return float(values[0])
        return float(self._train_step(batch))

    def validation_step(self, lr: np.ndarray, hr: np.ndarray) -> tuple[float, np.ndarray]:
        """``(loss, output [time * factor])`` of one whole clip ``lr`` ``[time]`` against ``hr``."""
        y_hat = self._predict(tf.constant(lr[None, :, None]))
        loss = float(self.loss(tf.constant(hr[None, :, None]), y_hat)[0])
        return loss, y_hat.numpy()[0, :, 0]

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> str:
        """Write the training state to ``directory`` (the last two are kept); returns its path."""
        key = str(directory)
        if key not in self._managers:  # made on first use: after a --overwrite emptied the folder
            self._managers[key] = tf.train.CheckpointManager(self.checkpoint, key, max_to_keep=2)
        return self._managers[key].save()

    def restore(self, directory: str | os.PathLike) -> str | None:
        """Load the latest training state saved in ``directory``; its path, or None when there is none."""
        latest = tf.train.latest_checkpoint(str(directory))
        if latest is not None:
            self.checkpoint.restore(latest).expect_partial()
        return latest


# ------------------------------------------------------------------ the run folder

def _write_lines(path: Path, values: list[float]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{v:.8g}\n" for v in values))


class RunFolder:
    """The only writer of a run folder ``path`` (see module docstring); creating one writes nothing.

    On a non-chief multi-worker (``chief=False``) it writes no run files, and its
    :attr:`checkpoint_dir` is a private temporary folder (a copy of the chief's on ``--resume``).
    """

    #: Keys that may change on --resume: they do not change what the run computes.
    RESUME_MAY_CHANGE = ("subpixel_implementation", "checkpoint_every_steps")

    def __init__(self, path: str | os.PathLike, chief: bool = True):
        self.path, self.chief = Path(path), chief
        self._start_afresh, self._resume = False, False
        self._worker_dir: Path | None = None
        self._writer = None

    @property
    def best_model(self) -> Path:
        return self.path / "best.keras"

    @property
    def checkpoint_dir(self) -> Path:
        if self.chief:
            return self.path / "checkpoints"
        if self._worker_dir is None:  # non-chief workers must still write their checkpoint shards somewhere
            self._worker_dir = Path(tempfile.mkdtemp(prefix="speechsr-worker-"))
            if self._resume and (self.path / "checkpoints").exists():
                shutil.copytree(self.path / "checkpoints", self._worker_dir, dirs_exist_ok=True)
        return self._worker_dir

    def check(self, ms: settings_mod.ModelSettings, ts: settings_mod.TrainingSettings,
              resume: bool = False, overwrite: bool = False) -> None:
        """Refuse a folder that cannot be used as asked: TrainingError (nothing is written here)."""
        self._resume = resume
        if not self.chief:
            return
        self._start_afresh = self.path.exists() and not resume
        if self._start_afresh and not overwrite and any(self.path.iterdir()):
            raise TrainingError(f"run folder {self.path} exists: pass --resume to continue it, "
                                "--overwrite to start again, or another --run-name")
        if resume and not (self.path / "checkpoints").exists():
            raise TrainingError(f"--resume: no checkpoint in {self.path / 'checkpoints'}")
        if resume:
            self._check_resumed_settings(ms, ts)

    def _check_resumed_settings(self, ms, ts) -> None:
        """--resume with other settings than the run's saved ones: TrainingError listing them."""
        changed = []
        for kind, s in (("model", ms), ("training", ts)):
            saved_path = self.path / "settings" / settings_mod.SETTINGS_FILES[kind]
            if not saved_path.is_file():
                continue
            try:
                saved = settings_mod.to_json(settings_mod.validate(kind, json.loads(saved_path.read_text()),
                                                                   str(saved_path)))
            except (ValueError, OSError):
                continue  # unreadable: start() rewrites it
            now = settings_mod.to_json(s)
            changed += [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in now.items()
                        if k not in self.RESUME_MAY_CHANGE and saved.get(k) != v]
        if changed:
            raise TrainingError(f"--resume: settings differ from the run's ({', '.join(changed)}); resume with "
                                f"--settings {self.path / 'settings'}, or start a new run (--run-name, --overwrite)")

    def start(self, ms: settings_mod.ModelSettings, ts: settings_mod.TrainingSettings) -> None:
        """Empty the folder when starting afresh (--overwrite), write the run's settings, open TensorBoard."""
        if not self.chief:
            return
        if self._start_afresh:
            shutil.rmtree(self.path, ignore_errors=True)
            self._start_afresh = False
        (self.path / "settings").mkdir(parents=True, exist_ok=True)
        for kind, s in (("model", ms), ("training", ts)):
            with atomic_path(self.path / "settings" / settings_mod.SETTINGS_FILES[kind]) as tmp:
                tmp.write_text(json.dumps(settings_mod.to_json(s), indent=2) + "\n")
        self._writer = tf.summary.create_file_writer(str(self.path / "tensorboard"))

    def history(self) -> list[dict]:
        """Rows of ``history.csv`` (strings, as written), oldest epoch first; [] before the first epoch."""
        path = self.path / "history.csv"
        if not path.exists():
            return []
        with path.open(newline="") as f:
            return list(csv.DictReader(f))

    def write_history(self, record: dict) -> list[dict]:
        """Add epoch ``record["epoch"]`` (replacing that epoch and later ones, left by a killed run)
        to ``history.csv``, the loss files and ``curves.png``; returns all rows."""
        if not self.chief:
            return []
        rows = [r for r in self.history() if int(r["epoch"]) < record["epoch"]]
        rows.append({k: str(v) for k, v in record.items()})
        with atomic_path(self.path / "history.csv") as tmp, tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(record))
            w.writeheader()
            w.writerows(rows)
        _write_lines(self.path / "train_loss.txt", [float(r["train_loss"]) for r in rows])
        _write_lines(self.path / "val_loss.txt", [float(r["val_loss"]) for r in rows])
        training_curves(self.path / "curves.png", rows)
        return rows

    def save_model(self, model: keras.Model, ms: settings_mod.ModelSettings, metadata: dict,
                   best: bool = False, snapshot: bool = False) -> None:
        """Keep ``model`` as ``best.keras`` and/or ``snapshots/epoch_NNN.keras`` (each with its json)."""
        if not self.chief:
            return
        if best:
            save_model(model, self.best_model, ms, metadata)
        if snapshot:
            save_model(model, self.path / "snapshots" / f"epoch_{metadata['epoch']:03d}.keras", ms, metadata)

    def log_tensorboard(self, record: dict, examples: list, rate: int) -> None:
        """Scalars of ``record`` and ``(reference, output)`` ``[time]`` audio pairs at ``rate`` Hz."""
        if self._writer is None:
            return
        with self._writer.as_default(step=record["epoch"]):
            for key, value in record.items():
                if key != "epoch":
                    tf.summary.scalar(key, value)
            for i, (reference, output) in enumerate(examples):
                pair = np.stack([reference, output])[..., None].astype(np.float32)  # [2, time, 1]
                tf.summary.audio(f"validation_clip_{i}", pair, rate, max_outputs=2,
                                 description="reference, then the model's output")
        self._writer.flush()

    def finish(self) -> None:
        """Remove a non-chief worker's private checkpoints."""
        if self._worker_dir is not None:
            shutil.rmtree(self._worker_dir, ignore_errors=True)
            self._worker_dir = None


# ------------------------------------------------------------------ the loop

def epoch_dataset(strategy: tf.distribute.Strategy, ms: settings_mod.ModelSettings,
                  ts: settings_mod.TrainingSettings, epoch: int, skip: int, steps: int):
    """Epoch ``epoch``'s batches from batch ``skip`` on (the same ones an uninterrupted run sees),
    ``steps`` of them, distributed over ``strategy``'s replicas."""
    ds = dataset.training_dataset(settings_mod.project_path(ts.train_csv), ms, ts, epoch)
    if ts.steps_per_epoch:
        ds = ds.repeat().take(steps)
    ds = ds.skip(skip)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(ds.with_options(options))


VALIDATION_KEYS = ("snr", "lsd", "lsd_hf", "hf_energy", "pause_noise")


def validate(trainer: Trainer, clips: list, ms: settings_mod.ModelSettings) -> tuple[dict, list]:
    """Clip means over ``clips`` (``(lr [T], hr [T * factor])`` pairs) of the validation loss (the
    reconstruction loss), SNR (dB), LSD, LSD-HF, high-band energy (dB) and pause noise (dB)
    (:mod:`speechsr.metrics`, cutoff = input Nyquist); and ``(reference, output)`` ``[time]``
    arrays of the first two clips.
    """
    loss, values, examples = [], {k: [] for k in VALIDATION_KEYS}, []
    for lr, hr in clips:
        clip_loss, y_hat = trainer.validation_step(lr, hr)
        loss.append(clip_loss)
        scores = metrics.spectral(hr, y_hat, ms.output_rate, ms.input_rate / 2)
        for k in VALIDATION_KEYS:
            values[k].append(scores[k])
        if len(examples) < 2:
            examples.append((hr, y_hat))
    record = {"val_loss": float(np.mean(loss))}
    record.update({f"val_{k}": float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
                   for k, v in values.items()})
    return record, examples


def fit(trainer: Trainer, run: RunFolder, ms: settings_mod.ModelSettings,
        ts: settings_mod.TrainingSettings) -> dict:
    """Train until ``ts.epochs`` from the trainer's state; returns the last epoch's record.

    The run folder is written from here on (:meth:`RunFolder.start`).
    """
    run.start(ms, ts)
    steps = steps_per_epoch(ts)
    clips = dataset.validation_clips(settings_mod.project_path(ts.validation_csv), ms, ts)
    record = {}
    while int(trainer.epoch.numpy()) < ts.epochs:
        epoch = int(trainer.epoch.numpy())
        skip = int(trainer.step_in_epoch.numpy())
        iterator = iter(epoch_dataset(trainer.strategy, ms, ts, epoch, skip, steps))
        bar = tqdm(total=steps, initial=skip, desc=f"epoch {epoch + 1}/{ts.epochs}", unit="step",
                   disable=not run.chief, dynamic_ncols=True, mininterval=2)
        started, waited = time.perf_counter(), 0.0
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                break
            waited += time.perf_counter() - t0
            loss = trainer.step(batch)
            signals.check()  # a Ctrl-C / SIGTERM that TensorFlow swallowed inside the step
            if not math.isfinite(loss):
                raise TrainingError(f"loss became {loss} at epoch {epoch + 1}; lower learning_rate")
            trainer.loss_sum.assign_add(loss)
            trainer.step_in_epoch.assign_add(1)
            bar.update(1)
            bar.set_postfix(loss=f"{trainer.loss_sum.numpy() / trainer.step_in_epoch.numpy():.3g}", refresh=False)
            if int(trainer.step_in_epoch.numpy()) % ts.checkpoint_every_steps == 0:
                trainer.save(run.checkpoint_dir)
        bar.close()
        elapsed = time.perf_counter() - started
        steps_done = max(int(trainer.step_in_epoch.numpy()), 1)
        validation, examples = validate(trainer, clips, ms)
        record = {"epoch": epoch + 1, "train_loss": float(trainer.loss_sum.numpy()) / steps_done, **validation}
        if trainer.gan:
            sums = trainer.gan_sums.numpy() / steps_done
            record.update(d_loss=float(sums[0]), g_adversarial=float(sums[1]), feature_matching=float(sums[2]))
            trainer.gan_sums.assign(tf.zeros([3], tf.float64))
        record.update(learning_rate=float(keras.ops.convert_to_numpy(trainer.optimizer.learning_rate)),
                      seconds=elapsed, input_wait_share=waited / max(elapsed, 1e-9))
        improved = record["val_loss"] < float(trainer.best_val.numpy())
        if improved:
            trainer.best_val.assign(record["val_loss"])
        trainer.epoch.assign_add(1)
        trainer.step_in_epoch.assign(0)
        trainer.loss_sum.assign(0.0)
        metadata = {"epoch": record["epoch"], **{k: v for k, v in record.items() if k.startswith("val_")},
                    "training_settings": settings_mod.to_json(ts)}
        every = ts.snapshot_every_epochs
        run.save_model(trainer.model, ms, metadata, best=improved,
                       snapshot=bool(every) and record["epoch"] % every == 0)
        run.write_history(record)
        run.log_tensorboard(record, examples, ms.output_rate)
        trainer.save(run.checkpoint_dir)
        log.info("epoch %d: train_loss %.4g val_loss %.4g val SNR %.2f dB val LSD %.3f%s (%.0f s, input wait %.1f%%)",
                 record["epoch"], record["train_loss"], record["val_loss"], record["val_snr"], record["val_lsd"],
                 " *best*" if improved else "", elapsed, 100 * record["input_wait_share"])
    run.finish()
    return record


def prepare(ms: settings_mod.ModelSettings, ts: settings_mod.TrainingSettings, strategy: str = "default",
            resume: bool = False, overwrite: bool = False) -> tuple[Trainer, RunFolder]:
    """The Trainer and RunFolder of a run: inputs and run folder checked (nothing written), model,
    optimizer and discriminators built under ``strategy`` with ``ts.seed``, weights from
    ``init_from`` (a new run) or the run's last checkpoint (``resume``). :func:`fit` trains them.
    """
    check_inputs(ms, ts, resume)
    distribution = make_strategy(strategy)
    if strategy != "default":
        log.info("strategy %s: %d replica(s) on %s", strategy, distribution.num_replicas_in_sync,
                 ", ".join(distribution.extended.worker_devices))
    run = RunFolder(settings_mod.project_path(ts.models_dir) / ts.run_name, is_chief(distribution))
    run.check(ms, ts, resume, overwrite)
    steps = steps_per_epoch(ts)
    tf.keras.utils.set_random_seed(ts.seed)
    model = build_training_model(ms, ts, distribution)
    optimizer = build_optimizer(ts, ts.epochs * steps, model, distribution)
    gan = build_gan(ms, ts, distribution)
    loss = functools.partial(losses.reconstruction, ts=ts, ms=ms)
    trainer = Trainer(model, optimizer, distribution, loss, ts.batch_size, gan)
    if ts.init_from and not resume:
        init_weights(model, ms, settings_mod.project_path(ts.init_from))
    if resume:
        restored = trainer.restore(run.checkpoint_dir)
        if restored is None:
            raise TrainingError(f"--resume: no checkpoint in {run.path / 'checkpoints'}")
        log.info("resumed %s at epoch %d, step %d", restored, int(trainer.epoch.numpy()) + 1,
                 int(trainer.step_in_epoch.numpy()))
    return trainer, run
