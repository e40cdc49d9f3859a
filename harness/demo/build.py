"""`latentgate demo train`: rebuild the demo world's weights and record them in the manifest.

Each component is trained from a seed, evaluated, saved under the weights folder and recorded
in the manifest with its checksum, the exact command and its figures.
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

from safetensors.torch import save_file

from harness.demo.manifest import WEIGHTS_DIR, record_file
from harness.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

# Classifiers first: the generator evaluation counts classes with the clean classifier. The
# identity model comes before the generator, because the generator's last phase uses it.
COMPONENTS = ("classifiers", "identity", "generator")
GENERATOR_FILE = "generator.pt"
IDENTITY_FILE = "identity.onnx"


def _command(component: str, steps: int | None, seed: int, out: Path, start: Path | None) -> str:
    words = ["latentgate", "demo", "train", component, "--seed", str(seed)]
    if out.resolve() != WEIGHTS_DIR.resolve():
        words += ["--out", str(out)]
    if steps is not None:
        words += ["--steps", str(steps)]
    if start is not None:
        words += ["--start", str(start)]
    return shlex.join(words)


def train_component(
    component: str,
    out: Path = WEIGHTS_DIR,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
    start: Path | None = None,
) -> dict:
    """Train one component (or every one for `all`) and return its figures by file name.

    `start`, for the generator only, is a checkpoint through the recipe's first four phases,
    and only the last phase runs on it.
    """
    if start is not None and component != "generator":
        raise ConfigError(
            f"--start applies to the generator only, not to {component!r}; drop --start or train "
            "the generator"
        )
    out.mkdir(parents=True, exist_ok=True)
    if component == "all":
        figures = {}
        for name in COMPONENTS:
            figures.update(train_component(name, out, steps, seed, progress))
        return figures
    command = _command(component, steps, seed, out, start)
    if component == "generator":
        return _train_generator(out, steps, seed, command, progress, start)
    if component == "identity":
        return _train_identity(out, steps, seed, command, progress)
    if component == "classifiers":
        return _train_classifiers(out, steps, seed, command, progress)
    raise ValueError(f"unknown component {component!r}")


def _train_generator(out: Path, steps, seed, command, progress, start: Path | None) -> dict:
    from harness.demo.evaluate_generator import evaluate_generator
    from harness.demo.manifest import sha256_of
    from harness.demo.train_generator import train_demo_generator
    from harness.generator import load_generator, save_rosinality_checkpoint
    from harness.identity import load_identity_model
    from harness.suite.regions import DEMO_FACE_CROP

    if not (out / IDENTITY_FILE).is_file():
        raise CheckpointError(
            f"{out / IDENTITY_FILE} not found: the generator's last training phase uses the demo "
            "identity model; train it first with `latentgate demo train identity`"
        )
    identity_model = load_identity_model(out / IDENTITY_FILE, face_crop=DEMO_FACE_CROP)
    provenance = None
    start_network = None
    if start is not None:
        start_network = load_generator(start)
        provenance = {"started_from": {"path": str(start), "sha256": sha256_of(start)}}
    generator = train_demo_generator(
        identity_model, seed=seed, steps=steps, progress=progress, start=start_network
    )
    save_rosinality_checkpoint(generator, out / GENERATOR_FILE)
    clean = out / "classifier-clean.safetensors"
    classifier = None
    if clean.is_file():
        from safetensors.torch import load_file

        from harness.demo.networks import HairstyleNet

        classifier = HairstyleNet()
        classifier.load_state_dict(load_file(str(clean)), strict=True)
        classifier.eval()
    figures = evaluate_generator(generator, classifier, identity_model=identity_model)
    log.info("generator figures: %s", json.dumps(figures))
    record_file(GENERATOR_FILE, command, seed, figures, out, provenance)
    return {GENERATOR_FILE: figures}


def _train_identity(out: Path, steps, seed, command, progress) -> dict:
    from harness.demo.train_identity import evaluate_identity, export_identity_onnx, train_identity

    kwargs = {"steps": steps} if steps is not None else {}
    network = train_identity(seed=seed, progress=progress, **kwargs)
    export_identity_onnx(network, out / IDENTITY_FILE)
    figures = evaluate_identity(network)
    log.info("identity figures: %s", json.dumps(figures))
    record_file(IDENTITY_FILE, command, seed, figures, out)
    return {IDENTITY_FILE: figures}


def _train_classifiers(out: Path, steps, seed, command, progress) -> dict:
    from harness.demo.registry import DEMO_VERSIONS
    from harness.demo.train_classifiers import evaluate_classifier, train_classifier

    figures = {}
    kwargs = {"steps": steps} if steps is not None else {}
    for spec in DEMO_VERSIONS:
        network = train_classifier(spec.variant, seed=seed, progress=progress, **kwargs)
        save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(out / spec.weights))
        figures[spec.weights] = evaluate_classifier(network)
        log.info("classifier %s figures: %s", spec.variant, json.dumps(figures[spec.weights]))
        record_file(spec.weights, command, seed, figures[spec.weights], out)
    return figures
