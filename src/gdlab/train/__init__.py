"""The one training loop and its stopping rules."""
