"""Print the demo renderer's throughput in images per second on the CPU.

    .venv/bin/python benchmarks/render.py --threads 1 2 --num-samples 4096

Each configuration renders the same prior samples `--repeats` times and reports the best and
the median run. On a machine shared with other jobs the median drops first. With more torch
threads than idle cores it drops far, because every tensor operation waits for its slowest
thread.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from harness.demo import render, sample_attributes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=4096, help="images per run")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to try"
    )
    parser.add_argument(
        "--chunk-sizes", type=int, nargs="+", default=[64, 128, 256], help="chunk sizes to try"
    )
    parser.add_argument("--size", type=int, default=64, help="image size in pixels")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration")
    parser.add_argument("--masks", action="store_true", help="also return skin and hair masks")
    args = parser.parse_args()

    attributes = sample_attributes(args.num_samples, seed=0)
    render(attributes[:64], size=args.size)  # warm-up: allocator, kornia imports
    size = f"{args.size}x{args.size}"
    print(f"torch {torch.__version__}, {args.num_samples} images of {size} px per run")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for chunk_size in args.chunk_sizes:
            rates = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                render(attributes, size=args.size, return_masks=args.masks, chunk_size=chunk_size)
                rates.append(args.num_samples / (time.perf_counter() - start))
            print(
                f"threads {threads}  chunk {chunk_size:3d}  best {max(rates):7.0f} images/s  "
                f"median {statistics.median(rates):7.0f} images/s"
            )


if __name__ == "__main__":
    main()
