"""Pruning wall time on ResNet-20 (CIFAR-10 shapes): every method, then SynFlow and NTK-SAP against the reference.

    python benchmarks/bench_pruning.py                                   # in-repo reference approaches
    python benchmarks/bench_pruning.py --official-repo-synflow PATH --official-repo-ntksap PATH
    python benchmarks/bench_pruning.py --quick                           # a smoke run in about a minute

PATH is a checkout, or a bare git directory, of ganguli-lab/Synaptic-Flow or YiteWang/NTK-SAP
(``--official-repo PATH`` takes either and tells them apart). Their ``Layers``, ``Models``, ``Pruners``,
``Utils`` and ``prune.py`` are extracted to a temporary directory and imported from there, unmodified;
nothing of theirs is stored in this repository. Their ResNet-20 receives the SAME initial weights as
ours (module by module) and the same prune set, and their own ``prune_loop`` runs their pruner.

Timing: ours and the reference run interleaved, ``--runs`` pairs, and the medians are compared (the
machine may be shared: wall time drifts, so the process CPU time is printed too). Fidelity:

- SynFlow is deterministic: masks from the same weights are compared entry by entry (% equal) and by
  IoU of the kept sets, at density 0.1 and 0.02.
- NTK-SAP is random (a fresh network and fresh noise per batch): ours and theirs run ``--seeds`` seeds
  each, and the per-layer density profiles are compared against the seed-to-seed spread.

Without an official checkout the same comparisons run against in-repo re-implementations of the
reference code's approach (module docstrings of :func:`reference_synflow` and :func:`reference_ntk_sap`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types

import torch
from torch import nn
from torch.nn.utils import parametrize

from prune_landscape import models, prunable_parameters
from prune_landscape.pruning import allocate, exponential_densities, num_to_keep, prune

_OFFICIAL_NAMES = ("Layers", "Models", "Pruners", "Utils", "prune")


# ----------------------------------------------------------------------------------------------------------
# Official code: extracted to a temporary directory and imported from there.


def load_official(path: str) -> types.SimpleNamespace:
    """Import an official repository's pruning code from a copy of ``path`` (checkout or bare git dir)."""
    root = tempfile.mkdtemp(prefix="official_pruners_")
    if os.path.isdir(os.path.join(path, "Pruners")):
        for name in ("Layers", "Models", "Pruners", "Utils"):
            shutil.copytree(os.path.join(path, name), os.path.join(root, name))
        shutil.copy(os.path.join(path, "prune.py"), root)
    else:  # a bare git directory (e.g. a mirror): export only the files needed
        archive = subprocess.run(
            ["git", f"--git-dir={path}", "archive", "HEAD", "Layers", "Models", "Pruners", "Utils", "prune.py"],
            check=True, capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", root], input=archive, check=True)
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in _OFFICIAL_NAMES}
    for key in saved:
        del sys.modules[key]
    sys.path.insert(0, root)
    try:
        ns = types.SimpleNamespace(root=root)
        ns.layers = importlib.import_module("Layers.layers")
        ns.resnet = importlib.import_module("Models.lottery_resnet")
        ns.pruners = importlib.import_module("Pruners.pruners")
        ns.generator = importlib.import_module("Utils.generator")
        ns.prune_loop = importlib.import_module("prune").prune_loop
    finally:  # both repositories use the same module names: keep neither in sys.modules
        sys.path.remove(root)
        for key in [k for k in sys.modules if k.split(".")[0] in _OFFICIAL_NAMES]:
            del sys.modules[key]
        sys.modules.update(saved)
    ns.kind = "ntksap" if hasattr(ns.pruners, "NTKSAP") else "synflow"
    return ns


