"""Maintainer tools that are not part of the installed package (docs generators, synthetic logs)."""
