"""Curvature, stability limits and explanations computed from the data and the model."""
