"""Figures drawn from a run's history (matplotlib, Agg backend, written atomically)."""
