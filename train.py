#!/usr/bin/env python3
"""Train the U-Net on clip pairs made by preprocessing/ (settings: model + training JSON).

Examples:
  python train.py --settings settings/librispeech
  python train.py --settings settings/librispeech --resume          # continue after a crash
  python train.py --summary                                          # parameters and FLOPs only
  python train.py --strategy mirrored                                # all local GPUs
  python train.py --settings my_settings --init-from models/pretrained/model.keras  # fine-tune

Errors are one line on stderr, exit code 2, and leave no run folder behind; Ctrl-C or SIGTERM
stops with exit code 130 (--resume continues from the last checkpoint).
"""

import argparse
import sys

import speechsr  # noqa: F401  (sets TF environment defaults before TensorFlow loads)
from speechsr import cli, settings
from speechsr.loading import import_tensorflow_quietly


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    settings.add_settings_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run folder and start again")
    p.add_argument("--summary", action="store_true", help="print the model summary (parameters, FLOPs/s) and exit")
    p.add_argument("--strategy", default="default", choices=settings.STRATEGIES,
                   help="tf.distribute strategy (multiworker reads TF_CONFIG) (default: %(default)s)")
    settings.add_override_arguments(p, "--run-name", "--models-dir", "--epochs", "--batch-size", "--learning-rate",
                                    "--train-csv", "--validation-csv", "--init-from", "--subpixel")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cli.start_script(progress_lines=True)
    interrupted = "\ninterrupted: add --resume to continue from the last checkpoint"
    try:
        loaded = settings.load_for_script(args, ["model", "training"])
    except BaseException as e:  # an interruption first: SIGTERM can surface as another error type
        return cli.failure_exit_code(e, (settings.SettingsError,), interrupted)
    import_tensorflow_quietly()  # keep TensorFlow's C++ start-up notices off the terminal
    # TensorFlow: imported once the arguments and settings are checked
    from speechsr.model import summary_text
    from speechsr.training import TrainingError, fit, prepare
    try:
        if args.summary:
            print(summary_text(loaded["model"]))
            return 0
        trainer, run = prepare(loaded["model"], loaded["training"], args.strategy, args.resume, args.overwrite)
        record = fit(trainer, run, loaded["model"], loaded["training"])
    except BaseException as e:
        return cli.failure_exit_code(e, (settings.SettingsError, TrainingError, ValueError, OSError), interrupted)
    print(f"done: {run.best_model} (best val_loss {float(trainer.best_val.numpy()):.4g}); "
          f"last epoch: val SNR {record.get('val_snr', float('nan')):.2f} dB, LSD {record.get('val_lsd', float('nan')):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
