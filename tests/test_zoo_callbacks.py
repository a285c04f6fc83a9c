"""The Lightning callbacks on every fast zoo model (issue #11): the user's network is left as found.

Each fast model of ``tests/zoo.py`` is wrapped the way a user wraps a network: a LightningModule holding it
as a child (``self.net``), no ``forward``, the loss computed in ``training_step`` from the zoo's own
example input (tensor, positional tuple or keyword dict; token ids included) and the zoo's output
transform. A two-step CPU fit then runs with

* ``LandscapeAudit`` (structural audits, the final audit with data, and a probe that deliberately
  vandalises the model it is handed): around every hook the callback runs, the user's network is
  compared with a snapshot taken just before it: state-dict tensors bit for bit, the Parameter objects
  (so tied weights stay one object), parametrizations, forward/backward/state-dict hooks, module classes
  and every module's train/eval flag. The audit must have run (no recorded failure) and found the head
  the zoo declares; the network still runs afterwards.
* ``PruneAtInit("snip")``: across its ``setup`` only the masks are added (each pruned tensor moves to
  ``*_orig`` as the same Parameter, a ``*_mask`` buffer and a pruning pre-hook appear, or a mask
  parametrization is appended on a parametrized weight), every other tensor, hook and flag is as before,
  ties survive, the effective weight is ``original * mask``, and after training the pruned entries are
  still zero and the network still runs.

The oracle here is the zoo's own declarations (head name, tied pairs) and torch's own module state, not
the package's helpers.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).parent))

import zoo  # noqa: E402

from prune_landscape.batching import call_model, select_output  # noqa: E402
from prune_landscape.integrations.callbacks import (  # noqa: E402
    AuditReporting,
    GradualMagnitudePruning,
    LandscapeAudit,
    ModelIO,
    PruneAtInit,
)
from prune_landscape.pruning import GradualSchedule  # noqa: E402

# make test runs the fast models; ZOO_ALL=1 adds the full-size torchvision/timm ones (the README's command).
ENTRIES = zoo.zoo(fast_only=not os.environ.get("ZOO_ALL"))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these networks are tiny, and two threads on a shared 2-core box thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


NAMES = [e.name for e in ENTRIES]
AUDIT_HOOKS = ("setup", "on_train_start", "on_train_batch_start", "on_train_epoch_start", "on_train_epoch_end", "on_train_end")


# ---------------------------------------------------------------------------------- the user's wrapper
class _OneBatch(Dataset):
    """The zoo example as every batch (``len`` batches), exactly as the zoo builds it."""

    def __init__(self, batch: Any, length: int = 2):
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        return self.batch


class ZooModule(pl.LightningModule):
    """A generic user LightningModule: the network as a child, no forward, cross-entropy on its output."""

    def __init__(self, net: nn.Module, output_transform: Any):
        super().__init__()
        self.net = net
        self.output_transform = output_transform

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        output = select_output(call_model(self.net, inputs), self.output_transform)
        return F.cross_entropy(output.reshape(-1, output.shape[-1]).float(), targets.reshape(-1))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _loader(entry: zoo.ZooEntry) -> DataLoader:
    inputs = entry.example_input()
    with torch.no_grad():
        output = entry.output(entry.build(), inputs)
    targets = torch.randint(0, output.shape[-1], output.shape[:-1], generator=torch.Generator().manual_seed(0))
    # batch_size=None and no conversion: tuples of positional inputs stay tuples.
    return DataLoader(_OneBatch((inputs, targets)), batch_size=None, collate_fn=lambda batch: batch)


def _fit(tmp_path: Path, lit: pl.LightningModule, callbacks: list, entry: zoo.ZooEntry) -> None:
    trainer = pl.Trainer(
        max_epochs=1, callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1, default_root_dir=tmp_path,
    )
    trainer.fit(lit, _loader(entry))


# ------------------------------------------------------------------------------------------- snapshot
def _stored(module: nn.Module, attr: str) -> torch.Tensor:
    """The Parameter behind ``module.<attr>``: itself, its pruning ``*_orig``, or a parametrization's original."""
    if parametrize.is_parametrized(module, attr):
        plist = module.parametrizations[attr]
        return plist.original if hasattr(plist, "original") else plist.original0
    if f"{attr}_orig" in module._parameters:
        return module._parameters[f"{attr}_orig"]
    return getattr(module, attr)


