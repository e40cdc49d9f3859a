import pytest
from toy_models import register_toy_classifier


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite registry with model `colour` version 1 (the toy classifier), alias `champion`."""
    folder = tmp_path_factory.mktemp("store")
    return folder, register_toy_classifier(folder)
