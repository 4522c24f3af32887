"""Maintainer tools run from the checkout (not installed): ``python -m tools.<name>``."""
