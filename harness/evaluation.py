"""The main job: evaluate one registered classifier version against a suite.

    load suite -> resolve and load classifier -> load generator and identity model
    -> sample base latents -> search one direction per class -> walk and measure
    -> gate -> artifacts, MLflow run, verdict tags on the model version

Inputs are validated before the MLflow run starts, so a bad suite, an unknown model or class,
or a missing weights file leaves no run behind and the version's tags as they were. Once the
run has started, any error ends it FAILED and tags the model version `error`, never `pass`.
The verdict is tagged onto the version only after the run has ended, so a
version's verdict always names an ended run, even when the process dies in between. Artifacts are
written to a temporary folder and logged only when all of them exist, so no half-written set
reaches the run.
"""

from __future__ import annotations

import json
import logging
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness import __version__
from harness.classifier import ResolvedModel, load_classifier, resolve_model
from harness.classifier.registry import check_registry_uri
from harness.errors import LatentGateError
from harness.gate import ClassOutcome, GateResult, evaluate_gate, format_report
from harness.metrics.bootstrap import Measurement
from harness.metrics.walk import WalkCurves, measure_walk, render_walk
from harness.search import DirectionResult, SearchSettings, search_directions
from harness.suite import Suite, load_suite
from harness.tracking import (
    TAG_FAILED,
    TAG_RUN_ID,
    TAG_SUITE,
    TAG_VERDICT,
    EvaluationRun,
    tag_model_version,
)

log = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    """The outcome of one evaluation: gate result, resolved model, MLflow run and report."""

    gate: GateResult
    model: ResolvedModel
    run_id: str
    report: list[str]  # lines of the text report printed at the end

    @property
    def exit_code(self) -> int:
        return self.gate.exit_code


def _tracking_uri(tracking_uri: str | None) -> str:
    import mlflow

    uri = tracking_uri or mlflow.get_tracking_uri()
    check_registry_uri(uri)
    return uri


def evaluation_run_name(model_name: str, version: int | str, suite_name: str) -> str:
    """Return the MLflow run name of an evaluation; the automatic gate finds its runs by it."""
    return f"{model_name}-v{version}-{suite_name}"


