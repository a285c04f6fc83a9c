"""LandscapeAudit never ends or loses a run (issue #13): dict and token batches, a diverged model under the
Hessian probe, an exception and Ctrl-C mid-fit (report written, marked interrupted), arguments checked at
construction and budgets at setup. Both Lightning namespaces where the Trainer is involved."""

import json
import signal
import warnings

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from _lightning_namespaces import NAMESPACES, data, namespace, trainer
from prune_landscape import MaskSet, models
from prune_landscape.integrations.callbacks import (
    AuditReporting,
    AuditSchedule,
    GradualMagnitudePruning,
    IterativeMagnitudePruning,
    LandscapeAudit,
    ModelIO,
    PruneAtInit,
)
from prune_landscape.integrations.lit import LitClassifier
from prune_landscape.pruning import GradualSchedule, IMPSchedule


class _DictData(Dataset):
    """Samples as dicts {"x": features, "y": label}: the default collate makes dict batches."""

    def __init__(self, n=48, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def _dict_module(pl):
    class DictBatches(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = models.mlp([6, 8, 3])

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self(batch["x"]), batch["y"])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    return DictBatches()


@pytest.mark.parametrize("ns_name", NAMESPACES)
def test_dict_batches_are_audited_with_their_data(tmp_path, ns_name):
    ns = namespace(ns_name)
    torch.manual_seed(0)
    module = _dict_module(ns.pl)
    audit = LandscapeAudit()
    fit = trainer(ns, tmp_path, [PruneAtInit("magnitude", 0.5), audit])
    fit.fit(module, DataLoader(_DictData(), batch_size=16))
    assert fit.current_epoch == 2 and not audit.failures
    # The final audit read the 48 samples through the default batch_to_targets ("y").
    assert audit.records[-1].metrics["audit/n"] == 48
    expected = MaskSet.from_module(module, source="hooks")["net.fc2.weight"].float().mean().item()
    assert audit.records[-1].metrics["audit/final_layer/density"] == pytest.approx(expected)


def test_batch_hooks_read_any_structure(tmp_path):
    """A batch of (targets, {"pixels": x}): the hooks say where inputs and targets are."""
    ns = namespace("pytorch_lightning")

    class Odd(ns.pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = models.mlp([6, 8, 3])

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self.net(batch[1]["pixels"]), batch[0])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    class OddData(_DictData):
        def __getitem__(self, i):
            return self.y[i], {"pixels": self.x[i]}

    audit = LandscapeAudit(model_io=ModelIO(batch_to_inputs=lambda b: b[1]["pixels"], batch_to_targets=lambda b: b[0]))
    trainer(ns, tmp_path, [audit], epochs=1).fit(Odd(), DataLoader(OddData(), batch_size=16))
    assert not audit.failures and audit.records[-1].metrics["audit/n"] == 48 and audit.choice.name == "net"


def _token_module(pl):
    class Bag(pl.LightningModule):
        """A bag-of-words classifier on integer token ids."""

        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.EmbeddingBag(50, 8), nn.ReLU(), nn.Linear(8, 3))

        def forward(self, tokens):
            return self.net(tokens)

        def training_step(self, batch, batch_idx):
            tokens, labels = batch
            return F.cross_entropy(self(tokens), labels)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    return Bag()


