"""One-screen text summary of a resolved suite, printed by `latentgate suite check`."""

from __future__ import annotations

from harness.suite.resolved import Suite


def _box(box: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{value:g}" for value in box) + "]"


def format_summary(suite: Suite) -> list[str]:
    """Return the summary lines: files, regions, search settings, classes and their bounds."""
    search = suite.search
    layers = "all" if search.layers is None else ", ".join(str(i) for i in search.layers)
    lines = [
        f"suite {suite.name!r}: {suite.path} is valid (sha256 {suite.sha256[:12]})",
        f"  generator: {suite.generator}",
        f"  identity:  {suite.identity}",
        f"  regions:   preset {suite.regions.preset or 'none'}, face_crop "
        f"{_box(suite.regions.face_crop)}, skin {_box(suite.regions.skin)}",
        f"  search:    {search.num_samples} samples (seed {search.seed}), truncation_psi "
        f"{search.truncation_psi:g}, {search.steps} steps at learning_rate "
        f"{search.learning_rate:g}, lambda_id {search.lambda_id:g}, lambda_l2 "
        f"{search.lambda_l2:g}, layers {layers}",
        f"  walk:      alpha 0 to {search.alpha_max:g} in {search.num_frames} frames; bootstrap "
        f"{search.bootstrap.num_resamples} resamples, {search.bootstrap.confidence:.0%} "
        f"interval (seed {search.bootstrap.seed})",
    ]
    if suite.classifier_classes:
        lines.append(f"  classifier classes (if the model lacks them): "
                     f"{', '.join(suite.classifier_classes)}")
    if suite.preprocessing:
        prep = suite.preprocessing
        lines.append(
            f"  preprocessing (if the model lacks it): {prep.resolution} px, mean "
            f"{_box(prep.mean)}, std {_box(prep.std)}"
        )
    lines.append(f"classes ({len(suite.expectations)}):")
    for name, expectations in suite.expectations.items():
        lines.append(f"  {name}")
        for expectation in expectations:
            lines.append(
                f"    {str(expectation):<34} statistic {expectation.statistic:<8} "
                f"from {expectation.source}"
            )
    return lines
