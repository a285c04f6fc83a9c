"""SynFlow and NTK-SAP cost on ImageNet-size models (torchvision ResNet-50 and ViT-B/16, 3x224x224, 1000 classes).

    python benchmarks/bench_pruning_scale.py                    # CPU, a few iterations, extrapolated
    python benchmarks/bench_pruning_scale.py --device cuda      # on a GPU

Full schedules are too long to run on a CPU, so each method runs a few iterations and the script
extrapolates, saying so: SynFlow's cost is (setup) + T x (one iteration), measured as the difference
between runs of ``--synflow-iterations`` and 1 iteration; NTK-SAP's is one scoring pass over
``--ntk-samples`` noise samples (T=1, R=1), scaled linearly to the default prune set (1,024 noise samples,
the cap for 1000-class heads) x R=5 x T=20. Wall and process CPU seconds are printed.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torchvision
from torch import nn

from prune_landscape.pruning import prune


def _vit_init(model: nn.Module, generator: torch.Generator) -> None:
    """Re-draw a ViT from torchvision's init distributions (NTK-SAP re-initialises before every batch)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=generator) * (1.0 / fan_in) ** 0.5)
            elif "pos_embedding" in name or "class_token" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--models", nargs="+", default=["resnet50", "vit_b_16"])
    parser.add_argument("--synflow-iterations", type=int, default=3)
    parser.add_argument("--ntk-samples", type=int, default=8)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} thread(s), "
          f"load average {os.getloadavg()[0]:.1f}")
    for name in args.models:
        torch.manual_seed(0)
        net = getattr(torchvision.models, name)(weights=None, num_classes=1000).to(device)
        if name.startswith("vit"):
            # torchvision zero-initialises the ViT head, which makes SynFlow's flow R exactly 0 (every score 0).
            with torch.no_grad():
                net.heads.head.weight.normal_(0.0, net.heads.head.in_features ** -0.5)
        weights = sum(p.numel() for p in net.parameters() if p.dim() > 1)
        print(f"\n{name}: {weights / 1e6:.1f} M prunable weights")
        shape = (3, 224, 224)
        one = _timed(lambda: prune(net, "synflow", 0.9, input_shape=shape, iterations=1, progress=False))
        many = _timed(lambda: prune(net, "synflow", 0.9, input_shape=shape, iterations=args.synflow_iterations, progress=False))
        per_wall = (many[0] - one[0]) / (args.synflow_iterations - 1)
        per_cpu = (many[1] - one[1]) / (args.synflow_iterations - 1)
        setup = one[0] - per_wall
        print(f"  synflow: {per_wall:.2f} s wall ({per_cpu:.2f} s CPU) per iteration, setup {setup:.1f} s; "
              f"T=100 extrapolated: {setup + 100 * per_wall:.0f} s wall")
        extra = {"init_fn": _vit_init} if name.startswith("vit") else {}
        ntk = _timed(lambda: prune(net, "ntk_sap", 0.9, input_shape=shape, prune_samples=args.ntk_samples,
                                   batch_size=args.ntk_samples, iterations=1, repeats=1, progress=False, **extra))
        per_sample = ntk[0] / args.ntk_samples
        print(f"  ntk_sap: {ntk[0]:.1f} s wall ({ntk[1]:.1f} s CPU) for one pass over {args.ntk_samples} samples; "
              f"default (1,024 samples, R=5, T=20) extrapolated: {per_sample * 1024 * 5 * 20 / 3600:.1f} h wall")


if __name__ == "__main__":
    main()
