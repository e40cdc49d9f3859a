"""Estimate how long `latentgate demo train generator` takes, from the step time of each phase.

    .venv/bin/python benchmarks/demo_training.py --threads 2 --steps 40

Each phase of the recipe (`RECIPE_STEPS`) runs `--steps` optimiser steps at the recipe's batch
size on a freshly built demo generator, after a few warm-up steps. The time per step times the
recipe's step count gives the phase's estimate. The attribute regressors that teach the later
phases and score the result, and the evaluation's cross-check regressor, are timed the same
way. The weights do not change the step time, so the estimate holds for the trained generator
too. Identity phases need the committed `weights/demo/identity.onnx`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from harness.demo.evaluate_generator import (
    CROSS_CHECK_STEPS,
    MEASURED_ATTRIBUTES,
    SCORING_REGRESSOR_STEPS,
    TEACHER_ATTRIBUTES,
    train_attribute_regressor,
    train_cross_check_regressor,
)
from harness.demo.networks import HairstyleNet
from harness.demo.train_generator import (
    DEMO_ARCHITECTURE,
    HAIR_PHASE_SETTINGS,
    RECIPE_STEPS,
    continue_with_identity,
    refine_generator,
    train_generator,
)
from harness.generator import build_generator
from harness.identity import load_identity_model
from harness.suite.regions import DEMO_FACE_CROP

IDENTITY_MODEL = Path(__file__).resolve().parent.parent / "weights" / "demo" / "identity.onnx"
# Regressor steps of the recipe: the refinement's teacher and the identity phases' teacher, at
# the trainer's default of 800 steps each.
TEACHER_STEPS = 2 * 800
# Regressor steps of evaluate_generator, which `latentgate demo train generator` runs after
# training: the two scoring regressors (the cross-check regressor is timed on its own).
SCORING_STEPS = 2 * SCORING_REGRESSOR_STEPS


def _seconds_per_step(run, steps: int, warmup: int) -> float:
    run(warmup)
    start = time.perf_counter()
    run(steps)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per phase")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before each timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    identity_model = load_identity_model(IDENTITY_MODEL, face_crop=DEMO_FACE_CROP)
    # The refinement's teacher reads the measured attributes, the identity phases' teacher also
    # the identity traits.
    refinement_teacher = HairstyleNet(num_classes=len(MEASURED_ATTRIBUTES)).eval()
    teacher = HairstyleNet(num_classes=len(TEACHER_ATTRIBUTES)).eval()
    fresh = lambda: build_generator(DEMO_ARCHITECTURE)  # noqa: E731

    phases = [
        ("pixel phase 1", lambda n: train_generator(steps=n, progress=False)),
        ("pixel phase 2", lambda n: train_generator(steps=n, learning_rate=3e-3, progress=False)),
        ("refinement", lambda n: refine_generator(fresh(), refinement_teacher, steps=n, progress=False)),
        ("identity phase", lambda n: continue_with_identity(fresh(), identity_model, teacher, steps=n, progress=False)),
        (
            "hair phase",
            lambda n: continue_with_identity(
                fresh(), identity_model, teacher, steps=n, progress=False, **HAIR_PHASE_SETTINGS
            ),
        ),
    ]
    print(f"torch {torch.__version__}, {args.threads} threads, {args.steps} timed steps per phase")
    training = 0.0
    for (name, run), recipe_steps in zip(phases, RECIPE_STEPS, strict=True):
        training += _report(name, _seconds_per_step(run, args.steps, args.warmup), recipe_steps)
    regressor = _seconds_per_step(lambda n: train_attribute_regressor(steps=n, progress=False), args.steps, args.warmup)
    training += _report("teachers", regressor, TEACHER_STEPS)
    print(f"estimated training: {training / 3600:.2f} h")

    evaluation = _report("scoring", regressor, SCORING_STEPS)
    cross_check = _seconds_per_step(lambda n: train_cross_check_regressor(steps=n, progress=False), args.steps, args.warmup)
    evaluation += _report("cross-check", cross_check, CROSS_CHECK_STEPS)
    print(f"estimated evaluation, without its renders and samples: {evaluation / 3600:.2f} h")
    print(f"estimated total: {(training + evaluation) / 3600:.2f} h")


def _report(name: str, seconds_per_step: float, steps: int) -> float:
    """Print the estimate of one phase or regressor and return it in seconds."""
    seconds = seconds_per_step * steps
    print(f"{name:16s} {seconds_per_step:6.3f} s/step x {steps:5d} steps = {seconds / 60:6.1f} min")
    return seconds


if __name__ == "__main__":
    main()
