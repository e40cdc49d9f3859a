"""Benchmark StyleGAN2 synthesis on the CPU: forward, and forward plus backward to ws.

    .venv/bin/python benchmarks/generator.py [--threads 2] [--batch 16] [--repeats 10]

Measures a freshly initialised 64 px generator with channels capped at 128 (every block has
128 channels), batch 16, with `torch.set_num_threads(2)`. "forward+backward" is what a
direction search does: parameters frozen, ws requires grad, backward of a scalar image loss.

Each (implementation, mode) pair runs in its own child process, so that its peak memory is its
own. Peak memory is the child's maximum resident set size (resource.getrusage ru_maxrss). It is
printed with its increase over the peak RSS after the generator was built, before the first
pass. Times are wall-clock seconds per batch, and images/s uses the median. "CPU s" is the
process's CPU time per batch summed over its threads (median). On a machine shared with other
work both grow, so compare figures only from runs on an otherwise idle machine.

The last table compares three ways to compute the 2x up-sampling 3x3 convolution with its 4x4
FIR filter at the benchmark's largest layer. The generator uses a transposed convolution
followed by the filter. The alternatives compose the two into one 6x6 transposed convolution,
or into its polyphase form: one 3x3 convolution with 4x the output channels, then a pixel
shuffle.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from harness.generator import build_generator, make_architecture  # noqa: E402
from harness.generator import ops  # noqa: E402

MODES = ("forward", "forward+backward")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--batch", type=int, default=16, help="images per batch")
    parser.add_argument("--resolution", type=int, default=64, help="output size in pixels")
    parser.add_argument("--channel-max", type=int, default=128, help="channel cap of every block")
    parser.add_argument("--repeats", type=int, default=10, help="timed batches per measurement")
    parser.add_argument("--child", nargs=2, metavar=("IMPLEMENTATION", "MODE"), help=argparse.SUPPRESS)
    return parser.parse_args()


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(args: argparse.Namespace, implementation: str, mode: str) -> dict:
    """Time `repeats` batches after one warm-up batch; runs inside a child process."""
    torch.set_num_threads(args.threads)
    arch = make_architecture(args.resolution, channel_max=args.channel_max)
    generator = build_generator(arch).eval().requires_grad_(False)
    generator.synthesis.modconv_implementation = implementation
    ws = generator.sample_ws(args.batch, seed=0)
    baseline = max_rss_mib()

    def run_once() -> None:
        if mode == "forward":
            with torch.no_grad():
                generator.synthesis(ws)
        else:
            point = ws.clone().requires_grad_(True)
            generator.synthesis(point).square().mean().backward()

    run_once()
    seconds = []
    cpu_seconds = []
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        run_once()
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "baseline_mib": baseline,
        "peak_mib": max_rss_mib(),
    }


def run_child(args: argparse.Namespace, implementation: str, mode: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--threads", str(args.threads),
        "--batch", str(args.batch),
        "--resolution", str(args.resolution),
        "--channel-max", str(args.channel_max),
        "--repeats", str(args.repeats),
        "--child", implementation, mode,
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def upsampling_variants(args: argparse.Namespace) -> list[tuple[str, float, float]]:
    """Time three formulations of the up-sampling conv at the last block; return (name, fwd, fwd+bwd)."""
    torch.set_num_threads(args.threads)
    channels = args.channel_max
    size = args.resolution // 2
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, channels, size, size, generator=rng).contiguous(
        memory_format=torch.channels_last
    )
    weight = torch.randn(channels, channels, 3, 3, generator=rng) / (channels * 9) ** 0.5
    fir = ops.normalized_filter(torch.tensor([1.0, 3, 3, 1]))

    # Composed kernel: the 3x3 kernel convolved with the filter times 4, 6x6 per channel pair.
    composed = F.conv2d(
        F.pad(weight.reshape(-1, 1, 3, 3), (3, 3, 3, 3)), (fir * ops.UPSAMPLE_GAIN).flip(0, 1)[None, None]
    ).reshape(channels, channels, 6, 6)
    composed_transposed = composed.transpose(0, 1).contiguous()
    # Polyphase: output pixel (2i + a, 2j + b) uses taps 4 - 2u + a, 4 - 2v + b of the 6x6 kernel.
    taps = torch.arange(3)
    phases = torch.stack(
        [torch.stack([composed[:, :, 4 - 2 * taps + a][:, :, :, 4 - 2 * taps + b] for b in (0, 1)]) for a in (0, 1)]
    )  # [2, 2, Cout, Cin, 3, 3]
    polyphase = phases.permute(2, 0, 1, 3, 4, 5).reshape(4 * channels, channels, 3, 3)

    variants = {
        "transposed conv, then FIR (used)": lambda inp: ops.blur_after_transposed_conv(
            F.conv_transpose2d(inp, weight.transpose(0, 1), stride=2), fir
        ),
        "one 6x6 transposed conv": lambda inp: F.conv_transpose2d(inp, composed_transposed, stride=2, padding=2),
        "polyphase 3x3 conv + shuffle": lambda inp: F.pixel_shuffle(F.conv2d(inp, polyphase, padding=1), 2),
    }
    reference = next(iter(variants.values()))(x)
    rows = []
    for name, variant in variants.items():
        difference = (variant(x) - reference).abs().max().item()
        assert difference < 1e-4, (name, difference)

        def forward(variant=variant):
            with torch.no_grad():
                variant(x)

        def forward_backward(variant=variant):
            point = x.detach().requires_grad_(True)
            variant(point).square().mean().backward()

        rows.append((name, best_of(forward, args.repeats), best_of(forward_backward, args.repeats)))
    return rows


def best_of(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(measure(args, *args.child)))
        return

    print(
        f"StyleGAN2 synthesis, {args.resolution} px, channels capped at {args.channel_max}, batch "
        f"{args.batch}, {args.threads} threads, torch {torch.__version__}, {args.repeats} timed batches"
    )
    print(f"{'implementation':<10} {'mode':<17} {'s/batch median':>14} {'min':>7} {'images/s':>9} "
          f"{'CPU s':>7} {'peak RSS MiB':>13} {'+ over build':>13}")
    for implementation in ops.MODCONV_IMPLEMENTATIONS:
        for mode in MODES:
            result = run_child(args, implementation, mode)
            median = statistics.median(result["seconds"])
            print(
                f"{implementation:<10} {mode:<17} {median:>14.3f} {min(result['seconds']):>7.3f} "
                f"{args.batch / median:>9.1f} {statistics.median(result['cpu_seconds']):>7.3f} "
                f"{result['peak_mib']:>13.0f} "
                f"{result['peak_mib'] - result['baseline_mib']:>13.0f}"
            )

    print()
    print(f"2x up-sampling conv {args.resolution // 2} -> {args.resolution} px, {args.channel_max} channels, "
          f"batch {args.batch}, best of {args.repeats} (seconds)")
    print(f"{'formulation':<34} {'forward':>8} {'fwd+bwd':>8}")
    for name, forward, forward_backward in upsampling_variants(args):
        print(f"{name:<34} {forward:>8.3f} {forward_backward:>8.3f}")


if __name__ == "__main__":
    main()
