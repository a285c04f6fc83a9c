"""Pruning callbacks in real Trainer.fit runs: at init, gradual (Zhu & Gupta), IMP with rewinding, and resume
from a checkpoint (masks bit for bit, no revived weight, the schedule continues)."""

import copy
import io
import re

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from prune_landscape import MaskSet, models
from prune_landscape.integrations.callbacks import GradualMagnitudePruning, IterativeMagnitudePruning, LandscapeAudit, PruneAtInit
from prune_landscape.integrations.lit import LitClassifier
from prune_landscape.pruning import GradualSchedule, IMPSchedule, prune
from prune_landscape.pruning.allocation import FinalLayerMode, FinalLayerPolicy, Scope

N = 6 * 8 + 8 * 3  # prunable weights of mlp([6, 8, 3])


def _data(n=48):
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)), batch_size=16)


def _lit(seed=0):
    torch.manual_seed(seed)
    return LitClassifier(models.mlp([6, 8, 3]), lr=0.05, weight_decay=1e-3)


def _trainer(tmp_path, callbacks, epochs=3, **kwargs):
    return pl.Trainer(
        max_epochs=epochs, callbacks=callbacks, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, enable_checkpointing=kwargs.pop("enable_checkpointing", False), **kwargs,
    )


def _weight(lit, name):
    """The weight the forward pass uses: weight_orig x weight_mask (computed now, never a stale copy)."""
    module = lit.get_submodule(name.rpartition(".")[0])
    return (module.weight_orig * module.weight_mask).detach() if hasattr(module, "weight_mask") else module.weight.detach()


def _effective(lit):
    return {name: _weight(lit, name).clone() for name in ("model.fc1.weight", "model.fc2.weight")}


class _AtTrainStart(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        self.weights = _effective(pl_module)
        self.masks = MaskSet.from_module(pl_module, source="hooks")
        self.optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}


def test_prune_at_init_trains_init_times_mask_and_honours_dense_final_layer(tmp_path):
    lit = _lit()
    initial = copy.deepcopy(lit)
    parameters = dict(lit.named_parameters())
    expected = prune(initial, "magnitude", 0.6, final_layer="dense")  # the core's mask for this init
    start = _AtTrainStart()
    audit = LandscapeAudit()
    _trainer(tmp_path, [PruneAtInit("magnitude", 0.6, final_layer_policy="dense"), audit, start]).fit(lit, _data())

    assert start.masks == expected == MaskSet.from_module(lit, source="hooks")
    assert start.masks.num_kept == round(0.4 * N) and start.masks["model.fc2.weight"].all()
    for name, weight in start.weights.items():  # the run starts from init x mask
        assert torch.equal(weight, initial.get_parameter(name) * expected[name])
    # torch.nn.utils.prune keeps the Parameter objects: the optimizer trains the original tensors.
    assert id(parameters["model.fc1.weight"]) in start.optimized and lit.model.fc1.weight_orig is parameters["model.fc1.weight"]
    for name, weight in _effective(lit).items():
        assert torch.all(weight[~expected[name]] == 0) and not torch.equal(weight, start.weights[name])
    assert audit.records[0].metrics["audit/final_layer/density"] == 1.0
    assert audit.records[0].density == pytest.approx(round(0.4 * N) / N)


class _EveryStep(pl.Callback):
    def __init__(self):
        self.masks = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.masks.append((trainer.global_step, MaskSet.from_module(pl_module, source="hooks")))


def test_gradual_magnitude_follows_the_cubic_schedule_and_masks_only_shrink(tmp_path):
    schedule = GradualSchedule(final_sparsity=0.75, start_step=1, end_step=7, frequency=2)
    steps = _EveryStep()
    audit = LandscapeAudit()
    gradual = GradualMagnitudePruning(schedule)
    lit = _lit()
    _trainer(tmp_path, [gradual, steps, audit]).fit(lit, _data())  # 3 batches x 3 epochs = steps 0..8

    updates = [1, 3, 5, 7]
    for step, masks in steps.masks:
        last = max([u for u in updates if u <= step], default=None)
        sparsity = 0.0 if last is None else schedule.sparsity_at(last)
        assert masks.num_kept == N - round(sparsity * N), step
    for (_, before), (_, after) in zip(steps.masks, steps.masks[1:]):
        assert all(torch.all(after[k] <= before[k]) for k in before)  # never revived
    assert steps.masks[-1][1].num_kept == round(0.25 * N)
    assert gradual.last_update_step == 7
    # The audit saw the dense start and every update that changed the mask (s(1) = 0 changes nothing).
    changed = [step for (step, masks), (_, previous) in zip(steps.masks[1:], steps.masks) if masks != previous]
    assert changed == [3, 5, 7]
    records = [r for r in audit.records if r.trigger != "train_end"]
    assert [r.step for r in records] == [0, *changed]
    assert [r.density for r in records] == [m.density for s, m in steps.masks if s in (0, *changed)]


