"""A 21x21 loss surface: prune_landscape (functional_call, vmapped or not) vs loss-landscapes 3.0.6 vs a naive loop.

One run per case, same model (trained, pruned to 80 % with torch.nn.utils.prune: MLP 64-128-128-10 on all
1,797 of scikit-learn's digits; MLP 64-32-10 on 256; LeNet-5 on 512 digits upsampled to 28x28; ResNet-20
on 128 digits upsampled to 3x16x16), same data, same grid (441 points, full data per point), cross-entropy.
The naive loop writes each grid point into the model and runs one forward pass; loss-landscapes'
`random_plane` does the same through its own wrappers. Timings: median of 3 interleaved repeats.

Run: .venv/bin/python benchmarks/bench_surface.py   (needs `.venv/bin/pip install loss-landscapes==3.0.6`)
"""

from __future__ import annotations

import math
import statistics
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from prune_landscape import models
from prune_landscape.probes import filter_normalized_direction, loss_surface
from prune_landscape.probes.kept import KeptParameters
from prune_landscape.modelcopy import copy_model
from prune_landscape.probes.restarts import budget_matched_masks
from prune_landscape.training import train

STEPS = 21


def setup(widths):
    """A pruned MLP (``widths``) trained on digits; ``widths == "lenet"``: LeNet-5 on digits upsampled to 28x28."""
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    if widths == "lenet":
        x = F.interpolate(x.reshape(-1, 1, 8, 8), size=28, mode="bilinear", align_corners=False)
        net = models.lenet()
    elif widths == "resnet20":
        x = F.interpolate(x.reshape(-1, 1, 8, 8), size=16, mode="bilinear", align_corners=False).expand(-1, 3, -1, -1).contiguous()
        net = models.resnet20()
    else:
        net = models.mlp(widths)
    net.init_weights(torch.Generator().manual_seed(0))
    budget_matched_masks(net, 0.8, seed=0).apply_to(net)
    train(net, (x, y), epochs=5 if isinstance(widths, list) else 2, lr=0.05, batch_size=64, seed=0)
    return net.eval(), x, y


def ours(net, x, y):
    start = time.perf_counter()
    surface = loss_surface(net, (x, y), steps=STEPS, dims=2)
    return time.perf_counter() - start, surface


def naive(net, x, y):
    """Per-point loop: write theta + a d1 + b d2 into a copy, one forward pass over all data."""
    start = time.perf_counter()
    kept = KeptParameters.from_model(net)
    g = torch.Generator().manual_seed(0)
    d1, d2 = filter_normalized_direction(kept, g), filter_normalized_direction(kept, g)
    model = copy_model(net).eval()
    params = dict(model.named_parameters())
    axis = torch.linspace(-1, 1, STEPS)
    losses = torch.empty(STEPS, STEPS)
    with torch.no_grad():
        for i, a in enumerate(axis):
            for j, b in enumerate(axis):
                for name, p in params.items():
                    p.copy_(kept.values[name] + a * d1[name] + b * d2[name])
                losses[i, j] = F.cross_entropy(model(x), y)
    return time.perf_counter() - start, losses


def landscapes(net, x, y):
    import loss_landscapes
    import loss_landscapes.metrics

    model = copy_model(net).eval()
    start = time.perf_counter()
    metric = loss_landscapes.metrics.Loss(torch.nn.CrossEntropyLoss(), x, y)
    values = loss_landscapes.random_plane(model, metric, distance=1, steps=STEPS, normalization="filter",
                                          deepcopy_model=True)
    return time.perf_counter() - start, values


