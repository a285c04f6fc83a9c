"""How far a value travels (issue 14), measured on real runs rather than read from a diagram.

- ``sparsity`` from the command line to the mask: the call stack at the moment the kept entries are
  chosen (``topk_mask``) crosses at most 5 modules, each once (no bounce back to a module already left),
  and only ever steps down the tiers (integrations -> experiments -> core).
- ``masks`` from ``LandscapeAudit`` to the written report: every stack that reaches a report writer
  only steps down the tiers too, and the full report is written by the core's ``save_report``.

The stacks are recorded with ``sys.setprofile`` on one tiny run each, so a refactor that adds a hop or a
bounce fails here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader, TensorDataset

from prune_landscape import models
from prune_landscape.integrations.callbacks import AuditReporting, LandscapeAudit, PruneAtInit
from prune_landscape.integrations.cli import CONF_DIR, run_audit
from prune_landscape.integrations.lit import LitClassifier
from test_architecture import tier  # the tiers as the layout test reads them from the folders

def _package_frames(frame) -> list[tuple[str, str]]:
    """``(module, function)`` from the outermost package frame to ``frame`` (frames outside the package dropped)."""
    found = []
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith("prune_landscape"):
            found.append((module, frame.f_code.co_name))
        frame = frame.f_back
    return found[::-1]


def _record(run: Callable[[], object], wanted: Callable[[str, str], bool]) -> list[list[tuple[str, str]]]:
    """Every package stack at a call of a function ``wanted(module, name)`` during ``run()``."""
    stacks = []

    def profile(frame, event, arg):
        if event == "call" and wanted(frame.f_globals.get("__name__", ""), frame.f_code.co_name):
            stacks.append(_package_frames(frame))

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return stacks


def _modules_in_order(stack: list[tuple[str, str]]) -> list[str]:
    """Consecutive frames of one module collapsed: the modules the call crosses, outermost first."""
    modules: list[str] = []
    for module, _ in stack:
        if not modules or modules[-1] != module:
            modules.append(module)
    return modules


def test_the_stack_helpers_on_a_hand_made_walk():
    stack = [("prune_landscape.integrations.cli_audit", "a"), ("prune_landscape.integrations.cli_audit", "b"),
             ("prune_landscape.experiments.sweep", "c"), ("prune_landscape.pruning.api", "d"),
             ("prune_landscape.experiments.sweep", "e")]
    assert _modules_in_order(stack) == ["prune_landscape.integrations.cli_audit", "prune_landscape.experiments.sweep",
                                        "prune_landscape.pruning.api", "prune_landscape.experiments.sweep"]
    assert [tier(m) for m in _modules_in_order(stack)] == [2, 1, 0, 1]  # the bounce the tests below refuse


def test_sparsity_from_the_command_line_to_the_mask_crosses_five_modules_without_coming_back(tmp_path):
    overrides = [f"output_dir={tmp_path}", "audit.methods=[magnitude]", "audit.sparsities=[0.9]",
                 "audit.final_layer_policies=[prune]", "probes=none", "data.max_samples=120", "data.batch_size=32",
                 "model.widths=[64,10]", "fit.epochs=1", "audit.progress=false", "torch_threads=1",
                 "audit.dense_baseline=false"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("audit", overrides=overrides)
        stacks = _record(lambda: run_audit(cfg), lambda module, name: name == "topk_mask")
    assert stacks, "the run chose no kept entries"
    modules = _modules_in_order(stacks[0])
    assert modules == ["prune_landscape.integrations.cli_audit", "prune_landscape.experiments.sweep",
                       "prune_landscape.pruning.api", "prune_landscape.pruning.allocation",
                       "prune_landscape.pruning.topk"], modules
    assert len(set(modules)) == len(modules) <= 5
    tiers = [tier(m) for m in modules]
    assert tiers == sorted(tiers, reverse=True), f"a call climbs back up a tier: {list(zip(modules, tiers))}"


def test_masks_from_landscape_audit_to_the_written_report_never_climb_atier(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(48, 6, generator=g), torch.randint(0, 3, (48,), generator=g)),
                      batch_size=16)
    torch.manual_seed(0)
    lit = LitClassifier(models.mlp([6, 8, 3]), lr=0.05)
    callbacks = [PruneAtInit("magnitude", 0.5, final_layer_policy="dense"),
                 LandscapeAudit(probes=[], reporting=AuditReporting(report_dir=tmp_path / "audit"))]
    trainer = pl.Trainer(max_epochs=1, callbacks=callbacks, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)

    def writer(module: str, name: str) -> bool:
        return (module, name) in {("prune_landscape.report", "save_report"),
                                  ("prune_landscape.integrations.callbacks._reportfiles", "partial_report")}

    stacks = _record(lambda: trainer.fit(lit, data), writer)
    assert (tmp_path / "audit" / "report.json").is_file()
    assert stacks and stacks[-1][-1] == ("prune_landscape.report", "save_report"), "the full report is the core's"
    for stack in stacks:
        modules = _modules_in_order(stack)
        tiers = [tier(m) for m in modules]
        assert modules[0].startswith("prune_landscape.integrations.callbacks"), modules
        assert tiers == sorted(tiers, reverse=True), f"a call climbs back up a tier: {list(zip(modules, tiers))}"
        assert len(set(modules)) == len(modules), f"a module is left and entered again: {modules}"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