class _RoundStart(pl.Callback):
    def __init__(self):
        self.seen = []

    def on_train_epoch_start(self, trainer, pl_module):
        orig = {n: pl_module.get_submodule(n.rpartition(".")[0]).weight_orig.detach().clone() for n in ("model.fc1.weight", "model.fc2.weight")}
        self.seen.append((MaskSet.from_module(pl_module, source="hooks"), orig, len(trainer.optimizers[0].state)))


def test_imp_prunes_twenty_percent_of_the_remaining_and_rewinds_to_step_k(tmp_path):
    lit = _lit()
    initial = {n: p.detach().clone() for n, p in lit.named_parameters()}
    rounds = _RoundStart()
    imp = IterativeMagnitudePruning(IMPSchedule(rounds=2, rewind_step=0), epochs_per_round=1)
    _trainer(tmp_path, [imp, rounds]).fit(lit, _data())

    densities = [masks.num_kept for masks, _, _ in rounds.seen]
    assert densities == [N, round(0.8 * N), round(0.64 * N)]
    for (before, _, _), (after, _, _) in zip(rounds.seen, rounds.seen[1:]):
        assert all(torch.all(after[k] <= before[k]) for k in before)
    for masks, orig, optimizer_entries in rounds.seen[1:]:
        # Rewound to the weights at step 0 (the init), with a fresh optimizer state.
        assert all(torch.equal(orig[name], initial[name]) for name in orig)
        assert optimizer_entries == 0
    assert imp.round == 2


