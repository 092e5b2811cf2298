"""Command line: ``sashimi generate``, ``sashimi info``, ``sashimi convert``, ``sashimi push`` and
``sashimi train``. ``generate`` and ``info`` load any family (:func:`sashimi.load_model`) and dispatch on
its ``model_type`` (:data:`GENERATORS`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _load_model(spec: str):
    """The model saved at ``spec`` (a local folder, a registry name such as ``sashimi-sc09``, downloaded,
    converted once and cached, or a Hub id), of the class its ``config.json`` names."""
    from sashimi.models import load_model

    try:
        return load_model(spec)
    except (ValueError, FileNotFoundError, TypeError):
        raise
    except OSError as err:  # a Hub / network failure
        raise SystemExit(f"error: could not load {spec!r}: {err}") from None


def _positive(value: float, flag: str) -> None:
    import math

    if not math.isfinite(value) or value <= 0:
        raise SystemExit(f"error: {flag} must be a finite number > 0, got {value}")


def _prepare_out(out: Path, overwrite: bool) -> list[Path]:
    """Check (and create) the output folder before anything is generated: it must be a writable folder,
    empty unless ``overwrite``; returns the old sample files to remove once the new ones are written."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out {out} exists and is not a folder")
    old = sorted(out.iterdir()) if out.is_dir() else []
    if old and not overwrite:
        raise SystemExit(f"error: --out {out} is not empty ({len(old)} entries); pass --overwrite to replace its "
                         "samples, or choose another folder")
    blocking = [p for p in old if p.name.startswith("sample_") and p.is_dir()]
    if blocking:
        raise SystemExit(f"error: {blocking[0]} is a folder where a sample file would go")
    _writable_folder(out)
    return [p for p in old if p.name.startswith("sample_") and p.suffix in (".wav", ".png")]


def _writable_folder(out: Path) -> None:
    """Create ``out`` and test-write into it (before long work starts), else a one-line error."""
    import tempfile

    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise SystemExit(f"error: cannot write into --out {out}: {err.strerror or err}") from None


def _write_samples(args: argparse.Namespace, waves, sample_rate: int, notes: list[str], old: list[Path]) -> None:
    """Write (B, T) waveforms as ``sample_000.wav``, ... (with spectrograms under ``--plot``), then remove
    the old sample files the new ones did not replace."""
    import torch

    from sashimi.audio import save_audio

    if not bool(torch.isfinite(waves).all()):
        raise SystemExit("error: the model produced non-finite audio (NaN or inf); nothing was written")
    out_dir = Path(args.out)
    written = set()
    try:
        for rank, wave in enumerate(waves):
            path = out_dir / f"sample_{rank:03d}.wav"
            save_audio(path, wave, sample_rate)
            written.add(path)
            line = f"{path}{notes[rank]}"
            if args.plot:
                png = path.with_suffix(".png")
                _plot_spectrogram(wave, sample_rate, png)
                written.add(png)
                line += f"  {png.name}"
            print(line)
    except OSError as err:
        raise SystemExit(f"error: writing samples into {out_dir} failed: {err.strerror or err}") from None
    for p in old:
        if p not in written:
            p.unlink(missing_ok=True)