@pytest.mark.parametrize("ns_name", NAMESPACES)
def test_integer_token_batches_do_not_abort_fit(tmp_path, ns_name):
    ns = namespace(ns_name)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    tokens = DataLoader(list(zip(torch.randint(0, 50, (48, 5), generator=g), torch.randint(0, 3, (48,), generator=g))), batch_size=16)
    module = _token_module(ns.pl)
    head = torch.ones(3, 8, dtype=torch.bool)
    head[:, 4:] = False
    torch.nn.utils.prune.custom_from_mask(module.net[2], "weight", head)
    audit = LandscapeAudit(reporting=AuditReporting(report_dir=tmp_path / "report"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = trainer(ns, tmp_path, [audit])
        fit.fit(module, tokens)
    assert fit.current_epoch == 2
    assert audit.choice.rule == "forward"  # forward ran on the integer token ids
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    # Whether or not the structural pass can read token models, the final layer's density is reported.
    assert report["final_layer"]["density"] == pytest.approx(0.5)
    assert audit.records[-1].metrics["audit/final_layer/density"] == pytest.approx(0.5)
    assert MaskSet.load(tmp_path / "report" / "mask.safetensors")["net.2.weight"].equal(head)


class _TwoInputs(nn.Module):
    """forward(image, meta): two positional inputs, concatenated after their own layers."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(6, 8), nn.Linear(3, 8), nn.Linear(16, 3)

    def forward(self, image, meta):
        return self.head(torch.cat([F.relu(self.a(image)), F.relu(self.b(meta))], dim=1))


def test_positional_inputs_through_the_default_collate_reach_forward_as_arguments(tmp_path):
    """Samples ((image, meta), label) come out of a default DataLoader as [[images, metas], labels]."""
    g = torch.Generator().manual_seed(0)
    samples = [((torch.randn(6, generator=g), torch.randn(3, generator=g)), int(torch.randint(0, 3, (1,), generator=g)))
               for _ in range(48)]
    loader = DataLoader(samples, batch_size=16)
    assert isinstance(next(iter(loader))[0], list)

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _TwoInputs()

        def forward(self, image, meta):
            return self.net(image, meta)

        def training_step(self, batch, batch_idx):
            (image, meta), labels = batch
            return F.cross_entropy(self(image, meta), labels)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    torch.manual_seed(0)
    module = Module()
    audit = LandscapeAudit(reporting=AuditReporting(report_dir=tmp_path / "report"))
    prune_snip = PruneAtInit("snip", 0.5, final_layer_policy="dense")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer(namespace("pytorch_lightning"), tmp_path, [prune_snip, audit], epochs=1).fit(module, loader)
    # forward(image, meta) ran on the batch's inputs as two arguments, so the module itself is audited.
    assert audit.failures == {} and audit.choice.rule == "forward" and prune_snip._choice.rule == "forward"
    report = audit.last_report
    assert report.structure.final_layer == "net.head.weight" and report.structure.final_layer_dense
    assert report.n == 48, "the final audit read every (image, meta) pair with its label"
    kept = prune_snip.masks.num_kept
    assert kept == round(0.5 * (6 * 8 + 3 * 8 + 16 * 3)) and bool(prune_snip.masks["net.head.weight"].all())


class _Diverge:
    """Sets the first layer to NaN at the end of the last epoch (a diverged run)."""

    def __init__(self, base):
        class Diverge(base):
            def on_train_epoch_end(self, trainer, pl_module):
                if trainer.current_epoch == trainer.max_epochs - 1:
                    with torch.no_grad():
                        pl_module.net.fc1.weight.fill_(float("nan"))

        self.callback = Diverge()


@pytest.mark.parametrize("ns_name", NAMESPACES)
def test_a_diverged_model_under_the_hessian_probe_is_recorded_and_the_report_written(tmp_path, ns_name):
    ns = namespace(ns_name)
    torch.manual_seed(0)
    audit = LandscapeAudit(["hessian"], reporting=AuditReporting(report_dir=tmp_path / "report"))
    with pytest.warns(RuntimeWarning, match="LandscapeAudit: probe hessian failed"):
        fit = trainer(ns, tmp_path, [_Diverge(ns.pl.Callback).callback, audit])
        fit.fit(ns.NoForward(), data())
    assert fit.current_epoch == 2
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["probes"]["hessian"]["failed"] is True
    assert [f["what"] for f in report["run"]["failures"]] == ["probe hessian"]
    assert audit.records[-1].metrics["audit/probe/hessian/failed"] == 1.0
    assert "failed: probe hessian" in (tmp_path / "report" / "report.md").read_text()


class _Raise:
    def __init__(self, base, error):
        class Raise(base):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if trainer.current_epoch == 1 and batch_idx == 1:
                    raise error

        self.callback = Raise()


@pytest.mark.parametrize("ns_name", NAMESPACES)
def test_an_exception_mid_fit_still_writes_the_report_marked_interrupted(tmp_path, ns_name):
    ns = namespace(ns_name)
    torch.manual_seed(0)
    module = ns.NoForward()
    audit = LandscapeAudit()
    logger = ns.CSVLogger(tmp_path, name="csv")
    fit = trainer(ns, tmp_path, [PruneAtInit("magnitude", 0.6), audit, _Raise(ns.pl.Callback, RuntimeError("disk full")).callback], logger=logger, epochs=3)
    with pytest.raises(RuntimeError, match="disk full"):
        fit.fit(module, data())
    run_dir = tmp_path / "csv" / "version_0"
    report = json.loads((run_dir / "report.json").read_text())
    assert report["run"]["interrupted"] == "RuntimeError: disk full"
    assert report["final_layer"]["density"] == pytest.approx(module.net.fc2.weight_mask.float().mean().item())
    markdown = (run_dir / "report.md").read_text().splitlines()
    assert markdown[2].startswith("> **Interrupted**: RuntimeError: disk full")
    assert MaskSet.load(run_dir / "mask.safetensors") == MaskSet.from_module(module.net, source="hooks")


@pytest.mark.parametrize("ns_name", NAMESPACES)
def test_ctrl_c_mid_fit_still_writes_the_report_marked_interrupted(tmp_path, ns_name):
    ns = namespace(ns_name)
    audit = LandscapeAudit(reporting=AuditReporting(report_dir=tmp_path / "report"))
    fit = trainer(ns, tmp_path, [audit, _Raise(ns.pl.Callback, KeyboardInterrupt()).callback], epochs=3)
    previous = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning's graceful shutdown after on_exception
            fit.fit(ns.NoForward(), data())
    finally:
        signal.signal(signal.SIGINT, previous)  # Lightning ignores SIGINT from then on
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["run"]["interrupted"] == "KeyboardInterrupt" and report["run"]["network"]["name"] == "net"
    assert report["final_layer"]["name"] == "fc2.weight"


def test_every_callback_argument_is_checked_at_construction():
    cases = [
        (lambda: LandscapeAudit(n_samples=2.5), "n_samples must be a positive integer or None, got 2.5"),
        (lambda: LandscapeAudit(weight_decay=float("nan")), "weight_decay must be a finite number >= 0, got nan"),
        (lambda: LandscapeAudit(schedule=AuditSchedule(final_with_data="yes")), "final_with_data must be True or False, got 'yes'"),
        (lambda: LandscapeAudit(network=3), "network must be a submodule name .*got int"),
        (lambda: LandscapeAudit(model_io=ModelIO(batch_to_inputs="x")), "batch_to_inputs must be a callable or None, got str"),
        (lambda: LandscapeAudit(data=[1, 2, 3]), r"LandscapeAudit\(data=...\) needs a DataLoader"),
        (lambda: LandscapeAudit(reporting={"report_dir": 5}), "report_dir must be a path"),
        (lambda: LandscapeAudit(["hesian"]), r"unknown probes \['hesian'\]"),
        (lambda: GradualMagnitudePruning(GradualSchedule(0.5, 0, 10, 2), scope="bogus"),
         r"scope must be one of \['global', 'layerwise', 'erk'\], got 'bogus'"),
        (lambda: IterativeMagnitudePruning(IMPSchedule(rounds=2), final_layer_policy="bogus"),
         "final_layer(_policy)? must be 'prune', 'dense', a density in \\(0, 1\\] or 'min_density=x', got 'bogus'"),
        (lambda: IterativeMagnitudePruning(IMPSchedule(rounds=2), reset_optimizer="no"), "reset_optimizer must be True or False"),
        (lambda: PruneAtInit("snipp", 0.5), r"unknown pruning method 'snipp'"),
        (lambda: PruneAtInit("snip", 0.5, iterationz=3), r"unknown option\(s\) \['iterationz'\] for method 'snip'"),
        (lambda: PruneAtInit("magnitude", 0.5, seed=1.5), "seed must be an integer, got 1.5"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message):
            make()


@pytest.mark.parametrize("make", [
    lambda: GradualMagnitudePruning(GradualSchedule(0.9, 0, 4, 2), final_layer_policy="dense"),
    lambda: IterativeMagnitudePruning(IMPSchedule(rounds=12, rate=0.2), final_layer_policy="dense"),
])
def test_an_impossible_dense_head_budget_fails_at_setup_before_any_step(tmp_path, make):
    """mlp 6-8-24: the head has 192 of 240 weights; at 90 % (or 1 - 0.8^12 = 93 %) sparsity 24 are kept."""
    ns = namespace("pytorch_lightning")
    fit = trainer(ns, tmp_path, [make()], epochs=1)
    with pytest.raises(ValueError, match=r"final_layer(_policy)?='dense' does not fit: model.fc2.weight alone keeps 192 weights but the whole budget is (24|16) of 240"):
        fit.fit(LitClassifier(models.mlp([6, 8, 24]), lr=0.05), data())
    assert fit.global_step == 0


class _BrokenCSV:
    """A CSVLogger whose every log_metrics call raises (a full disk)."""

    def __init__(self, base, save_dir):
        class Broken(base):
            calls = 0

            def log_metrics(self, metrics, step=None):
                type(self).calls += 1
                raise OSError(28, "No space left on device")

        self.logger = Broken(save_dir, name="csv")


def test_a_failing_logger_and_an_unwritable_report_dir_do_not_end_the_run(tmp_path):
    ns = namespace("lightning.pytorch")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the report directory should be")
    broken = _BrokenCSV(ns.CSVLogger, tmp_path).logger
    audit = LandscapeAudit(reporting=AuditReporting(report_dir=blocker / "report"))
    with pytest.warns(RuntimeWarning) as record:
        fit = trainer(ns, tmp_path, [audit], logger=broken, epochs=2)
        fit.fit(ns.NoForward(), data())
    messages = [str(w.message) for w in record]
    assert fit.current_epoch == 2 and fit.state.finished
    assert any("Broken failed during log_metrics (OSError" in m and "stays on" in m for m in messages)
    assert any("LandscapeAudit: writing the report failed" in m for m in messages)
    # The logger was never switched off: every one of Lightning's and the audit's calls reached it.
    assert type(broken).calls >= 6