def compare(widths, samples) -> None:
    net, x, y = setup(widths)
    x, y = x[:samples], y[:samples]
    name = "MLP " + "-".join(map(str, widths)) if isinstance(widths, list) else {"lenet": "LeNet-5", "resnet20": "ResNet-20"}[widths]
    print(f"model: pruned {name} (density 0.2), digits {tuple(x.shape)}, grid {STEPS}x{STEPS}")
    times = {"ours": [], "naive": [], "loss-landscapes": []}
    for _ in range(3):
        for method, fn in (("ours", ours), ("naive", naive), ("loss-landscapes", landscapes)):
            if times[method] and math.isnan(times[method][0]):
                continue
            try:
                t, result = fn(net, x, y)
            except Exception as error:  # loss-landscapes divides by zero on pruned BatchNorm nets
                times[method].append(math.nan)
                print(f"  {method} failed: {type(error).__name__}: {error}")
                continue
            times[method].append(t)
            if method == "ours":
                surface = result
            if method == "naive":
                reference = result
    agreement = float((torch.tensor(surface.losses) - reference).abs().max())
    median = {k: statistics.median(v) for k, v in times.items()}
    for method, t in median.items():
        print(f"  {method:<18}{t:>8.3f} s")
    print(f"  max |ours - naive| on the same directions: {agreement:.2e}")
    print(f"  ratio: {median['loss-landscapes'] / median['ours']:.2f}x faster than loss-landscapes, "
          f"{median['naive'] / median['ours']:.2f}x faster than the naive loop")


def compare_cifar_slice() -> None:
    """A 21-point 1-D slice on ResNet-20 at CIFAR-10 size (512 samples): ours vs the naive loop, median of 3."""
    net = models.resnet20()
    net.init_weights(torch.Generator().manual_seed(0))
    budget_matched_masks(net, 0.8, seed=0).apply_to(net)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(512, 3, 32, 32, generator=g), torch.randint(0, 10, (512,), generator=g)
    net.train()
    with torch.no_grad():
        net(x)  # BatchNorm statistics of this data
    net.eval()

    def naive_slice():
        start = time.perf_counter()
        kept = KeptParameters.from_model(net)
        direction = filter_normalized_direction(kept, torch.Generator().manual_seed(0))
        model = copy_model(net).eval()
        params = dict(model.named_parameters())
        losses = []
        with torch.no_grad():
            for a in torch.linspace(-1, 1, STEPS):
                for name, p in params.items():
                    p.copy_(kept.values[name] + a * direction[name])
                losses.append(float(F.cross_entropy(model(x), y)))
        return time.perf_counter() - start, losses

    times = {"ours": [], "naive": []}
    for _ in range(3):
        start = time.perf_counter()
        ours_slice = loss_surface(net, (x, y), steps=STEPS, dims=1)
        times["ours"].append(time.perf_counter() - start)
        t, reference = naive_slice()
        times["naive"].append(t)
    median = {k: statistics.median(v) for k, v in times.items()}
    agreement = max(abs(a - b) for a, b in zip(ours_slice.losses, reference))
    print(f"model: pruned ResNet-20 (density 0.2), random {tuple(x.shape)}, 1-D slice of {STEPS} points")
    for method, t in median.items():
        print(f"  {method:<18}{t:>8.3f} s")
    print(f"  max |ours - naive|: {agreement:.2e}")
    print(f"  ratio: {median['naive'] / median['ours']:.2f}x faster than the naive loop")


def main() -> None:
    # The benchmark machine is shared (2 cores, other jobs): one thread for all three methods is fairer
    # and far more stable than letting three thread pools fight for the cores.
    torch.set_num_threads(int(__import__("os").environ.get("BENCH_THREADS", "1")))
    torch.manual_seed(0)
    compare([64, 128, 128, 10], 1797)  # compute-bound: every point is a full forward over the data
    compare([64, 32, 10], 256)  # overhead-bound: a small net on a 256-sample probe set
    compare("lenet", 512)  # conv net, MNIST shapes: vmap would make grouped convs; "auto" picks the loop
    compare("resnet20", 128)  # BatchNorm conv net at 16x16: folded BatchNorm, channels-last
    compare_cifar_slice()  # the same at CIFAR size, where the folded channels-last forward pays most


if __name__ == "__main__":
    main()
