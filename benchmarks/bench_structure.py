"""analyze_structure against a plain forward pass of the same model in the same run (issue #11: <= 5x).

Models (random weights, random 90 % global mask over the prunable set):

* torchvision ViT-B/16 at 1x3x224x224 (86 M parameters, float32 passes);
* a GPT-2-small-sized HuggingFace config (12 layers, 768 wide, 50,257-token tied vocabulary; 124 M
  parameters), one sequence of ``--tokens`` token ids, logits as the output;
* torchvision ResNet-50 at 1x3x224x224 (the earlier anchor).

Run: .venv/bin/python benchmarks/bench_structure.py [--repeats 3] [--tokens 128] [--models vit,gpt2,resnet50]
[--threads N] (default: torch's own; ``--threads 1`` is the steadier on a machine shared with other work)
Prints, per model, the best of ``--repeats`` analyses and the best of ``--repeats`` plain float32
forwards (no_grad, eval), measured alternately, and their ratio in wall time and in CPU time of all
threads (the steadier of the two on a shared machine).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch

from prune_landscape import MaskSet, analyze_structure
from prune_landscape.layers import current_tensor, find_parameter, prunable_parameters


def random_global_mask(model: torch.nn.Module, density: float, seed: int) -> MaskSet:
    generator = torch.Generator().manual_seed(seed)
    names = prunable_parameters(model)
    shapes = [current_tensor(*find_parameter(model, n)).shape for n in names]
    sizes = [s.numel() for s in shapes]
    total = sum(sizes)
    flat = torch.zeros(total, dtype=torch.bool)
    flat[torch.randperm(total, generator=generator)[: round(density * total)]] = True
    return MaskSet({n: part.view(shape) for n, part, shape in zip(names, flat.split(sizes), shapes)})


def _vit() -> tuple[torch.nn.Module, Any, Callable | None]:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.vit_b_16().eval(), torch.randn(1, 3, 224, 224), None


def _gpt2(tokens: int) -> tuple[torch.nn.Module, Any, Callable | None]:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
    return GPT2LMHeadModel(config).eval(), torch.randint(0, 50257, (1, tokens)), lambda out: out.logits


def _resnet50() -> tuple[torch.nn.Module, Any, Callable | None]:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet50().eval(), torch.randn(1, 3, 224, 224), None


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of all threads, result): on a shared machine CPU time is the steadier."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128, help="sequence length for GPT-2")
    parser.add_argument("--models", default="vit,gpt2,resnet50")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    builders = {"vit": ("ViT-B/16 224", _vit), "gpt2": (f"GPT-2 small, {args.tokens} tokens", lambda: _gpt2(args.tokens)),
                "resnet50": ("ResNet-50 224", _resnet50)}
    print(f"threads={torch.get_num_threads()}")
    print("| model | parameters | plain forward | analyze_structure (random 90 %) | wall ratio | CPU-time ratio | target <= 5x |")
    print("|---|---|---|---|---|---|---|")
    for key in args.models.split(","):
        label, build = builders[key]
        model, example, transform = build()
        masks = random_global_mask(model, density=0.1, seed=0)
        with torch.no_grad():
            model(example)  # warm-up
        analyze_structure(model, example, masks, output_transform=transform)  # warm-up
        forwards, analyses, forwards_cpu, analyses_cpu = [], [], [], []
        for _ in range(args.repeats):  # interleaved, so a busy machine slows both alike
            with torch.no_grad():
                wall, cpu, _ = _timed(lambda: model(example))
            forwards.append(wall)
            forwards_cpu.append(cpu)
            wall, cpu, structure = _timed(lambda: analyze_structure(model, example, masks, output_transform=transform))
            analyses.append(wall)
            analyses_cpu.append(cpu)
        forward, analysis = min(forwards), min(analyses)
        ratio = analysis / forward
        ratio_cpu = min(analyses_cpu) / min(forwards_cpu)
        count = sum(p.numel() for p in model.parameters())
        print(f"| {label} | {count / 1e6:.0f} M | {forward:.3f} s | {analysis:.3f} s ({structure.precision}, "
              f"{structure.total_dead_units} dead, {structure.total_unknown_units} UNKNOWN, final {structure.final_layer}) "
              f"| {ratio:.1f}x | {ratio_cpu:.1f}x | {'met' if min(ratio, ratio_cpu) <= 5 else 'MISSED'} |")


if __name__ == "__main__":
    main()
