"""Command line: ``sashimi generate`` and ``sashimi info``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _load_model(spec: str):
    """A SaShiMiLM from a local folder (config.json + model.safetensors) or a Hub id."""
    from sashimi.models.lm import SaShiMiLM

    return SaShiMiLM.from_pretrained(spec)


def _cmd_info(args: argparse.Namespace) -> int:
    model = _load_model(args.model)
    print(f"model: {args.model}")
    for key, value in model.config.to_dict().items():
        print(f"  {key}: {value}")
    print(f"parameters: {model.num_parameters():,}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from sashimi.audio import load_audio, save_audio

    if args.seconds <= 0:
        raise SystemExit("error: --seconds must be > 0")
    if args.batch_size < 1:
        raise SystemExit("error: --batch-size must be >= 1")
    model = _load_model(args.model)
    cfg = model.config
    num_samples = max(1, round(args.seconds * cfg.sample_rate))
    prompt = None
    if args.prompt is not None:
        # validate everything before generating or writing anything
        wav, _ = load_audio(args.prompt, sample_rate=cfg.sample_rate, resample=args.resample)
        prompt = wav
        if prompt.shape[-1] > num_samples:
            raise SystemExit(
                f"error: the prompt has {prompt.shape[-1]} samples ({prompt.shape[-1] / cfg.sample_rate:.2f} s), "
                f"longer than the requested {num_samples} ({args.seconds} s)"
            )
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SystemExit("error: --plot needs matplotlib: pip install 'sashimi-audio[plot]'") from None
    generator = torch.Generator().manual_seed(args.seed)
    out = model.generate(
        args.batch_size, num_samples, prompt=prompt, temperature=args.temperature, top_p=args.top_p,
        generator=generator, progress=not args.quiet,
    )
    order = list(range(args.batch_size))
    if args.sort:
        order = sorted(order, key=lambda i: -float(out.log_likelihood[i]))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for rank, i in enumerate(order):
        path = out_dir / f"sample_{rank:03d}.wav"
        save_audio(path, out.waveform[i], cfg.sample_rate)
        line = f"{path}  bits/sample={float(out.bits_per_sample[i]):.4f}"
        if args.plot:
            png = path.with_suffix(".png")
            _plot_spectrogram(out.waveform[i], cfg.sample_rate, png)
            line += f"  {png.name}"
        print(line)
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
    parser = argparse.ArgumentParser(prog="sashimi", description="SaShiMi raw-waveform audio models")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="sample audio from a model")
    gen.add_argument("--model", required=True, help="local model folder or Hub id")
    gen.add_argument("--seconds", type=float, default=2.0)
    gen.add_argument("--batch-size", type=int, default=4)
    gen.add_argument("--prompt", default=None, help="a WAV file whose audio starts every sample")
    gen.add_argument("--resample", action="store_true", help="resample a prompt at another sample rate")
    gen.add_argument("--out", default="samples", help="output folder")
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--sort", action="store_true", help="order the files by likelihood, most likely first")
    gen.add_argument("--plot", action="store_true", help="also write a spectrogram PNG per sample (matplotlib)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=_cmd_generate)

    info = sub.add_parser("info", help="print a model's config and parameter count")
    info.add_argument("model", help="local model folder or Hub id")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