def test_resume_restores_masks_bit_for_bit_and_continues_the_schedule(tmp_path):
    def callbacks():
        return [GradualMagnitudePruning(GradualSchedule(final_sparsity=0.8, start_step=0, end_step=8, frequency=2)), LandscapeAudit()]

    # Uninterrupted reference run.
    full = _lit()
    _trainer(tmp_path / "full", callbacks()).fit(full, _data())
    reference = MaskSet.from_module(full, source="hooks")

    # Stopped after one epoch (after two mask updates), then resumed into a freshly initialised module.
    first = _lit()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _trainer(tmp_path / "a", [*callbacks(), checkpoint], epochs=1, enable_checkpointing=True).fit(first, _data())
    stopped = MaskSet.from_module(first, source="hooks")
    assert stopped.num_kept < N

    resumed = _lit(seed=123)
    start = _AtTrainStart()
    resumed_callbacks = callbacks()
    _trainer(tmp_path / "b", [*resumed_callbacks, start]).fit(resumed, _data(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert start.masks == stopped  # bit for bit
    assert resumed_callbacks[0].last_update_step == 8
    final = MaskSet.from_module(resumed, source="hooks")
    assert final == reference
    for name in final:
        assert torch.all(final[name] <= stopped[name])  # nothing revived
        assert torch.all(_weight(resumed, name)[~final[name]] == 0)
    for name, weight in _effective(resumed).items():
        torch.testing.assert_close(weight, _weight(full, name).detach(), rtol=0, atol=1e-6)
    # The audit's state came back too: its records continue those of the first run.
    assert len(resumed_callbacks[1].records) > 1 and resumed_callbacks[1].records[0].step == 0


def test_resumed_prune_at_init_keeps_the_checkpointed_mask(tmp_path):
    first = _lit()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _trainer(tmp_path, [PruneAtInit("random", 0.5, seed=0), checkpoint], epochs=1, enable_checkpointing=True).fit(first, _data())
    stopped = MaskSet.from_module(first, source="hooks")

    resumed = _lit(seed=5)
    other_seed = PruneAtInit("random", 0.5, seed=7)  # would draw a different mask on a fresh run
    _trainer(tmp_path, [other_seed], epochs=2).fit(resumed, _data(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert MaskSet.from_module(resumed, source="hooks") == stopped == other_seed.masks
    assert prune(_lit(seed=5), "random", 0.5, seed=7) != stopped


def test_invalid_arguments_raise_before_any_work():
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\), got 1.2"):
        PruneAtInit("magnitude", 1.2)
    with pytest.raises(ValueError, match="schedule must have a sparsity_at"):
        GradualMagnitudePruning(object())
    with pytest.raises(ValueError, match="epochs_per_round must be a positive integer, got 0"):
        IterativeMagnitudePruning(IMPSchedule(rounds=2), epochs_per_round=0)


_MAKERS = {
    "PruneAtInit": lambda **kw: PruneAtInit("magnitude", 0.5, **kw),
    "GradualMagnitudePruning": lambda **kw: GradualMagnitudePruning(GradualSchedule(0.5, 0, 4, 2), **kw),
    "IterativeMagnitudePruning": lambda **kw: IterativeMagnitudePruning(IMPSchedule(rounds=1), **kw),
}


@pytest.mark.parametrize("who", sorted(_MAKERS))
def test_final_layer_policy_is_typed_at_construction_and_final_layer_still_works(who):
    make = _MAKERS[who]
    assert make().final_layer_policy == FinalLayerPolicy(FinalLayerMode.PRUNE)
    assert make(final_layer_policy="dense").final_layer_policy == FinalLayerPolicy(FinalLayerMode.DENSE)
    assert make(final_layer_policy="min_density=0.25").final_layer_policy == FinalLayerPolicy(FinalLayerMode.MIN_DENSITY, 0.25)
    assert make(scope="local").scope is Scope.LAYERWISE
    expected = f"{who}: final_layer= is deprecated; use final_layer_policy= (same values)"
    with pytest.warns(DeprecationWarning, match=re.escape(expected)):
        old = make(final_layer=0.3)
    assert old.final_layer_policy == FinalLayerPolicy(FinalLayerMode.MIN_DENSITY, 0.3)
    with pytest.raises(ValueError, match=re.escape(f"{who}: give final_layer_policy= only")):
        make(final_layer_policy="dense", final_layer="dense")


def test_only_the_typed_policy_travels_after_construction(tmp_path, monkeypatch):
    """Parsed once: during fit every FinalLayerPolicy.parse call receives the callback's typed value."""
    callbacks = [PruneAtInit("magnitude", 0.3, final_layer_policy="dense"),
                 GradualMagnitudePruning(GradualSchedule(0.6, 0, 4, 2), final_layer_policy="dense")]
    seen = []
    original = FinalLayerPolicy.parse.__func__

    def spy(cls, value, *args, **kwargs):
        seen.append(value)
        return original(cls, value, *args, **kwargs)

    monkeypatch.setattr(FinalLayerPolicy, "parse", classmethod(spy))
    lit = _lit()
    _trainer(tmp_path, callbacks, epochs=2).fit(lit, _data())
    assert seen and all(isinstance(value, FinalLayerPolicy) for value in seen), [type(v).__name__ for v in seen]
    assert bool(MaskSet.from_module(lit, source="hooks")["model.fc2.weight"].all()), "the dense head was honoured"


# --- IMP rewinds the learning-rate schedule to step k (OpenLTH) ---------------------------------------------

STEPS_PER_ROUND = 6  # 3 batches x 2 epochs


class _StepDecay(LitClassifier):
    """SGD + a per-step scheduler: StepLR halves the LR every 2 steps; OneCycleLR also cycles the momentum."""

    def __init__(self, scheduler="step"):
        torch.manual_seed(0)
        super().__init__(models.mlp([6, 8, 3]), lr=0.05)
        self.scheduler = scheduler

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
        if self.scheduler == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        else:
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=3 * STEPS_PER_ROUND)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class _Plateau(LitClassifier):
    """ReduceLROnPlateau in "max" mode on a falling loss: halves the LR after every epoch but the first."""

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.05)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "train/loss"}}


class _UsedLR(pl.Callback):
    """The (lr, momentum) each optimizer step actually used, in step order; the scheduler state at each epoch start."""

    def __init__(self):
        self.used = []
        self.starts = []

    def on_train_epoch_start(self, trainer, pl_module):  # runs after IMP's hook (callbacks run in list order)
        self.starts.append(copy.deepcopy(trainer.lr_scheduler_configs[0].scheduler.state_dict()))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        group = optimizer.param_groups[0]
        self.used.append((group["lr"], group.get("momentum")))

    def rounds(self, per_round=STEPS_PER_ROUND):
        return [self.used[i:i + per_round] for i in range(0, len(self.used), per_round)]


