"""Figure for the README: sparse vs dense final layer at the same budget (THEORY.md NL-3 vs NL-1).

Teacher-student regression, n = 40 samples, student MLP 30-64-4 pruned to 80 % (random, global), once
with the final layer pruned like the rest (per-output fan-in ~8-13 < n) and once with it dense (fan-in
64 >= n, weights taken from the first layer); 12 paired seeds, full-batch SGD, 300 steps.

Run: .venv/bin/python benchmarks/ab_final_layer.py [output.png]   (default docs/figures/ab_final_layer.png)
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402

from prune_landscape import models  # noqa: E402
from prune_landscape.probes import final_layer_ab  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/figures/ab_final_layer.png")
    x = torch.randn(40, 30, generator=torch.Generator().manual_seed(123))
    teacher = models.mlp([30, 64, 4])
    teacher.init_weights(torch.Generator().manual_seed(7))
    with torch.no_grad():
        y = teacher(x)
    y = y / y.std()
    ab = final_layer_ab(models.mlp([30, 64, 4]), (x, y), sparsity=0.8, seeds=12, epochs=300, lr=0.1,
                        optimizer="sgd", batch_size=None, loss="mse")
    s = ab.scalars()
    print(f"sparse final layer: mean loss {s['sparse_mean']:.4g} (min fan-in {min(ab.sparse_fan_in_min)}-"
          f"{max(ab.sparse_fan_in_min)} < n = {ab.num_samples})")
    print(f"dense final layer:  mean loss {s['dense_mean']:.4g}")
    print(f"paired difference {s['mean_difference']:.4g}, 95% CI [{s['ci_low']:.4g}, {s['ci_high']:.4g}], "
          f"t p = {s['t_pvalue']:.2g}, Wilcoxon p = {s['wilcoxon_pvalue']:.2g}, dense better in "
          f"{int(s['dense_wins'])}/{len(ab.seeds)} seeds")
    out.parent.mkdir(parents=True, exist_ok=True)
    ab.figure().savefig(out, dpi=150)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