def evaluate(
    model_reference: str,
    suite_path: str | Path,
    tracking_uri: str | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> EvaluationResult:
    """Run the main job and return its result; raise LatentGateError on bad input.

    The verdict is also written onto the model version as tags, whether it is pass, fail or
    error.
    """
    suite = load_suite(suite_path)
    uri = _tracking_uri(tracking_uri)
    model = resolve_model(model_reference, tracking_uri=uri)
    # Loading checks the classes, the generator and the identity model, so a typo in the
    # suite raises here and leaves the version's verdict from an earlier run as it was.
    loaded = load_models(model, suite, uri, device)

    run = EvaluationRun(uri, run_name=evaluation_run_name(model.name, model.version, suite.name))
    try:
        result = _evaluate_in_run(run, loaded, uri, progress)
    except BaseException as error:
        message = str(error) if isinstance(error, LatentGateError) else repr(error)
        log.error("evaluation of %s failed: %s", model.uri, message)
        _tag_error(run, uri, model, suite, message)
        run.finish("FAILED")
        raise
    run.finish("FAILED" if result.gate.verdict == "error" else "FINISHED")
    # MLflow sets tags one at a time; the verdict goes last, so that it never names an older run.
    tag_model_version(
        uri,
        model.name,
        model.version,
        {
            TAG_RUN_ID: run.run_id,
            TAG_SUITE: suite.name,
            TAG_FAILED: ",".join(result.gate.failed),
            TAG_VERDICT: result.gate.verdict,
        },
    )
    return result


def _tag_error(run: EvaluationRun, uri: str, model: ResolvedModel, suite: Suite, message: str) -> None:
    try:
        run.set_tags({TAG_VERDICT: "error", "latentgate.error": message})
        tag_model_version(
            uri,
            model.name,
            model.version,
            {TAG_VERDICT: "error", TAG_RUN_ID: run.run_id, TAG_SUITE: suite.name, TAG_FAILED: ""},
        )
    except Exception:  # the original error matters more than a failed tag write
        log.exception("could not write the error verdict onto %s", model.uri)


@dataclass
class LoadedModels:
    """The models one evaluation uses, loaded once and reused for every class."""

    model: ResolvedModel
    suite: Suite
    classifier: object  # harness.classifier.Classifier
    generator: object  # harness.generator.Generator
    identity: object  # harness.identity.IdentityModel
    layers: list[int]
    ws: torch.Tensor  # the suite's base latents, [num_samples, num_ws, w_dim]


@dataclass
class ClassMeasurement:
    """The search and walk of one class: direction, frames, curves and measurements."""

    direction: DirectionResult
    outcome: ClassOutcome
    frames: torch.Tensor | None = None  # [frames, samples, 3, H, W] raw generator output
    curves: WalkCurves | None = None


def load_models(model: ResolvedModel, suite: Suite, uri: str, device: str = "cpu") -> LoadedModels:
    """Load the classifier, generator and identity model a suite names; raise on bad input."""
    from harness.generator import load_generator
    from harness.identity import load_identity_model

    classifier = load_classifier(
        model,
        fallback_class_names=suite.classifier_classes,
        fallback_preprocessing=None
        if suite.preprocessing is None
        else {
            "resolution": suite.preprocessing.resolution,
            "mean": list(suite.preprocessing.mean),
            "std": list(suite.preprocessing.std),
        },
        allow_pickle=suite.allow_pickle,
        device=device,
        tracking_uri=uri,
    )
    suite.check_classes(classifier.class_names)
    generator = load_generator(suite.generator, device=device)
    identity = load_identity_model(suite.identity, device=device, face_crop=suite.regions.face_crop)
    search = suite.search
    ws = generator.sample_ws(search.num_samples, search.seed, search.truncation_psi)
    return LoadedModels(
        model=model,
        suite=suite,
        classifier=classifier,
        generator=generator,
        identity=identity,
        layers=list(suite.layer_indices(generator.num_ws)),
        ws=ws,
    )


def measure_classes(
    loaded: LoadedModels, class_names: list[str] | None = None, progress: bool = True
) -> dict[str, ClassMeasurement]:
    """Search a direction for each class (default: every class of the suite), walk and measure it."""
    suite, classifier, generator = loaded.suite, loaded.classifier, loaded.generator
    search = suite.search
    names = suite.class_names if class_names is None else class_names
    directions = search_directions(
        generator.synthesis,
        classifier,
        loaded.identity.embed_torch,
        loaded.ws,
        [(name, classifier.class_index(name)) for name in names],
        SearchSettings(
            steps=search.steps,
            learning_rate=search.learning_rate,
            lambda_id=search.lambda_id,
            lambda_l2=search.lambda_l2,
            layers=tuple(loaded.layers),
        ),
        progress=progress,
    )

    alphas = np.asarray(search.alphas)
    skin_tone = _skin_tone_function(suite.regions.skin)
    bootstrap = search.bootstrap
    measured: dict[str, ClassMeasurement] = {}
    for direction in directions:
        if direction.status != "ok":
            measured[direction.class_name] = ClassMeasurement(
                direction, ClassOutcome(error=direction.message)
            )
            continue
        frames = render_walk(generator.synthesis, loaded.ws, direction.direction, alphas)
        curves = measure_walk(
            frames, alphas, classifier, direction.class_index, loaded.identity.embed, skin_tone
        )
        summary = curves.summarize(bootstrap.num_resamples, bootstrap.confidence, bootstrap.seed)
        measured[direction.class_name] = ClassMeasurement(
            direction, ClassOutcome(measurements=summary), frames, curves
        )
    return measured


def _evaluate_in_run(
    run: EvaluationRun, loaded: LoadedModels, uri: str, progress: bool
) -> EvaluationResult:
    model, suite = loaded.model, loaded.suite
    generator, identity = loaded.generator, loaded.identity
    run.log_params(
        {
            "model_uri": model.uri,
            "model_reference": model.reference,
            "model_version": model.version,
            "suite_name": suite.name,
            "suite_sha256": suite.sha256,
            "seed": suite.search.seed,
            "num_samples": suite.search.num_samples,
            "steps": suite.search.steps,
            "generator_sha256": generator.source.sha256,
            "identity_sha256": identity.info.sha256,
            "latentgate_version": __version__,
        }
    )

    measured = measure_classes(loaded, progress=progress)
    outcomes = {name: m.outcome for name, m in measured.items()}
    gate = evaluate_gate(suite.expectations, outcomes)
    report = format_report(gate)

    with tempfile.TemporaryDirectory(prefix="latentgate-") as folder:
        artifacts = Path(folder)
        _write_artifacts(artifacts, model, suite, gate, measured, generator, identity)
        run.log_metrics(_metrics(outcomes))
        run.log_artifacts(artifacts)

    failed = ",".join(gate.failed)
    run.set_tags({TAG_VERDICT: gate.verdict, TAG_FAILED: failed, "latentgate.model_uri": model.uri})
    return EvaluationResult(gate=gate, model=model, run_id=run.run_id, report=report)


def _skin_tone_function(box):
    from harness.metrics.skin_tone import measure_skin_tone

    def skin_tone(frames: torch.Tensor) -> dict[str, torch.Tensor]:
        # Generator outputs overshoot [-1, 1] a little; CIELab needs sRGB values in [0, 1].
        measured = measure_skin_tone(((frames + 1) / 2).clamp(0, 1), box)
        return {"ita_deg": measured.ita_deg, "L": measured.L, "hue_deg": measured.hue_deg}

    return skin_tone


def _metrics(outcomes: dict[str, ClassOutcome]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for class_name, outcome in outcomes.items():
        for metric, measurement in outcome.measurements.items():
            metrics[f"{class_name}.{metric}"] = measurement.mean
            metrics[f"{class_name}.{metric}.ci_low"] = measurement.ci_low
            metrics[f"{class_name}.{metric}.ci_high"] = measurement.ci_high
    return metrics


def _write_artifacts(
    folder: Path,
    model: ResolvedModel,
    suite: Suite,
    gate: GateResult,
    measured: dict[str, ClassMeasurement],
    generator,
    identity,
) -> None:
    from harness.report import contact_sheet, plot_curves, walk_gif_frames, write_gif, write_png
    from harness.report.html import write_report_html
    from harness.report.images import FRAME_MS

    class_files: dict[str, dict[str, str]] = {}
    for class_name, class_measurement in measured.items():
        frames, curves = class_measurement.frames, class_measurement.curves
        if frames is None or curves is None:
            continue
        write_gif(folder / f"{class_name}.gif", walk_gif_frames(frames))
        write_png(folder / f"{class_name}_sheet.png", contact_sheet(frames))
        plot_curves(curves, f"{model.uri}: towards {class_name}", folder / f"{class_name}_curves.png")
        class_files[class_name] = {
            "gif": f"{class_name}.gif",
            "contact sheet": f"{class_name}_sheet.png",
            "curves": f"{class_name}_curves.png",
        }

    results = {
        "latentgate_version": __version__,
        "model": {
            "uri": model.uri,
            "reference": model.reference,
            "name": model.name,
            "version": model.version,
            "alias": model.alias,
            "run_id": model.run_id,
        },
        "suite": suite.to_dict(),
        "generator": generator.source.to_dict(),
        "identity": identity.info.as_dict(),
        "environment": {"python": platform.python_version(), "torch": torch.__version__},
        "gif_frame_ms": FRAME_MS,
        "gate": gate.to_dict(),
        "classes": {},
    }
    for class_name, class_measurement in measured.items():
        direction = class_measurement.direction
        entry: dict[str, object] = {
            "status": direction.status,
            "message": direction.message,
            "error_step": direction.error_step,
            "final_losses": direction.final_losses,
            "loss_history": direction.loss_history,
        }
        entry["measurements"] = {
            metric: _json_measurement(m)
            for metric, m in class_measurement.outcome.measurements.items()
        }
        curves = class_measurement.curves
        if curves is not None:
            entry["alphas"] = curves.alphas.tolist()
            entry["per_sample"] = {k: v.tolist() for k, v in curves.per_sample_metrics().items()}
            entry["curves_mean"] = {
                "target_prob": curves.target_prob.mean(axis=0).tolist(),
                "identity_cos_sim": curves.identity_cos_sim.mean(axis=0).tolist(),
                "skin_ita_deg": curves.skin_ita_deg.mean(axis=0).tolist(),
            }
        results["classes"][class_name] = entry
    (folder / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False, default=str))

    write_report_html(
        folder / "report.html",
        f"LatentGate: {model.uri} on suite {suite.name}",
        gate,
        class_files,
        {
            "model": f"{model.reference} -> {model.uri}",
            "suite": f"{suite.path} (sha256 {suite.sha256[:12]})",
            "generator": f"{generator.source.path} (sha256 {str(generator.source.sha256)[:12]})",
            "identity model": f"{identity.info.path} (sha256 {identity.info.sha256[:12]})",
            "samples": str(suite.search.num_samples),
            "GIF frame time": f"{FRAME_MS} ms",
        },
    )


def _json_measurement(measurement: Measurement) -> dict[str, object]:
    return {
        key: (None if isinstance(value, float) and not np.isfinite(value) else value)
        for key, value in measurement.to_dict().items()
    }