def _snapshot(net: nn.Module) -> dict:
    """Everything about the network a callback must not change (tensors cloned bit for bit)."""
    parametrized = {n: m for n, m in net.named_modules() if parametrize.is_parametrized(m)}
    return {
        "state": {k: v.detach().clone() for k, v in net.state_dict(keep_vars=True).items()},
        "parameters": [(n, id(p), p.requires_grad) for n, p in net.named_parameters(remove_duplicate=False)],
        "classes": [(n, type(m)) for n, m in net.named_modules()],
        "training": [(n, m.training) for n, m in net.named_modules()],
        "forward_pre_hooks": [(n, tuple(m._forward_pre_hooks.items())) for n, m in net.named_modules()],
        "other_hooks": [
            (n, tuple(m._forward_hooks), tuple(m._backward_hooks), tuple(m._state_dict_hooks),
             tuple(m._load_state_dict_pre_hooks))
            for n, m in net.named_modules()
        ],
        "parametrizations": {n: [(a, [type(p) for p in m.parametrizations[a]]) for a in m.parametrizations]
                             for n, m in parametrized.items()},
    }


def _assert_unchanged(before: dict, net: nn.Module, when: str) -> None:
    after = _snapshot(net)
    assert before["state"].keys() == after["state"].keys(), f"{when}: state-dict keys changed"
    for key, value in before["state"].items():
        now = after["state"][key]
        assert value.dtype == now.dtype and torch.equal(value, now), f"{when}: {key} changed"
    for part in ("parameters", "classes", "training", "forward_pre_hooks", "other_hooks", "parametrizations"):
        assert before[part] == after[part], f"{when}: {part} changed"


def _assert_runs(entry: zoo.ZooEntry, net: nn.Module, shape: torch.Size) -> None:
    with torch.no_grad():
        output = entry.output(net.eval(), entry.example_input())
    assert output.shape == shape and bool(torch.isfinite(output).all()), f"{entry.name}: output {output.shape}"


def _output_shape(entry: zoo.ZooEntry) -> torch.Size:
    with torch.no_grad():
        return entry.output(entry.build(), entry.example_input()).shape


# ------------------------------------------------------------------------------------------- the audit
@dataclass(frozen=True)
class _Vandalised:
    """What the hostile probe returns (the report only needs scalars and to_dict)."""

    zeroed: int

    def scalars(self) -> dict[str, float]:
        return {"zeroed": float(self.zeroed)}

    def to_dict(self) -> dict[str, Any]:
        return {"zeroed": self.zeroed}


def vandal(model: nn.Module, data: Any) -> _Vandalised:
    """A probe that zeroes every parameter, flips the mode and adds a hook on the model it is handed."""
    model.train(not model.training)
    model.register_forward_hook(lambda *args: None)
    zeroed = 0
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
            zeroed += parameter.numel()
    return _Vandalised(zeroed)


class _WatchedAudit(LandscapeAudit):
    """LandscapeAudit whose every hook is bracketed by a snapshot of the user's network."""

    def __init__(self, watched_net: nn.Module, **kwargs: Any):
        super().__init__(**kwargs)
        self.watched_net = watched_net
        self.hooks_seen: list[str] = []


def _watch(hook: str):
    def run(self: _WatchedAudit, *args: Any, **kwargs: Any) -> None:
        before = _snapshot(self.watched_net)
        getattr(LandscapeAudit, hook)(self, *args, **kwargs)
        _assert_unchanged(before, self.watched_net, f"LandscapeAudit.{hook}")
        self.hooks_seen.append(hook)

    return run


for _hook in AUDIT_HOOKS:
    setattr(_WatchedAudit, _hook, _watch(_hook))


def _canonical_names(entry: zoo.ZooEntry, name: str) -> set[str]:
    """``name`` and every name tied to it (from the zoo's declaration)."""
    names = {name}
    for a, b in entry.tied:
        if name in (a, b):
            names |= {a, b}
    return names