def _imp_lrs(tmp_path, lit, rewind_step=0, epochs_per_round=2, **options):
    """Three rounds (dense + 2 prunings) of ``epochs_per_round`` epochs of 3 steps each."""
    used = _UsedLR()
    imp = IterativeMagnitudePruning(IMPSchedule(rounds=2, rewind_step=rewind_step), epochs_per_round=epochs_per_round, **options)
    _trainer(tmp_path, [imp, used], epochs=3 * epochs_per_round).fit(lit, _data())
    assert imp.round == 2 and len(used.used) == 9 * epochs_per_round
    return imp, used


def test_imp_rewinds_the_step_lr_schedule_to_its_start(tmp_path):
    _, used = _imp_lrs(tmp_path, _StepDecay())
    first, *later = used.rounds()
    assert [lr for lr, _ in first] == [0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125]  # decays within a round
    assert all(r == first for r in later)
    assert used.starts[0] == used.starts[2] == used.starts[4]  # the scheduler's own state is rewound too


@pytest.mark.parametrize("rewind_step", [3, 4])  # at an epoch boundary, mid-epoch
def test_imp_rewinds_the_lr_schedule_to_step_k(tmp_path, rewind_step):
    _, used = _imp_lrs(tmp_path, _StepDecay(), rewind_step=rewind_step)
    first, *later = used.rounds()
    expected = [(0.05 * 0.5 ** ((rewind_step + i) // 2), 0.9) for i in range(STEPS_PER_ROUND)]
    for r in later:
        assert r[: STEPS_PER_ROUND - rewind_step] == first[rewind_step:]  # round 0's schedule from step k on
        assert r == expected  # ... and then on as round 0 would have gone on


def test_imp_rewinds_scheduled_momentum_too(tmp_path):
    _, used = _imp_lrs(tmp_path, _StepDecay("onecycle"))
    first, *later = used.rounds()
    assert len(set(first)) == STEPS_PER_ROUND and len({m for _, m in first}) > 1  # lr and momentum both move
    assert all(r == first for r in later)


def test_imp_rewinds_a_plateau_scheduler_stepped_after_the_round_ends(tmp_path):
    # Lightning steps ReduceLROnPlateau after on_train_epoch_end, i.e. after the rewind: that step must not
    # leak into the next round (IMP restores once more at the next epoch start).
    torch.manual_seed(0)
    _, used = _imp_lrs(tmp_path, _Plateau(models.mlp([6, 8, 3]), lr=0.05), epochs_per_round=3)
    first, *later = used.rounds(per_round=9)
    assert [lr for lr, _ in first] == [0.05] * 6 + [0.025] * 3
    assert all(r == first for r in later)
    # Its whole state (best loss, bad-epoch count, ...) starts every round as it started round 0.
    assert used.starts[0] == used.starts[3] == used.starts[6] != used.starts[1]


def test_imp_without_lr_rewind_keeps_the_schedule_running(tmp_path):
    imp, used = _imp_lrs(tmp_path, _StepDecay(), rewind_lr_schedule=False)
    first, *later = used.rounds()
    assert [lr for lr, _ in used.used] == [0.05 * 0.5 ** (s // 2) for s in range(3 * STEPS_PER_ROUND)]
    assert all(r != first for r in later) and imp.rewind_schedule is None


def test_imp_schedule_snapshot_survives_state_dict_round_trip(tmp_path):
    imp, _ = _imp_lrs(tmp_path, _StepDecay(), rewind_step=3)
    buffer = io.BytesIO()
    torch.save(imp.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # as a checkpoint is read back
    assert state["rewind_schedule"]["schedulers"][0]["last_epoch"] == 3  # the scheduler as it was at step k
    assert state["rewind_schedule"]["param_groups"][0][0]["lr"] == 0.025
    assert "params" not in state["rewind_schedule"]["param_groups"][0][0]

    fresh = IterativeMagnitudePruning(IMPSchedule(rounds=2, rewind_step=3), epochs_per_round=2)
    fresh.load_state_dict(state)
    assert fresh.rewind_schedule == imp.rewind_schedule and fresh.round == 2
    assert fresh.state_dict()["schedule_restore_pending"] == imp.state_dict()["schedule_restore_pending"]

    old = IterativeMagnitudePruning(IMPSchedule(rounds=2), epochs_per_round=2)
    old.load_state_dict({"round": 1, "rewind_state": state["rewind_state"]})  # a checkpoint from before the option
    assert old.round == 1 and old.rewind_schedule is None and not old.state_dict()["schedule_restore_pending"]
