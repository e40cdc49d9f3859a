"""Search for class directions in a generator's W+ space."""

from harness.search.direction import DirectionResult, SearchSettings, search_directions

__all__ = ["DirectionResult", "SearchSettings", "search_directions"]
