"""analyze_structure on torchvision ResNet-50 with a random 90 % global mask (target: under 2 s on 2 CPU cores).

Run: .venv/bin/python benchmarks/bench_structure.py [--size 224] [--repeats 3]
Prints the wall time of one connectivity pass (forward + backward in float64) and, as the anchor measured
in the same run, one plain float32 forward pass of the same model at the same input size.
"""

from __future__ import annotations

import argparse
import time

import torch

from prune_landscape import MaskSet, analyze_structure, models, prunable_parameters


def random_global_mask(model: torch.nn.Module, density: float, seed: int) -> MaskSet:
    generator = torch.Generator().manual_seed(seed)
    names = prunable_parameters(model)
    shapes = [model.get_parameter(n).shape for n in names]
    sizes = [s.numel() for s in shapes]
    total = sum(sizes)
    flat = torch.zeros(total, dtype=torch.bool)
    flat[torch.randperm(total, generator=generator)[: round(density * total)]] = True
    return MaskSet({n: part.view(shape) for n, part, shape in zip(names, flat.split(sizes), shapes)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = models.resnet50()
    masks = random_global_mask(model, density=0.1, seed=0)
    example = torch.zeros(1, 3, args.size, args.size)
    analyze_structure(model, example, masks)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        structure = analyze_structure(model, example, masks)
        times.append(time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        start = time.perf_counter()
        model(example)
        forward = time.perf_counter() - start
    best = min(times)
    print(f"threads={torch.get_num_threads()} input=1x3x{args.size}x{args.size} masks density={masks.density:.4f}")
    print(f"analyze_structure ResNet-50: best {best:.3f} s of {args.repeats} (median {sorted(times)[len(times) // 2]:.3f} s)")
    print(f"anchor, one float32 forward: {forward:.3f} s  -> ratio {best / forward:.1f}x")
    print(f"dead units {structure.total_dead_units}, collapsed {len(structure.collapsed_layers)}, "
          f"final layer dense={structure.final_layer_dense}, fan-in min {structure.fan_in_min}")
    print("target (< 2 s):", "met" if best < 2.0 else "MISSED")


if __name__ == "__main__":
    main()
