"""``sashimi train``: its options, the :class:`TrainConfig` they make, and the command itself."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from pathlib import Path

from sashimi.data.datasets import LAYOUTS
from sashimi.training.config import (
    PRECISIONS,
    SCHEDULES,
    TRAIN_CONFIG_NAME,
    ConfigError,
    TrainConfig,
    _pos_int,
    load_train_config,
    preset_of,
    resolve_config,
)
from sashimi.training.tasks.base import ModelOption, get_task, task_names
from sashimi.training.trainer import TrainingError, train

__all__ = ["add_train_arguments", "config_from_args", "run_cli"]

#: CLI option -> TrainConfig field (every option defaults to None = "not given")
_CLI_FIELDS = {
    "data": "data", "preset": "preset", "layout": "layout", "seq_len": "seq_len", "mode": "mode",
    "minmax": "minmax", "resample": "resample", "short": "short", "skip_bad_files": "skip_bad_files",
    "val_fraction": "val_fraction", "steps": "steps", "batch_size": "batch_size", "lr": "lr", "ssm_lr": "ssm_lr",
    "weight_decay": "weight_decay", "schedule": "schedule", "warmup_steps": "warmup_steps",
    "min_lr_ratio": "min_lr_ratio", "plateau_factor": "plateau_factor", "plateau_patience": "plateau_patience",
    "grad_clip": "grad_clip", "precision": "precision", "eval_every": "eval_every", "eval_batches": "eval_batches",
    "checkpoint_every": "checkpoint_every", "keep_checkpoints": "keep_checkpoints", "log_every": "log_every",
    "num_workers": "num_workers", "seed": "seed", "device": "device", "task": "task", "phase": "phase",
    "init_from": "init_from",
}
#: settings a new run started with --init-from takes from the run folder it starts from, unless given
_INHERITED = ("task", "data", "preset", "layout", "val_fraction")


def _model_options() -> list[ModelOption]:
    """Every registered task's model options, each field once (in task registration order)."""
    seen: dict[str, ModelOption] = {}
    for name in task_names():
        for opt in get_task(name).model_options:
            seen.setdefault(opt.field, opt)
    return list(seen.values())


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``sashimi train`` to an ``argparse`` parser."""
    g = parser.add_argument_group("run")
    g.add_argument("--task", choices=task_names(),
                   help="the model family to train (default lm: SaShiMiLM; wavenet: the paper's WaveNet baselines; "
                   "masked: MaskedSaShiMi; sing: SING in three --phase runs)")
    g.add_argument("--data", help="dataset folder (on --resume: default the run's)")
    g.add_argument("--preset", help="model size with its data and optimizer defaults (lm: tiny, sc09, beethoven, "
                   "youtubemix; wavenet: tiny, sc09-512, sc09-1024, beethoven-512, ...; masked: tiny, bundled; "
                   "sing: nsynth-sing, tiny-sing; diffwave: sc09-diffwave, sc09-diffwave-small, ljspeech-vocoder, "
                   "tiny-diffwave, tiny-vocoder, *-wavenet baselines; classifier: small, sc09)")
    g.add_argument("--out", required=True, help="run folder: checkpoints, log.csv; loads as a model folder")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    g.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="stop with a checkpoint once STEP steps are done (continue later with --resume)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--phase", help="the training phase of a task trained in stages (sing: autoencoder, sequence, "
                   "end2end; default: the first)")
    g.add_argument("--init-from", metavar="FOLDER",
                   help="start from this model folder (an earlier phase's run); when it is a run folder, --task, "
                   "--data, --preset and the model options default to its own")
    d = parser.add_argument_group("data")
    d.add_argument("--layout", choices=LAYOUTS, help="dataset layout and splits (default: the preset's)")
    d.add_argument("--seq-len", type=int, help="item length in samples (0 = whole clips)")
    d.add_argument("--mode", choices=("crop", "pad"), help="fixed-length crops, or whole clips padded to --seq-len")
    d.add_argument("--minmax", action=argparse.BooleanOptionalAction, default=None,
                   help="min-max scale each item before quantizing (the paper's pipeline)")
    d.add_argument("--no-resample", dest="resample", action="store_const", const=False, default=None,
                   help="refuse files at another sample rate instead of resampling them")
    d.add_argument("--short", choices=("error", "pad", "skip"), help="clips shorter than a crop (default: error)")
    d.add_argument("--skip-bad-files", action="store_const", const=True, default=None,
                   help="skip unreadable or empty files with a warning instead of stopping")
    d.add_argument("--val-fraction", type=float, help="plain folders: fraction of files held out for validation")
    m = parser.add_argument_group("model (overrides of the preset; each applies to the tasks whose model has it)")
    for opt in _model_options():
        m.add_argument(opt.flag, dest=opt.field, **opt.kwargs)
    o = parser.add_argument_group("optimization")
    o.add_argument("--steps", type=int, help="total optimizer steps (default 1000)")
    o.add_argument("--batch-size", type=int, help="items per step and process")
    o.add_argument("--lr", type=float)
    o.add_argument("--ssm-lr", type=float, help="learning rate of the SSM parameters (default 1e-3)")
    o.add_argument("--weight-decay", type=float)
    o.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule (default plateau)")
    o.add_argument("--warmup-steps", type=int)
    o.add_argument("--min-lr-ratio", type=float)
    o.add_argument("--plateau-factor", type=float)
    o.add_argument("--plateau-patience", type=int, help="evaluations without improvement before a decay")
    o.add_argument("--grad-clip", type=float, help="max gradient norm, 0 = off (default 1.0)")
    o.add_argument("--precision", choices=PRECISIONS, help="auto: bf16 autocast on capable GPUs")
    o.add_argument("--eval-every", type=int)
    o.add_argument("--eval-batches", type=int)
    o.add_argument("--checkpoint-every", type=int)
    o.add_argument("--keep-checkpoints", type=int)
    o.add_argument("--log-every", type=int)
    o.add_argument("--num-workers", type=int)
    o.add_argument("--seed", type=int)
    o.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the local GPU if any)")


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, bool]:
    """Build the :class:`TrainConfig` of a ``sashimi train`` command line; returns (config, resume).

    With ``--resume`` the run's saved settings are the base and the options given override them. A new run with
    ``--init-from RUN`` (a run folder) takes ``--task``, ``--data``, ``--preset``, ``--layout``,
    ``--val-fraction`` and the model options from RUN's settings unless given.

    Raises:
        ValueError: a non-finite number (naming the flag), a model option the task's model does not have,
            or a missing ``--data`` / ``--preset``.
    """
    opts = vars(args)
    for key, value in opts.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{_flag(key)} must be a finite number, got {value}")
    given = {f: opts[o] for o, f in _CLI_FIELDS.items() if opts.get(o) is not None}
    model = {o.field: opts[o.field] for o in _model_options() if opts.get(o.field) is not None}
    if "pool" in model:
        model["pool"] = tuple(model["pool"])
    resume = bool(opts.get("resume"))
    if resume:
        base = load_train_config(opts["out"]).to_dict()
        if given.get("task", base["task"]) != base["task"]:
            raise ValueError(f"--resume: {opts['out']} is a run of --task {base['task']}, not {given['task']}; "
                             "nothing was written")
        base["model"] = {**base.get("model", {}), **model}
        base.update(given)
        base["out"] = opts["out"]
    else:
        init = opts.get("init_from")
        inherited_model: dict = {}
        if init is not None and (Path(init) / TRAIN_CONFIG_NAME).is_file():
            earlier = load_train_config(init)
            for key in _INHERITED:
                given.setdefault(key, getattr(earlier, key))
            inherited_model = dict(earlier.model)
        if "data" not in given:
            raise ValueError("--data is required (the folder of audio to train on)")
        if "preset" not in given:
            names = get_task(given.get("task", "lm")).preset_names
            raise ValueError(f"--preset is required: one of {', '.join(names)}")
        base = {**given, "model": {**inherited_model, **model}, "out": opts["out"]}
    task = get_task(base.get("task", "lm"))
    own = {o.field for o in task.model_options}
    foreign = [_flag(f) for f in model if f not in own]
    if foreign:
        raise ValueError(f"{', '.join(foreign)} do(es) not apply to --task {task.name} (its model options: "
                         f"{', '.join(_flag(f) for f in sorted(own))})")
    if opts.get("quiet"):
        base["progress"] = False
    return TrainConfig.from_dict(base), resume


def run_cli(args: argparse.Namespace) -> int:
    """``sashimi train``: parse into a config, train, print where the run is.

    Returns the exit status: 0 done, 1 a training failure (divergence, a failed write: one line on stderr),
    128 + the signal number after Ctrl-C / SIGTERM (a checkpoint of the current step was saved). Bad
    settings raise ValueError naming the flag (the CLI prints it and exits with 2).
    """
    cfg, resume = config_from_args(args)
    try:
        resolved = resolve_config(cfg)
        if args.stop_at is not None:
            _pos_int(args.stop_at, "stop_at")
    except ConfigError as err:
        if err.field == "model":
            raise
        raise ValueError(f"{_flag(err.field)}: {err}") from None
    try:
        result = train(cfg, resume=resume, stop_at=args.stop_at)
    except KeyboardInterrupt as err:
        return 128 + int(getattr(err, "signum", signal.SIGINT))
    except TrainingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        if isinstance(err, FileNotFoundError):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        task, _ = preset_of(resolved)
        what = "finished" if result.step >= resolved.steps else "stopped"
        value = result.eval_metrics.get(task.metric, math.nan)
        shown = f"{value:.4f}" if math.isfinite(value) else "n/a"
        metric = f"NLL {shown} bits/sample" if task.metric == "bits" else f"{task.metric} {shown}"
        print(f"{what} at step {result.step}: eval {metric} ({result.eval_split}); run folder "
              f"{result.run_dir} (load it with {task.describe_load(str(result.run_dir))})")
    return 0