def official_resnet20(ns: types.SimpleNamespace, source: nn.Module, device: torch.device) -> nn.Module:
    """Their ResNet-20 with our network's weights and BatchNorm buffers, module by module."""
    theirs = ns.resnet.resnet20((3, 32, 32), 10)
    kinds = (ns.layers.Conv2d, ns.layers.Linear, ns.layers.BatchNorm2d)
    ours = [m for m in source.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))]
    targets = [m for m in theirs.modules() if isinstance(m, kinds)]
    if len(ours) != len(targets):
        raise RuntimeError(f"ResNet-20 layouts differ: {len(ours)} of our layers vs {len(targets)} of theirs")
    with torch.no_grad():
        for a, b in zip(ours, targets):
            if a.weight.shape != b.weight.shape:
                raise RuntimeError(f"ResNet-20 layouts differ: {tuple(a.weight.shape)} vs {tuple(b.weight.shape)}")
            b.weight.copy_(a.weight)
            if a.bias is not None:
                b.bias.copy_(a.bias)
            if isinstance(a, nn.BatchNorm2d):
                b.running_mean.copy_(a.running_mean)
                b.running_var.copy_(a.running_var)
    return theirs.to(device)


def official_masks(ns: types.SimpleNamespace, model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    masks = [m for m, _ in ns.generator.masked_parameters(model)]
    return {n: m.detach().cpu().bool() for n, m in zip(names, masks)}


def run_official(ns, model, pruner_name, loader, device, density, iterations, train_mode=False, **kwargs):
    pruner = getattr(ns.pruners, pruner_name)(ns.generator.masked_parameters(model), **kwargs)
    with contextlib.redirect_stderr(io.StringIO()):  # their tqdm bar
        ns.prune_loop(model, nn.CrossEntropyLoss(), pruner, loader, device, density, "exponential", "global",
                      iterations, train_mode=train_mode)


# ----------------------------------------------------------------------------------------------------------
# In-repo re-implementations of the reference code's approach (own code, for timing without a checkout).


class _Mask(nn.Module):
    """Reference-style masked weight: ``weight = original * mask`` with the mask a tensor that may take grads."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.mask = mask

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def _masked_modules(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _attach(net: nn.Module, masks: list[torch.Tensor]) -> None:
    for module, mask in zip(_masked_modules(net), masks):
        if parametrize.is_parametrized(module, "weight"):
            module.parametrizations.weight[0].mask = mask
        else:
            parametrize.register_parametrization(module, "weight", _Mask(mask), unsafe=True)


def _threshold_masks(scores: list[torch.Tensor], masks: list[torch.Tensor], density: float) -> None:
    """The reference's global rule: prune the int((1 - d) * N) lowest scores and every score tied with them."""
    flat = torch.cat([s.reshape(-1) for s in scores])
    k = int((1.0 - density) * flat.numel())
    if k >= 1:
        threshold = torch.kthvalue(flat.cpu(), k).values.to(flat.device)
        for score, mask in zip(scores, masks):
            mask.copy_((score > threshold).to(mask.dtype))


def reference_synflow(model: nn.Module, density: float, iterations: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The reference code's approach: masks as parametrizations, |state| and signs flipped in place around one
    float32 forward/backward on an all-ones sample per iteration, gradients on every parameter, threshold masks."""
    net = copy.deepcopy(model).to(device).eval()
    names = prunable_parameters(net)
    masks = [torch.ones_like(m.weight) for m in _masked_modules(net)]
    _attach(net, masks)
    weights = [m.parametrizations.weight.original for m in _masked_modules(net)]
    ones = torch.ones(1, 3, 32, 32, device=device)
    for t in range(1, iterations + 1):
        with torch.no_grad():
            signs = {k: torch.sign(v) for k, v in net.state_dict().items() if v.is_floating_point()}
            for k, v in net.state_dict().items():
                if v.is_floating_point():
                    v.abs_()
        net.zero_grad()
        net(ones).sum().backward()
        scores = [(w.grad * w).detach().abs() for w in weights]
        with torch.no_grad():
            for k, v in net.state_dict().items():
                if k in signs:
                    v.mul_(signs[k])
        _threshold_masks(scores, masks, density ** (t / iterations))
    return {n: m.bool().cpu() for n, m in zip(names, masks)}


def _reference_init(net: nn.Module, generator: torch.Generator) -> None:
    # The same draws, in the same order, as models.init_kaiming_normal.
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                original = module.parametrizations.weight.original
                std = (2.0 / original[0].numel()) ** 0.5
                original.copy_(torch.randn(original.shape, generator=generator).to(original.device) * std)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()


def reference_ntk_sap(model, sparsity, shapes, iterations, repeats, seed, device) -> dict[str, torch.Tensor]:
    """The reference code's approach to NTK-SAP: masks holding gradients, a deep copy per scoring call, a
    BN-statistics pass then two separate eval-mode forwards through the BatchNorm layers, NCHW inputs."""
    net = copy.deepcopy(model).to(device)
    names = prunable_parameters(net)
    masks = [torch.ones_like(m.weight) for m in _masked_modules(net)]
    _attach(net, masks)
    for p in net.parameters():
        p.requires_grad_(False)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.momentum = 1.0
    generator = torch.Generator().manual_seed(seed)
    total = sum(m.numel() for m in masks)
    current = {n: torch.ones(m.shape, dtype=torch.bool) for n, m in zip(names, masks)}
    target = num_to_keep(1 - sparsity, total)
    for step, density in enumerate(exponential_densities(1.0, 1 - sparsity, iterations), start=1):
        for mask in masks:
            mask.requires_grad_(True)
            mask.grad = None
        net_mod = copy.deepcopy(net)
        _attach(net_mod, masks)
        mod_norms = [m for m in net_mod.modules() if isinstance(m, nn.BatchNorm2d)]
        for _ in range(repeats):
            for shape in shapes:
                _reference_init(net, generator)
                z = torch.randn(shape, generator=generator).to(device)
                for norm in norms:
                    norm.reset_running_stats()
                net.train()
                with torch.no_grad():
                    net(z)
                net.eval()
                net_mod.eval()
                out = net(z)
                with torch.no_grad():
                    for module, module_mod in zip(_masked_modules(net), _masked_modules(net_mod)):
                        original = module.parametrizations.weight.original
                        noise = torch.randn(original.shape, generator=generator).to(device)
                        module_mod.parametrizations.weight.original.copy_(original + 0.01 * noise)
                    for norm, norm_mod in zip(norms, mod_norms):
                        norm_mod.running_mean.copy_(norm.running_mean)
                        norm_mod.running_var.copy_(norm.running_var)
                out_mod = net_mod(z)
                (torch.norm(out - out_mod, dim=-1) ** 2).sum().backward()
        scores = {n: (m.grad * (m != 0)).abs().cpu() for n, m in zip(names, masks)}
        keep = target if step == iterations else num_to_keep(density, total)
        current = allocate(scores, current, keep)
        with torch.no_grad():
            for n, mask in zip(names, masks):
                mask.requires_grad_(False)
                mask.copy_(current[n].float())
    return current


# ----------------------------------------------------------------------------------------------------------
# Measurement helpers.


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def interleaved(ours, theirs, runs: int):
    """Run ``ours`` and ``theirs`` alternately ``runs`` times; medians of wall and CPU seconds, last results."""
    rows = {"ours": [], "theirs": []}
    results = {}
    for _ in range(runs):
        for key, fn in (("ours", ours), ("theirs", theirs)):
            wall, cpu, results[key] = _timed(fn)
            rows[key].append((wall, cpu))
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in rows.items()}
    return med, results, rows


def fidelity(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(% equal entries, IoU of the kept sets) of two masks over the same names."""
    fa = torch.cat([a[n].reshape(-1) for n in a])
    fb = torch.cat([b[n].reshape(-1) for n in a])
    equal = float((fa == fb).float().mean())
    iou = float((fa & fb).sum()) / max(1, int((fa | fb).sum()))
    return 100 * equal, iou


def layer_densities(mask: dict[str, torch.Tensor]) -> list[float]:
    return [float(m.float().mean()) for m in mask.values()]


def _report_pair(label: str, med: dict, extra: str = "") -> None:
    (ow, oc), (tw, tc) = med["ours"], med["theirs"]
    print(f"  {label}: ours {ow:.2f} s wall / {oc:.2f} s CPU, reference {tw:.2f} s wall / {tc:.2f} s CPU, "
          f"ratio {tw / ow:.2f}x wall, {tc / oc:.2f}x CPU{extra}", flush=True)


# ----------------------------------------------------------------------------------------------------------


def bench_methods(net, data, sparsity, args, device) -> None:
    ntk = {"iterations": args.ntk_iterations, "repeats": args.ntk_repeats}
    runs = {
        "magnitude": lambda: prune(net, "magnitude", sparsity),
        "random": lambda: prune(net, "random", sparsity),
        "snip": lambda: prune(net, "snip", sparsity, data),
        "grasp": lambda: prune(net, "grasp", sparsity, data),
        f"synflow (T={args.synflow_iterations})": lambda: prune(
            net, "synflow", sparsity, data, iterations=args.synflow_iterations),
        f"ntk_sap (T={ntk['iterations']}, R={ntk['repeats']})": lambda: prune(net, "ntk_sap", sparsity, data, **ntk),
    }
    print("Every method, wall time of prune() (one run each):")
    for name, run in runs.items():
        wall, cpu, _ = _timed(run)
        print(f"  {name:<26} {wall:7.2f} s wall {cpu:7.2f} s CPU", flush=True)


def bench_synflow(net, args, device, official) -> None:
    T = args.synflow_iterations
    print(f"\nSynFlow vs {'official ganguli-lab/Synaptic-Flow code' if official else 'in-repo reference approach'} "
          f"(T={T}, same weights, median of {args.runs} interleaved pairs):")
    names = prunable_parameters(net)
    for density in (0.1, 0.02):
        def ours(density=density):
            return prune(net.to(device), "synflow", 1 - density, input_shape=(3, 32, 32), iterations=T).to_dict()

        if official:
            def theirs(density=density):
                model = official_resnet20(official, net, device)
                loader = [(torch.zeros(1, 3, 32, 32, device=device), torch.zeros(1, dtype=torch.long, device=device))]
                run_official(official, model, "SynFlow", loader, device, density, T)
                return official_masks(official, model, names)
        else:
            def theirs(density=density):
                return reference_synflow(net, density, T, device)

        med, results, _ = interleaved(ours, theirs, args.runs)
        equal, iou = fidelity(results["ours"], results["theirs"])
        unfolded = prune(net, "synflow", 1 - density, input_shape=(3, 32, 32), iterations=T, fold_batchnorm=False).to_dict()
        equal_u, iou_u = fidelity(unfolded, results["theirs"])
        kept = (sum(int(m.sum()) for m in results["ours"].values()), sum(int(m.sum()) for m in results["theirs"].values()))
        _report_pair(f"density {density}", med,
                     f"\n    masks: {equal:.3f} % entries equal, IoU {iou:.4f} (kept {kept[0]} vs {kept[1]}); "
                     f"fold_batchnorm=False: {equal_u:.3f} %, IoU {iou_u:.4f}")


def bench_ntk_sap(net, data, args, device, official) -> None:
    T, R, sparsity = args.ntk_iterations_compare, args.ntk_repeats, 0.9
    print(f"\nNTK-SAP vs {'official YiteWang/NTK-SAP code' if official else 'in-repo reference approach'} "
          f"(T={T}, R={R}, {data[0].shape[0]} noise samples, density {1 - sparsity}, median of {args.runs} pairs):")
    names = prunable_parameters(net)
    for mode in args.ntk_modes:
        if official is None and mode == "eval":
            continue  # the in-repo reference re-implements the scripts' batch-statistics mode only

        def ours(seed=0, mode=mode):
            return prune(net, "ntk_sap", sparsity, data, iterations=T, repeats=R, seed=seed, batchnorm=mode).to_dict()

        if official:
            def theirs(seed=0, mode=mode):
                torch.manual_seed(seed)
                model = official_resnet20(official, net, device)
                loader = [(data[0].to(device), data[1].to(device))]
                # --prune-train-mode True is the scripts' batch-statistics mode.
                run_official(official, model, "NTKSAP", loader, device, 1 - sparsity, T, train_mode=(mode == "batch"),
                             ntksap_epsilon=0.01, ntksap_R=R)
                return official_masks(official, model, names)
        else:
            def theirs(seed=0, mode=mode):
                return reference_ntk_sap(net, sparsity, [tuple(data[0].shape)], T, R, seed, device)

        med, _, _ = interleaved(ours, theirs, args.runs)
        _report_pair(f"batchnorm={mode!r}", med)
        profiles = {"ours": [], "theirs": []}
        for seed in range(args.seeds):
            profiles["ours"].append(layer_densities(ours(seed)))
            profiles["theirs"].append(layer_densities(theirs(seed)))
        ours_mean = [statistics.mean(col) for col in zip(*profiles["ours"])]
        theirs_mean = [statistics.mean(col) for col in zip(*profiles["theirs"])]
        gap = [abs(a - b) for a, b in zip(ours_mean, theirs_mean)]
        # Seed-to-seed spread: the standard error of the difference of two means of `seeds` runs each.
        error = [
            (statistics.variance(a) / len(a) + statistics.variance(b) / len(b)) ** 0.5
            for a, b in zip(zip(*profiles["ours"]), zip(*profiles["theirs"]))
        ]
        z = [g / e if e > 0 else (0.0 if g == 0 else float("inf")) for g, e in zip(gap, error)]
        print(f"    per-layer density over {args.seeds} seeds each: |mean ours - mean reference| median {statistics.median(gap):.4f}, "
              f"max {max(gap):.4f}; in seed-to-seed standard errors: median {statistics.median(z):.2f}, max {max(z):.2f}; "
              f"{sum(v <= 2 for v in z)}/{len(z)} layers within 2 standard errors", flush=True)
        print("    layer densities ours/reference: " + " ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(ours_mean, theirs_mean)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short schedules and one pair: a smoke run")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--official-repo", action="append", default=[], help="either official repository")
    parser.add_argument("--official-repo-synflow", default=None, help="ganguli-lab/Synaptic-Flow checkout or git dir")
    parser.add_argument("--official-repo-ntksap", default=None, help="YiteWang/NTK-SAP checkout or git dir")
    parser.add_argument("--runs", type=int, default=3, help="interleaved pairs per comparison (medians)")
    parser.add_argument("--seeds", type=int, default=3, help="NTK-SAP seeds per side for the density profile")
    parser.add_argument("--synflow-iterations", type=int, default=100)
    parser.add_argument("--ntk-iterations", type=int, default=20, help="T in the all-methods table")
    parser.add_argument("--ntk-iterations-compare", type=int, default=4, help="T in the NTK-SAP comparison")
    parser.add_argument("--ntk-repeats", type=int, default=5)
    parser.add_argument("--ntk-modes", nargs="+", default=["batch", "eval"], choices=["batch", "eval"],
                        help="NTK-SAP BatchNorm modes to compare (official: --prune-train-mode True / not given)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["methods", "synflow", "ntk_sap"])
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seeds, args.synflow_iterations = 1, 2, 10
        args.ntk_iterations, args.ntk_iterations_compare, args.ntk_repeats = 2, 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    official = {"synflow": None, "ntksap": None}
    for path in args.official_repo:
        ns = load_official(path)
        official[ns.kind] = ns
    if args.official_repo_synflow:
        official["synflow"] = load_official(args.official_repo_synflow)
    if args.official_repo_ntksap:
        official["ntksap"] = load_official(args.official_repo_ntksap)

    samples, sparsity = 100, 0.9
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(samples, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (samples,), generator=g).to(device))
    torch.manual_seed(0)
    net = models.resnet20().to(device)
    print(f"ResNet-20, CIFAR-10 shapes (3x32x32, 10 classes), {samples} samples, sparsity {sparsity}, device {device}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); load average {os.getloadavg()[0]:.1f}\n")
    if "methods" not in args.skip:
        bench_methods(net, data, sparsity, args, device)
    if "synflow" not in args.skip:
        bench_synflow(net, args, device, official["synflow"])
    if "ntk_sap" not in args.skip:
        bench_ntk_sap(net, data, args, device, official["ntksap"])


if __name__ == "__main__":
    main()