def _convert_out(args: argparse.Namespace) -> Path:
    """The ``--out`` folder of a conversion: a folder, empty unless ``--force``."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise SystemExit(f"error: --out {out} is not empty (use --force to overwrite its model files)")
    return out


def _write_converted(out: Path, write) -> None:
    """Run ``write()`` (an atomic save: the old model files survive any failure); an OSError is one line."""
    try:
        write()
    except OSError as err:
        raise SystemExit(
            f"error: writing {out} failed ({err.strerror or err}); its old files are unchanged"
        ) from None


def _cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from sashimi.models.lm import SaShiMiLM

    out = _convert_out(args)
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    model = SaShiMiLM.from_state_spaces(args.file, variant=args.variant, dt_transform=args.dt_transform, dtype=dtype)
    _write_converted(out, lambda: model.save_pretrained(
        out, model_card_kwargs={"repo_id": args.repo_id} if args.repo_id else None))
    info = model._conversion_info
    print(f"converted {args.file} ({info['layout']} layout, variant {args.variant}) -> {out}")
    print(f"  parameters: {model.num_parameters():,}  {model.config.quantization} {model.config.bits}-bit "
          f"{model.config.sample_rate} Hz")
    print(f"  load it with SaShiMiLM.from_pretrained({str(out)!r}) or publish it with: sashimi push {out} USER/REPO")
    return 0


def _cmd_convert_diffwave(args: argparse.Namespace) -> int:
    from sashimi.models.diffwave import convert_diffwave_sashimi

    out = _convert_out(args)
    _write_converted(out, lambda: convert_diffwave_sashimi(args.file, args.config, out))
    print(f"converted {args.file} -> {out}; load it with sashimi.load_model({str(out)!r})")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from sashimi.hub.publish import push_folder

    try:
        url = push_folder(
            args.model_dir, args.repo_id, token=args.token, private=True if args.private else None,
            branch=args.branch, commit_message=args.message, create_pr=args.create_pr,
        )
    except (ValueError, FileNotFoundError, TypeError):
        raise
    except OSError as err:  # a Hub / network failure
        raise SystemExit(f"error: pushing {args.model_dir} to {args.repo_id} failed: {err}") from None
    print(url)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from sashimi.training.command import run_cli

    return run_cli(args)


def _cmd_info(args: argparse.Namespace) -> int:
    model = _load_model(args.model)
    print(f"model: {args.model}")
    print(f"  class: {type(model).__name__} (model_type {model.config.model_type!r})")
    for key, value in model.config.to_dict().items():
        if key != "model_type":
            print(f"  {key}: {value}")
    print(f"parameters: {model.num_parameters():,}")
    if hasattr(model, "label_vocabularies"):
        for key, value in model.label_vocabularies().items():
            print(f"  labels {key}: {value}")
    return 0


def _generate_lm(model, args: argparse.Namespace):
    """``sashimi generate`` for autoregressive token models (``sashimi-lm``): validates the inputs and
    returns the sampling function (-> (B, T) waveforms and a note per sample)."""
    import torch

    from sashimi.audio import load_audio

    cfg = model.config
    num_samples = max(1, round(args.seconds * cfg.sample_rate))
    prompt = None
    if args.prompt is not None:
        wav, _ = load_audio(args.prompt, sample_rate=cfg.sample_rate, resample=args.resample)
        prompt = wav
        if prompt.shape[-1] > num_samples:
            raise SystemExit(
                f"error: the prompt has {prompt.shape[-1]} samples ({prompt.shape[-1] / cfg.sample_rate:.2f} s), "
                f"longer than the requested {num_samples} ({args.seconds} s)"
            )

    # the model's stored default (generation.json), else 1.0
    temperature = args.temperature
    if temperature is None:
        temperature = model.generation_defaults.get("temperature", 1.0)

    def sample():
        generator = torch.Generator().manual_seed(args.seed)
        out = model.generate(
            args.batch_size, num_samples, prompt=prompt, temperature=temperature, top_p=args.top_p,
            generator=generator, progress=not args.quiet, num_threads=args.threads, compile=args.compile,
        )
        order = list(range(args.batch_size))
        if args.sort:
            order = sorted(order, key=lambda i: -float(out.log_likelihood[i]))
        return out.waveform[order], [f"  bits/sample={float(out.bits_per_sample[i]):.4f}" for i in order]

    return sample


def _parse_steps(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        steps = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(
            f"error: --steps must be comma-separated positive ints (e.g. 20,10,10,10), got {text!r}"
        ) from None
    if not steps or min(steps) < 1:
        raise SystemExit(f"error: --steps must be positive, got {text!r}")
    return steps


def _generate_masked(model, args: argparse.Namespace):
    """``sashimi generate`` for masked-token models (``masked-sashimi``): iterative parallel decoding, with an
    optional autoregressive rescorer (``--rescorer``) and an autoregressive prefix (``--ar-seconds``)."""
    import torch

    from sashimi.generation.hybrid import generate_hybrid

    cfg = model.config
    if cfg.quantization is None:
        raise SystemExit("error: this masked model generates codec tokens, not audio: decode them in Python "
                         "(MaskedSaShiMi.generate returns the tokens)")
    steps = _parse_steps(args.steps) or ((20,) if cfg.n_codebooks == 1 else (20, 10, 10, 10))
    num_tokens = max(1, round(args.seconds * cfg.sample_rate))
    lm = _load_model(args.rescorer) if args.rescorer is not None else None
    ar_tokens = 0
    if args.ar_seconds is not None:
        _positive(args.ar_seconds, "--ar-seconds")
        ar_tokens = round(args.ar_seconds * cfg.sample_rate)
        if not 1 <= ar_tokens < num_tokens:
            raise SystemExit(f"error: --ar-seconds {args.ar_seconds} must be shorter than --seconds {args.seconds}")
        if lm is None:
            raise SystemExit("error: --ar-seconds needs --rescorer LM_DIR (the autoregressive model of the prefix)")
    kw = dict(steps=steps, top_p=args.top_p, progress=not args.quiet)
    if args.temperature is not None:
        kw["temperature"] = args.temperature

    def sample():
        generator = torch.Generator().manual_seed(args.seed)
        if ar_tokens:
            out = generate_hybrid(lm, model, num_tokens, ar_tokens, args.batch_size, generator=generator,
                                  rescorer=lm, **kw)
        else:
            out = model.generate(args.batch_size, num_tokens, rescorer=lm, generator=generator, **kw)
        return out.waveform, [""] * args.batch_size

    return sample


def _diffusion_steps(text: str | None) -> str | int:
    if text is None:
        return "full"
    if text in ("full", "fast"):
        return text
    try:
        steps = int(text)
    except ValueError:
        raise SystemExit(f"error: --steps must be 'full', 'fast' or a positive int for a diffusion model, "
                         f"got {text!r}") from None
    if steps < 1:
        raise SystemExit(f"error: --steps must be positive, got {text!r}")
    return steps


def _generate_diffusion(model, args: argparse.Namespace):
    """``sashimi generate`` for unconditional diffusion models (``diffwave-sashimi``, ``diffwave-wavenet``)."""
    import torch

    cfg = model.config
    if cfg.n_mels:
        raise SystemExit(f"error: {args.model} is a vocoder (it needs a mel spectrogram): use "
                         f"`sashimi vocode --model {args.model} --audio IN.wav --out DIR`")
    steps = _diffusion_steps(args.steps)
    pool = getattr(model, "total_pool", 1)
    num_samples = max(pool, round(args.seconds * cfg.sample_rate / pool) * pool)

    def sample():
        generator = torch.Generator().manual_seed(args.seed)
        waves = model.generate(args.batch_size, num_samples, steps=steps, sampler=args.sampler, generator=generator,
                               progress=not args.quiet)
        return waves.float().clamp(-1, 1), [""] * args.batch_size

    return sample


def _generate_sing(model, args: argparse.Namespace):
    """``sashimi generate`` for SING: one note per (instrument, pitch, velocity) triple; single values
    broadcast to ``--batch-size`` notes (``--seconds``, ``--temperature`` and ``--top-p`` do not apply)."""
    if args.instrument is None or args.pitch is None:
        raise SystemExit("error: a SING model needs --instrument and --pitch (and --velocity, default 100); "
                         f"see `sashimi info {args.model}` for its labels")
    try:
        instruments = [model.instrument_id(int(i) if i.lstrip("-").isdigit() else i) for i in args.instrument]
        velocities = [model.velocity_id(v) for v in (args.velocity or [100])]
        labels = [instruments, [int(p) for p in args.pitch], velocities]
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    n = max(len(v) for v in labels)
    if n == 1:
        labels = [v * args.batch_size for v in labels]
    elif any(len(v) not in (1, n) for v in labels):
        raise SystemExit("error: --instrument, --pitch and --velocity need the same number of values (or one)")
    instrument, pitch, velocity = model.check_labels(*labels)

    def sample():
        waves = model.generate(instrument, pitch, velocity, batch_size=64, progress=not args.quiet)
        notes = [f"  instrument={int(i)} pitch={int(p)} velocity_id={int(v)}"
                 for i, p, v in zip(instrument, pitch, velocity)]
        return waves.float().clamp(-1, 1), notes

    return sample


#: how ``sashimi generate`` samples from each model type (a family that can generate adds its line): a
#: function (model, args) that validates the inputs and returns the sampling function
GENERATORS = {"sashimi-lm": _generate_lm, "masked-sashimi": _generate_masked,
              "diffwave-sashimi": _generate_diffusion, "diffwave-wavenet": _generate_diffusion, "sing": _generate_sing}


def _cmd_generate(args: argparse.Namespace) -> int:
    _positive(args.seconds, "--seconds")
    if args.temperature is not None:
        _positive(args.temperature, "--temperature")
    if not 0 < args.top_p <= 1:
        raise SystemExit(f"error: --top-p must be in (0, 1], got {args.top_p}")
    if args.batch_size < 1:
        raise SystemExit("error: --batch-size must be >= 1")
    if args.threads < 1:
        raise SystemExit("error: --threads must be >= 1")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SystemExit("error: --plot needs matplotlib: pip install 'sashimi-audio[plot]'") from None
    model = _load_model(args.model)
    mtype = model.config.model_type
    if mtype not in GENERATORS:
        raise SystemExit(
            f"error: {args.model} is a {mtype!r} model ({type(model).__name__}), which `sashimi generate` cannot "
            f"sample from (it can: {sorted(GENERATORS)}); score audio with it in Python instead"
        )
    sample = GENERATORS[mtype](model, args)  # validates the inputs
    old = _prepare_out(Path(args.out), args.overwrite)  # before anything is generated
    waves, notes = sample()
    _write_samples(args, waves, model.config.sample_rate, notes, old)
    return 0


def _cmd_vocode(args: argparse.Namespace) -> int:
    import math

    import torch

    from sashimi.audio import load_audio
    from sashimi.audio.features import log_mel_spectrogram

    model = _load_model(args.model)
    cfg = model.config
    if not getattr(cfg, "n_mels", 0):
        raise SystemExit(f"error: {args.model} is not a vocoder (a {cfg.model_type!r} model without mel "
                         "conditioning)")
    steps = _diffusion_steps(args.steps or "fast")
    wav, _ = load_audio(args.audio, sample_rate=cfg.sample_rate, resample=args.resample)
    wav = wav.reshape(1, -1) if wav.ndim == 1 else wav[:1]  # (1, T)
    hop = cfg.hop_length
    pool = getattr(model, "total_pool", 1)
    frames = wav.shape[-1] // hop
    frames -= frames % (pool // math.gcd(pool, hop))  # the length must be a multiple of the pooling too
    if frames < 1:
        raise SystemExit(f"error: {args.audio} is shorter than one frame ({hop} samples)")
    mel = log_mel_spectrogram(wav[:, : frames * hop], sample_rate=cfg.sample_rate, n_mels=cfg.n_mels,
                              hop_length=hop)[..., :frames]  # (1, n_mels, frames)
    old = _prepare_out(Path(args.out), args.overwrite)
    waves = model.generate(1, frames * hop, mel=mel.to(next(model.parameters()).dtype), steps=steps,
                           sampler=args.sampler, generator=torch.Generator().manual_seed(args.seed),
                           progress=not args.quiet)
    args.plot = False
    _write_samples(args, waves.float().clamp(-1, 1), cfg.sample_rate, [f"  ({frames} mel frames)"], old)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import importlib.util

    import torch

    from sashimi.data.labelled import load_clips
    from sashimi.metrics import evaluate_folders, evaluation_table, write_report

    classifier = _load_model(args.classifier)
    if not hasattr(classifier, "classify"):
        raise SystemExit(f"error: --classifier {args.classifier} is a {classifier.config.model_type!r} model, not a "
                         "classifier (train one with `sashimi train --task classifier`)")
    ccfg = classifier.config
    _writable_folder(Path(args.out))  # before the clips are classified
    nll_bits, lls = None, None
    if args.model is not None:
        lm = _load_model(args.model)
        if not hasattr(lm, "log_likelihood"):
            raise SystemExit(f"error: --model {args.model} is a {lm.config.model_type!r} model, which gives no "
                             "likelihood (an autoregressive model is needed)")
        rate = lm.config.sample_rate

        def bits(folder: str) -> torch.Tensor:
            clips, _ = load_clips(folder, rate, ccfg.num_samples, resample=args.resample, progress=not args.quiet)
            return torch.cat([lm.log_likelihood(c) for c in clips.split(args.batch_size)]).double()  # (N,)

        nll_bits = float(bits(args.reference).mean())  # the paper's NLL: held-out (reference) clips
        if args.protocol == "autoregressive":
            lls = -bits(args.samples)  # higher is more likely
    elif args.protocol == "autoregressive":
        raise SystemExit("error: --protocol autoregressive needs --model (the likelihoods sort the samples)")
    with_ndb = importlib.util.find_spec("sklearn") is not None and not args.no_ndb
    if not with_ndb and not args.no_ndb:
        print("note: NDB skipped (scikit-learn is not installed: pip install 'sashimi-audio[metrics]')",
              file=sys.stderr)
    result = evaluate_folders(
        classifier.classify, args.samples, args.reference, sample_rate=ccfg.sample_rate,
        num_samples=ccfg.num_samples, resample=args.resample, progress=not args.quiet, protocol=args.protocol,
        log_likelihoods=lls, reproduce_official_bug=args.reproduce_official_selection, nll_bits=nll_bits,
        with_ndb=with_ndb, ndb_clusters=args.ndb_clusters, batch_size=args.batch_size,
    )
    try:
        json_path, md_path = write_report(result, args.out)
    except OSError as err:
        raise SystemExit(f"error: writing the report into {args.out} failed: {err.strerror or err}") from None
    print(evaluation_table(result))
    print(f"\nwrote {json_path} and {md_path}")
    return 0


def _plot_spectrogram(wave, sample_rate: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    ax.specgram(wave.numpy(), Fs=sample_rate, NFFT=512, noverlap=384, cmap="magma")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    from sashimi.hub.registry import BUNDLED_NAME

    parser = argparse.ArgumentParser(prog="sashimi", description="SaShiMi raw-waveform audio models")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="sample audio from a model")
    gen.add_argument(
        "--model", default=BUNDLED_NAME,
        help=f"local model folder, Hub id, or pretrained name (e.g. sashimi-sc09); default: {BUNDLED_NAME}, "
        "the small plucked-string model shipped with the package (works offline)",
    )
    gen.add_argument("--seconds", type=float, default=2.0)
    gen.add_argument("--batch-size", type=int, default=4)
    gen.add_argument("--prompt", default=None, help="a WAV file whose audio starts every sample")
    gen.add_argument("--resample", action="store_true", help="resample a prompt at another sample rate")
    gen.add_argument("--out", default="samples", help="output folder (must be empty, unless --overwrite)")
    gen.add_argument("--overwrite", action="store_true",
                     help="write into a non-empty --out folder, replacing its sample_* files")
    gen.add_argument("--temperature", type=float, default=None,
                     help="sampling temperature (default: the model family's, 1.0 for autoregressive models)")
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--sort", action="store_true", help="order the files by likelihood, most likely first")
    gen.add_argument("--plot", action="store_true", help="also write a spectrogram PNG per sample (matplotlib)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.add_argument("--threads", type=int, default=1,
                     help="CPU threads (2+: the lower tiers step in a second thread; same samples)")
    gen.add_argument("--compile", action="store_true",
                     help="compile the step program with torch.compile (slow first call, faster after)")
    gen.add_argument("--steps", default=None,
                     help="masked models: decoding steps per stream, e.g. 20 or 20,10,10,10; diffusion models: "
                          "'full' (default), 'fast' or an int")
    gen.add_argument("--rescorer", default=None,
                     help="masked models: an autoregressive model folder that rescores every decoding step")
    gen.add_argument("--ar-seconds", type=float, default=None,
                     help="masked models: generate the first S seconds with the --rescorer model, then the rest "
                          "by masked decoding (hybrid)")
    gen.add_argument("--sampler", default="ddpm", choices=["ddpm", "ddim"], help="diffusion models: the sampler")
    gen.add_argument("--instrument", nargs="+", default=None, help="SING: instrument ids or names")
    gen.add_argument("--pitch", nargs="+", default=None, help="SING: MIDI pitches")
    gen.add_argument("--velocity", nargs="+", type=int, default=None,
                     help="SING: MIDI velocities (25, 50, 75, 100 or 127; default 100)")
    gen.set_defaults(func=_cmd_generate)

    voc = sub.add_parser("vocode", help="re-synthesize a recording from its mel spectrogram with a vocoder")
    voc.add_argument("--model", required=True, help="a vocoder model folder (diffwave-sashimi with n_mels > 0)")
    voc.add_argument("--audio", required=True, help="the recording (its log-mel spectrogram is the condition)")
    voc.add_argument("--out", default="vocoded", help="output folder (must be empty, unless --overwrite)")
    voc.add_argument("--overwrite", action="store_true")
    voc.add_argument("--steps", default="fast", help="'full', 'fast' (lmnt's 6 steps, default) or an int")
    voc.add_argument("--sampler", default="ddpm", choices=["ddpm", "ddim"])
    voc.add_argument("--resample", action="store_true", help="resample a recording at another sample rate")
    voc.add_argument("--seed", type=int, default=0)
    voc.add_argument("--quiet", action="store_true")
    voc.set_defaults(func=_cmd_vocode)

    info = sub.add_parser("info", help="print a model's config and parameter count")
    info.add_argument("model", help="local model folder, Hub id, or pretrained name (e.g. sashimi-sc09)")
    info.set_defaults(func=_cmd_info)

    from sashimi.convert.state_spaces import DT_TRANSFORMS, VARIANTS

    conv = sub.add_parser("convert", help="convert an official checkpoint into a Hub-ready model folder")
    conv_sub = conv.add_subparsers(dest="source", required=True)
    ss = conv_sub.add_parser(
        "state-spaces", help="a state-spaces/s4 release checkpoint (.pt read with weights_only=True, or .safetensors)"
    )
    ss.add_argument("file", help="the release file, e.g. sashimi_sc09.pt")
    ss.add_argument("--variant", required=True, choices=sorted(VARIANTS), help="architecture and data settings")
    ss.add_argument("--out", required=True, help="output folder (config.json, model.safetensors, README.md)")
    ss.add_argument(
        "--dt-transform", default="exp", choices=DT_TRANSFORMS,
        help="v4 key layout only: exp for the official ports (default), softplus for v4-native training",
    )
    ss.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ss.add_argument("--repo-id", default=None, help="Hub id to show in the model card's usage example")
    ss.add_argument("--force", action="store_true", help="write into a non-empty --out folder")
    ss.set_defaults(func=_cmd_convert)
    dw = conv_sub.add_parser(
        "diffwave-sashimi", help="an official diffwave-sashimi checkpoint (.pkl, read with weights_only=True)"
    )
    dw.add_argument("file", help="the official checkpoint, e.g. sc09_unconditional.pkl")
    dw.add_argument("--config", required=True,
                    help="sc09, sc09-small, vocoder, or a JSON file holding the official model config")
    dw.add_argument("--out", required=True, help="output folder (config.json, model.safetensors, README.md)")
    dw.add_argument("--force", action="store_true", help="write into a non-empty --out folder")
    dw.set_defaults(func=_cmd_convert_diffwave)

    push = sub.add_parser("push", help="upload a saved model folder to a Hub model repo")
    push.add_argument("model_dir", help="folder with config.json and model.safetensors")
    push.add_argument("repo_id", help="USER/REPO on the Hugging Face Hub")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument("--branch", default=None, help="upload to this branch (created if needed)")
    push.add_argument("--message", default=None, help="commit message")
    push.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    push.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    push.set_defaults(func=_cmd_push)

    ev = sub.add_parser("evaluate", help="score generated clips against reference clips with a classifier "
                        "(FID, IS, mIS, AM, NDB; NLL with --model)")
    ev.add_argument("--classifier", required=True, help="a classifier model folder (model_type sc09-classifier)")
    ev.add_argument("--samples", required=True, help="folder of generated clips")
    ev.add_argument("--reference", required=True, help="folder of reference (test-set) clips")
    ev.add_argument("--protocol", default="diffusion", choices=["diffusion", "autoregressive"],
                    help="autoregressive: likelihood-sorted samples, window chosen on half (needs --model)")
    ev.add_argument("--model", default=None, help="an autoregressive model: NLL of the reference clips in bits")
    ev.add_argument("--out", default="evaluation", help="folder for evaluation.json and evaluation.md")
    ev.add_argument("--resample", action="store_true", help="resample clips at another sample rate")
    ev.add_argument("--ndb-clusters", type=int, default=50)
    ev.add_argument("--no-ndb", action="store_true", help="skip NDB (K-means)")
    ev.add_argument("--reproduce-official-selection", action="store_true",
                    help="autoregressive protocol: the official code's window selection (always the last window)")
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(func=_cmd_evaluate)

    from sashimi.training.command import add_train_arguments

    tr = sub.add_parser(
        "train", help="train a model (--task lm|wavenet) on a folder of audio (several processes: "
        "torchrun --nproc_per_node=K -m sashimi train)"
    )
    add_train_arguments(tr)
    tr.set_defaults(func=_cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
