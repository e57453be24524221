"""Training entry points (`python -m training.train`, `python -m training.figures`)."""
