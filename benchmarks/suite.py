"""Benchmark the main job on the demo world: wall time of the whole suite and where it goes.

    .venv/bin/python benchmarks/suite.py [--model hair:1] [--suite suites/hair.yaml] [--threads 2]

Seeds the demo registry in a fresh SQLite store in a temporary folder (`latentgate demo setup`,
from the committed weights). Then runs the main job once (`harness.evaluation.evaluate`, the
same function as `latentgate run`), with every class of the suite at the suite's own settings.

Printed figures:
- wall time of the whole evaluation: loading, search, walks, measurements, artifacts and the
  MLflow run;
- time inside the networks' passes: the forward passes of the generator's synthesis network, the
  classifier, and the identity model (its torch conversion in the search, its onnxruntime
  session in the measurements), plus every `backward()` call. A forward pass nested inside
  another timed one is counted once (the outer one).
- the share of the wall time spent in those passes; the rest is Python between the passes,
  bootstrap intervals, image writing and MLflow.

Run it on an otherwise idle machine: other work slows the passes and the share drifts.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from harness import evaluation  # noqa: E402
from harness.demo.registry import setup_demo_registry  # noqa: E402


class PassTimer:
    """Accumulates wall time per network; nested timed calls count once, in the outer one."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._depth = 0

    def wrap(self, name: str, function):
        def timed(*args, **kwargs):
            if self._depth:
                return function(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start
                self.calls[name] += 1
                self._depth -= 1

        return timed

    def hook_module(self, name: str, module: torch.nn.Module) -> None:
        """Time `module`'s forward through hooks (a module attribute cannot hold a plain function)."""
        starts: list[float] = []

        def before(*_):
            self._depth += 1
            starts.append(time.perf_counter())

        def after(*_):
            self._depth -= 1
            elapsed = time.perf_counter() - starts.pop()
            if self._depth == 0:
                self.seconds[name] += elapsed
                self.calls[name] += 1

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="hair:1", help="demo model reference (default: hair:1)")
    parser.add_argument("--suite", default=str(REPO_ROOT / "suites" / "hair.yaml"), help="suite file")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    timer = PassTimer()

    load_models = evaluation.load_models

    def timed_load_models(*load_args, **load_kwargs):
        loaded = load_models(*load_args, **load_kwargs)
        timer.hook_module("generator", loaded.generator.synthesis)
        timer.hook_module("classifier", loaded.classifier)
        loaded.identity.embed_torch = timer.wrap("identity", loaded.identity.embed_torch)
        loaded.identity.embed = timer.wrap("identity", loaded.identity.embed)
        return loaded

    evaluation.load_models = timed_load_models
    backward = torch.Tensor.backward
    torch.Tensor.backward = timer.wrap("backward", backward)

    suite = Path(args.suite).resolve()
    # MLflow keeps a SQLite store's artifacts under ./mlruns, so the run works in the temporary
    # folder, and nothing is left in the working folder.
    with tempfile.TemporaryDirectory(prefix="latentgate-bench-") as folder, contextlib.chdir(folder):
        uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        setup_demo_registry(uri)
        start = time.perf_counter()
        result = evaluation.evaluate(args.model, suite, tracking_uri=uri, progress=False)
        wall = time.perf_counter() - start
    torch.Tensor.backward = backward

    inside = sum(timer.seconds.values())
    print(f"model {args.model}, suite {args.suite}, {args.threads} threads, verdict {result.gate.verdict}")
    print(f"wall time of the whole evaluation: {wall:.1f} s")
    for name in ("generator", "classifier", "identity", "backward"):
        print(f"  {name:<10} {timer.seconds[name]:7.1f} s in {timer.calls[name]:5d} calls")
    print(f"inside forward/backward passes: {inside:.1f} s = {100 * inside / wall:.1f}% of the wall time")


if __name__ == "__main__":
    main()
