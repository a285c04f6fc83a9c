"""Wall time of every pruning method on ResNet-20 with CIFAR-10 shapes, and NTK-SAP vs the reference approach.

    .venv/bin/python benchmarks/bench_pruning.py            # full: NTK-SAP T=20 R=5, SynFlow T=100
    .venv/bin/python benchmarks/bench_pruning.py --quick    # a smoke run in well under a minute

Per thread count (torch.set_num_threads) it times prune() for every method at sparsity 0.9 with a prune
set of 100 samples (3x32x32, 10 classes; NTK-SAP uses only their shape). Then, in the same run and at the
same settings, it times NTK-SAP against a re-implementation of the reference code's approach to the same
computation (YiteWang/NTK-SAP): masks as parametrizations with a gradient, a deep copy of the model per
scoring call, two separate forward passes per noise batch through the BatchNorm layers, NCHW inputs.
Both draw the same random numbers in the same order; the script prints the speed ratio (median of
interleaved runs) and how many mask entries agree (float rounding flips near-ties, see the README).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn
from torch.nn.utils import parametrize

from prune_landscape import models, prunable_parameters
from prune_landscape.pruning import allocate, exponential_densities, num_to_keep, prune


class _Mask(nn.Module):
    """Reference-style masked weight: ``weight = original * mask`` with the mask a leaf that takes gradients."""

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
            module.parametrizations.weight[0].mask = mask  # share the one mask tensor, as the reference does
        else:
            parametrize.register_parametrization(module, "weight", _Mask(mask), unsafe=True)


def _reference_init(net: nn.Module, generator: torch.Generator) -> None:
    # The same draws, in the same order, as models.init_kaiming_normal (the reference's _initialize_weights).
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                original = module.parametrizations.weight.original
                std = (2.0 / original[0].numel()) ** 0.5
                original.copy_(torch.randn(original.shape, generator=generator) * std)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()


def reference_ntk_sap(model: nn.Module, sparsity: float, shapes: list[tuple], iterations: int, repeats: int, seed: int):
    """The reference code's approach to the NTK-SAP computation (own re-implementation, for timing)."""
    net = copy.deepcopy(model)
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
    current = {n: torch.ones_like(m, dtype=torch.bool) for n, m in zip(names, masks)}
    target = num_to_keep(1 - sparsity, total)
    for step, density in enumerate(exponential_densities(1.0, 1 - sparsity, iterations), start=1):
        for mask in masks:
            mask.requires_grad_(True)
            mask.grad = None
        net_mod = copy.deepcopy(net)  # a deep copy per scoring call
        _attach(net_mod, masks)
        mod_norms = [m for m in net_mod.modules() if isinstance(m, nn.BatchNorm2d)]
        for _ in range(repeats):
            for shape in shapes:
                _reference_init(net, generator)
                z = torch.randn(shape, generator=generator)
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
                        noise = torch.randn(original.shape, generator=generator)
                        module_mod.parametrizations.weight.original.copy_(original + 0.01 * noise)
                    for norm, norm_mod in zip(norms, mod_norms):
                        norm_mod.running_mean.copy_(norm.running_mean)
                        norm_mod.running_var.copy_(norm.running_var)
                out_mod = net_mod(z)  # the second, separate forward pass
                (torch.norm(out - out_mod, dim=-1) ** 2).sum().backward()
        scores = {n: (m.grad * (m != 0)).abs() for n, m in zip(names, masks)}
        keep = target if step == iterations else num_to_keep(density, total)
        current = allocate(scores, current, keep)
        with torch.no_grad():
            for n, mask in zip(names, masks):
                mask.requires_grad_(False)
                mask.copy_(current[n].float())
    return current


def _time(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny schedules: a smoke run")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--compare-iterations", type=int, default=4, help="NTK-SAP iterations for the A/B (R as below)")
    parser.add_argument("--compare-runs", type=int, default=3, help="interleaved A/B runs; medians are reported")
    args = parser.parse_args()
    ntk = {"iterations": 2, "repeats": 1} if args.quick else {"iterations": 20, "repeats": 5}
    synflow_iterations = 5 if args.quick else 100
    compare_iterations = 1 if args.quick else args.compare_iterations
    args.compare_runs = 1 if args.quick else args.compare_runs
    samples, sparsity = 100, 0.9
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(samples, 3, 32, 32, generator=g), torch.randint(0, 10, (samples,), generator=g))
    net = models.resnet20()
    runs = {
        "magnitude": lambda: prune(net, "magnitude", sparsity),
        "random": lambda: prune(net, "random", sparsity),
        "snip": lambda: prune(net, "snip", sparsity, data),
        "grasp": lambda: prune(net, "grasp", sparsity, data),
        f"synflow (T={synflow_iterations})": lambda: prune(net, "synflow", sparsity, data, iterations=synflow_iterations),
        f"ntk_sap (T={ntk['iterations']}, R={ntk['repeats']})": lambda: prune(net, "ntk_sap", sparsity, data, **ntk),
    }
    print(f"ResNet-20, CIFAR-10 shapes (3x32x32, 10 classes), {samples} samples, sparsity {sparsity}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available by default\n")
    table: dict[str, dict[int, float]] = {}
    comparison = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, run in runs.items():
            table.setdefault(name, {})[threads] = _time(run)[0]
            print(f"  [{threads} thread(s)] {name}: {table[name][threads]:.2f}s", flush=True)
        repeats = ntk["repeats"]
        # Interleaved, median of 3: the machine is a shared VM whose speed drifts by 10-20 % minute to minute.
        ours_times, ref_times = [], []
        for _ in range(args.compare_runs):
            ours_s, ours = _time(lambda: prune(net, "ntk_sap", sparsity, data, iterations=compare_iterations, repeats=repeats))
            ref_s, ref = _time(
                lambda: reference_ntk_sap(net, sparsity, [tuple(data[0].shape)], compare_iterations, repeats, seed=0)
            )
            ours_times.append(ours_s)
            ref_times.append(ref_s)
        ours_s, ref_s = statistics.median(ours_times), statistics.median(ref_times)
        agreement = sum(int((ours[n] == ref[n]).sum()) for n in ours) / ours.num_total
        comparison.append((threads, ours_s, ref_s, agreement))
        print(f"  [{threads} thread(s)] NTK-SAP A/B: ours {ours_s:.2f}s, reference {ref_s:.2f}s", flush=True)
    print()
    header = "method".ljust(28) + "".join(f"{t} thread(s)".rjust(14) for t in args.threads)
    print(header)
    for name, by_threads in table.items():
        print(name.ljust(28) + "".join(f"{by_threads[t]:13.2f}s" for t in args.threads))
    print(f"\nNTK-SAP vs reference approach (T={compare_iterations}, R={ntk['repeats']}, same draws, same run):")
    for threads, ours_s, ref_s, agreement in comparison:
        print(
            f"  {threads} thread(s): ours {ours_s:.2f}s, reference {ref_s:.2f}s, ratio {ref_s / ours_s:.2f}x "
            f"(target >= 2x), mask agreement {agreement:.4%}"
        )


if __name__ == "__main__":
    main()
