"""MLflow logging of an evaluation, and the verdict written back onto the model version."""

from harness.tracking.mlflow_run import (
    EXPERIMENT_NAME,
    TAG_FAILED,
    TAG_RUN_ID,
    TAG_SUITE,
    TAG_VERDICT,
    EvaluationRun,
    tag_model_version,
)

__all__ = [
    "EXPERIMENT_NAME",
    "TAG_FAILED",
    "TAG_RUN_ID",
    "TAG_SUITE",
    "TAG_VERDICT",
    "EvaluationRun",
    "tag_model_version",
]
