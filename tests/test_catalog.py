"""The API's lists of architectures and methods are exactly what the science offers."""

from models.networks.registry import ARCHITECTURES
from models.objectives import METHODS
from service.catalog import ARCHITECTURE_NAMES, METHOD_NAMES


def test_architecture_names_match_the_estimators() -> None:
    assert sorted(ARCHITECTURE_NAMES) == sorted(ARCHITECTURES)


def test_method_names_match_the_objectives() -> None:
    assert sorted(METHOD_NAMES) == sorted(METHODS)