@pytest.mark.parametrize("name", NAMES)
def test_landscape_audit_leaves_every_zoo_network_unchanged(name, tmp_path):
    entry = zoo.entry(name)
    net = entry.build()
    shape = _output_shape(entry)
    lit = ZooModule(net, entry.output_transform)
    audit = _WatchedAudit(
        net, probes=[vandal], model_io=ModelIO(output_transform=entry.output_transform),
        reporting=AuditReporting(report_dir=tmp_path / "audit"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's few-batches and num_workers advice
        _fit(tmp_path, lit, [audit], entry)

    assert set(audit.hooks_seen) == set(AUDIT_HOOKS), f"hooks that ran: {sorted(set(audit.hooks_seen))}"
    assert audit.failures == {}, f"{name}: recorded failures {audit.failures}"
    assert audit.choice is not None and audit.choice.name == "net" and audit.choice.module is net
    report = audit.last_report
    assert report is not None and report.structure.final_layer in _canonical_names(entry, entry.final_layer), (
        f"{name}: expected the head {entry.final_layer}, got {None if report is None else report.structure.final_layer}")
    assert report.n is not None, "the final audit ran with the training data"
    assert report.probes["vandal"].zeroed > 0, "the probe ran on the audit's copy"
    assert any(p.abs().sum() > 0 for p in net.parameters()), "the probe's zeroing reached the user's network"
    assert (tmp_path / "audit" / "report.json").exists()
    _assert_runs(entry, net, shape)


# ------------------------------------------------------------------------------------------ pruning
class _WatchedPrune(PruneAtInit):
    """PruneAtInit that keeps the network's snapshot from just before its ``setup`` and just after."""

    def __init__(self, watched_net: nn.Module, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.watched_net = watched_net
        self.before: dict | None = None
        self.after: dict | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.before = _snapshot(self.watched_net)
        super().setup(trainer, pl_module, stage)
        self.after = _snapshot(self.watched_net)
        # (effective weight, stored original) of every torch-pruned owner, as attached.
        self.effective = {
            name: (getattr(module, attr).detach().clone(), module._parameters[f"{attr}_orig"].detach().clone())
            for name, module, attr in _owners(self.watched_net)
            if f"{attr}_orig" in module._parameters
        }


def _owners(net: nn.Module):
    for module_name, module in net.named_modules():
        for key in module._buffers:
            if key.endswith("_mask"):
                yield (f"{module_name}." if module_name else "") + key[: -len("_mask")], module, key[: -len("_mask")]


def _owner_attr(name: str) -> tuple[str, str]:
    module, _, attr = name.rpartition(".")
    return module, attr


def _assert_only_masks_added(entry: zoo.ZooEntry, net: nn.Module, callback: _WatchedPrune) -> None:
    before, after, masks = callback.before, callback.after, callback.masks
    owners = {owner for name in masks for owner in _canonical_names(entry, name)}
    renamed = {}
    for name in owners:
        module_name, attr = _owner_attr(name)
        module = net.get_submodule(module_name)
        prefix = f"{module_name}." if module_name else ""
        if f"{attr}_mask" in module._buffers:  # torch.nn.utils.prune: weight -> weight_orig + weight_mask
            renamed[f"{prefix}{attr}"] = f"{prefix}{attr}_orig"
            assert any(isinstance(h, torch_prune.BasePruningMethod) for h in module._forward_pre_hooks.values()), name
        else:  # a parametrized weight: a mask parametrization is appended to its chain
            assert parametrize.is_parametrized(module, attr), f"{name}: no mask attached"
    new_keys = set(after["state"]) - set(before["state"]) - set(renamed.values())
    for key in new_keys:
        assert key.endswith("_mask") or (".parametrizations." in key and key.endswith(".mask")), f"unexpected new key {key}"
    for key, value in before["state"].items():
        now = after["state"][renamed.get(key, key)]
        assert torch.equal(value, now), f"{entry.name}: {key} changed when the masks were attached"
    # The same Parameter objects (a pruned weight is now held as *_orig): optimizers and ties are intact.
    assert sorted(i for _, i, _ in before["parameters"]) == sorted(i for _, i, _ in after["parameters"])
    for a, b in entry.tied:
        (ma, aa), (mb, ab) = _owner_attr(a), _owner_attr(b)
        assert _stored(net.get_submodule(ma), aa) is _stored(net.get_submodule(mb), ab), f"tie {a} = {b} broken"
    # Modules: the same ones, except a mask parametrization appended to a parametrized weight's chain.
    for part in ("classes", "training", "other_hooks"):
        old, new = ({item[0]: item[1:] for item in snap[part]} for snap in (before, after))
        assert {k: new[k] for k in old} == old, f"{entry.name}: {part} changed"
        assert all(".parametrizations." in k for k in set(new) - set(old)), f"{entry.name}: modules added"
    old_hooks, new_hooks = dict(before["forward_pre_hooks"]), dict(after["forward_pre_hooks"])
    for module_name, hooks in old_hooks.items():
        assert new_hooks[module_name][: len(hooks)] == hooks, f"{module_name}: a forward pre-hook was removed"
    for name, (weight, original) in callback.effective.items():
        canonical = next(n for n in masks if name in _canonical_names(entry, n))
        expected = original * masks[canonical].to(original.dtype)
        assert torch.equal(weight, expected), f"{name}: weight != original * mask when attached"


@pytest.mark.parametrize("name", NAMES)
def test_prune_at_init_only_adds_masks_on_every_zoo_network(name, tmp_path):
    entry = zoo.entry(name)
    net = entry.build()
    shape = _output_shape(entry)
    lit = ZooModule(net, entry.output_transform)
    callback = _WatchedPrune(net, "snip", 0.5, output_transform=entry.output_transform)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _fit(tmp_path, lit, [callback], entry)

    assert callback.masks is not None and callback._choice.name == "net"
    total = callback.masks.num_total
    assert callback.masks.num_kept == round(0.5 * total), f"{name}: kept {callback.masks.num_kept} of {total}"
    _assert_only_masks_added(entry, net, callback)
    for weight_name, mask in callback.masks.items():  # training kept the pruned entries at zero
        module_name, attr = _owner_attr(weight_name)
        assert not bool(getattr(net.get_submodule(module_name), attr)[~mask].any()), weight_name
    _assert_runs(entry, net, shape)


def _attached_masks(net: nn.Module) -> dict[int, torch.Tensor]:
    """Every attached mask, keyed by the masked Parameter (a tied tensor once), read from torch's own state."""
    masks = {}
    for module in net.modules():
        for key, buffer in module._buffers.items():
            if key.endswith("_mask"):
                masks[id(module._parameters[key[: -len("_mask")] + "_orig"])] = buffer.bool()
        if parametrize.is_parametrized(module):
            for attr, chain in module.parametrizations.items():
                held = [p.mask for p in chain if isinstance(getattr(p, "mask", None), torch.Tensor)]
                if held:
                    masks[id(_stored(module, attr))] = held[0].bool()
    return masks


@pytest.mark.parametrize("name", ["tied_lm", "hf_gpt2_lm", "parametrized"])
def test_gradual_pruning_keeps_ties_and_parametrizations(name, tmp_path):
    """Masks attached in setup and shrunk in place: the tie is one Parameter throughout, both owners zeroed."""
    entry = zoo.entry(name)
    net = entry.build()
    shape = _output_shape(entry)
    callback = GradualMagnitudePruning(GradualSchedule(final_sparsity=0.6, start_step=0, end_step=1, frequency=1))
    before = {n: id(p) for n, p in net.named_parameters(remove_duplicate=False)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _fit(tmp_path, ZooModule(net, entry.output_transform), [callback], entry)
    assert sorted(before.values()) == sorted(id(p) for _, p in net.named_parameters(remove_duplicate=False))
    for a, b in entry.tied:
        (ma, aa), (mb, ab) = _owner_attr(a), _owner_attr(b)
        wa, wb = getattr(net.get_submodule(ma), aa), getattr(net.get_submodule(mb), ab)
        assert _stored(net.get_submodule(ma), aa) is _stored(net.get_submodule(mb), ab), f"tie {a} = {b} broken"
        assert torch.equal(wa == 0, wb == 0), "both owners of a tied tensor see the same zeros"
    masks = _attached_masks(net)
    kept, total = sum(int(m.sum()) for m in masks.values()), sum(m.numel() for m in masks.values())
    assert kept == round(0.4 * total), f"{name}: kept {kept} of {total} at sparsity 0.6"
    _assert_runs(entry, net, shape)
