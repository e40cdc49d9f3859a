import os

import pytest
from toy_models import register_toy_classifier


@pytest.fixture(scope="session", autouse=True)
def scratch_working_folder(tmp_path_factory):
    """Run the tests from a scratch folder, not the checkout.

    MLflow puts the artifacts of a SQLite store's experiments under ./mlruns of the working
    folder, so the tests would otherwise leave them in the checkout.
    """
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("working-folder"))
    yield
    os.chdir(previous)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite registry with model `colour` version 1 (the toy classifier), alias `champion`."""
    folder = tmp_path_factory.mktemp("store")
    return folder, register_toy_classifier(folder)
