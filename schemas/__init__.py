"""Contracts shared by every acfd package: configs, artifact metadata and the verdict store.

This package imports nothing else of acfd, so any part of the project may depend on it.
"""
