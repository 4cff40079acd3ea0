"""Displacement estimators and the scoring network."""
