"""Lightning callbacks: pruning pipelines and the landscape audit (adapters; may import pytorch_lightning).

Add the audit to any Lightning script in one line:

    >>> import pytorch_lightning as pl
    >>> from prune_landscape.callbacks import LandscapeAudit
    >>> trainer = pl.Trainer(max_epochs=1, callbacks=[LandscapeAudit()], logger=False)

It works beside this package's pruning callbacks, Lightning's ``ModelPruning`` (either order) and masks
attached by hand with ``torch.nn.utils.prune``.
"""

from prune_landscape.callbacks.audit import AuditRecord, LandscapeAudit
from prune_landscape.callbacks.pruning import GradualMagnitudePruning, IterativeMagnitudePruning, PruneAtInit

__all__ = [
    "AuditRecord",
    "GradualMagnitudePruning",
    "IterativeMagnitudePruning",
    "LandscapeAudit",
    "PruneAtInit",
]
