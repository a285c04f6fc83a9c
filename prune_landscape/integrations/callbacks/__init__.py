"""Lightning callbacks: pruning pipelines and the landscape audit (adapters; may import pytorch_lightning).

Add the audit to any Lightning script in one line:

    >>> import pytorch_lightning as pl
    >>> from prune_landscape.integrations.callbacks import LandscapeAudit
    >>> trainer = pl.Trainer(max_epochs=1, callbacks=[LandscapeAudit()], logger=False)

It works beside this package's pruning callbacks, Lightning's ``ModelPruning`` (either order) and masks
attached by hand with ``torch.nn.utils.prune``, in ``pytorch_lightning`` and ``lightning.pytorch``
Trainers, on any LightningModule (``network=`` picks the audited network when the automatic choice
cannot) and any batch structure (``model_io=ModelIO(batch_to_inputs=..., batch_to_targets=...)``; defaults
:func:`default_batch_to_inputs` and :func:`default_batch_to_targets`). Its settings come in three groups:
:class:`AuditSchedule` (when), :class:`ModelIO` (how the network is fed and read) and
:class:`AuditReporting` (where results go).
"""

from prune_landscape.integrations.callbacks._batches import default_batch_to_inputs, default_batch_to_targets
from prune_landscape.integrations.callbacks._network import NetworkChoice
from prune_landscape.integrations.callbacks.audit import AuditRecord, LandscapeAudit, ProbeFailure
from prune_landscape.integrations.callbacks.options import AuditReporting, AuditSchedule, ModelIO
from prune_landscape.integrations.callbacks.pruning import GradualMagnitudePruning, IterativeMagnitudePruning, PruneAtInit

__all__ = [
    "AuditRecord",
    "AuditReporting",
    "AuditSchedule",
    "GradualMagnitudePruning",
    "IterativeMagnitudePruning",
    "LandscapeAudit",
    "ModelIO",
    "NetworkChoice",
    "ProbeFailure",
    "PruneAtInit",
    "default_batch_to_inputs",
    "default_batch_to_targets",
]
