"""Alias of :mod:`prune_landscape.integrations.cli` for ``prune-landscape`` console scripts installed before
the move (they run ``from prune_landscape.cli import main``); ``pip install -e .`` regenerates them.

Silent, unlike the other aliases: a warning here would be printed on every command. Import from
:mod:`prune_landscape.integrations.cli` in code.
"""

from prune_landscape._moved import alias

_MOVED_TO = "prune_landscape.integrations.cli"
__all__, __getattr__ = alias(__name__, _MOVED_TO, warn=False)
