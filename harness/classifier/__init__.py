"""Classifiers from an MLflow model registry: references, resolution and loading."""

from harness.classifier.model import Classifier, Preprocessing, load_classifier
from harness.classifier.reference import ModelReference, parse_model_reference
from harness.classifier.registry import ResolvedModel, check_registry_uri, resolve_model

__all__ = [
    "Classifier",
    "ModelReference",
    "Preprocessing",
    "ResolvedModel",
    "check_registry_uri",
    "load_classifier",
    "parse_model_reference",
    "resolve_model",
]
