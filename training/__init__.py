"""Training entry points (`python -m training.demo`)."""
