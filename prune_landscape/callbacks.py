"""Deprecated alias of :mod:`prune_landscape.integrations.callbacks` (moved there, issue 14); import from there.

Importing this module warns once (DeprecationWarning) and re-exports everything the new module has.
"""

from prune_landscape._moved import alias

_MOVED_TO = "prune_landscape.integrations.callbacks"
__all__, __getattr__ = alias(__name__, _MOVED_TO)
