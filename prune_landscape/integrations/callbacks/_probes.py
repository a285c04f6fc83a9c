"""The probes LandscapeAudit runs: checked by name at construction, each run so that a failure is recorded.

Lightning adapter helper. A probe that raises (the Hessian of a diverged model, ARPACK not converging)
leaves a :class:`~prune_landscape.report.ProbeFailure` in the report and one recorded failure; the audit and
the run go on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from prune_landscape.probes import PROBES
from prune_landscape.report import ProbeFailure  # the core failure value, re-exported here as before

__all__ = ["ProbeFailure", "check_probes", "guarded_probes"]


def check_probes(probes: Any) -> tuple[str | Callable[..., Any], ...]:
    """``probes`` as a tuple, each a callable or a name in ``PROBES``.

    Raises:
        ValueError: for a string (not a sequence of names), a non-sequence, or unknown names (listing the known).
    """
    if isinstance(probes, str):
        raise ValueError(f"probes must be a sequence of names or callables, got the string {probes!r}")
    if not isinstance(probes, Sequence):
        raise ValueError(f"probes must be a sequence of names or callables, got {type(probes).__name__}")
    unknown = [p for p in probes if not callable(p) and (not isinstance(p, str) or p not in PROBES)]
    if unknown:
        raise ValueError(f"unknown probes {unknown}; expected callables or names in {sorted(PROBES)}")
    return tuple(probes)


def guarded_probes(
    probes: Sequence[str | Callable[..., Any]], on_failure: Callable[[str, BaseException], None]
) -> list[Callable[..., Any]]:
    """Each probe wrapped so that one that raises calls ``on_failure`` and returns a ProbeFailure."""
    wrapped = []
    for probe in probes:
        name = probe if isinstance(probe, str) else getattr(probe, "__name__", type(probe).__name__)
        function = PROBES[probe] if isinstance(probe, str) else probe

        def run(model: nn.Module, data: Any, __name: str = name, __function: Callable[..., Any] = function) -> Any:
            try:
                return __function(model, data)
            except Exception as error:  # a probe failing (NaN weights, ARPACK) must not lose the audit
                on_failure(f"probe {__name}", error)
                return ProbeFailure(__name, f"{type(error).__name__}: {error}")

        run.__name__ = name
        wrapped.append(run)
    return wrapped
