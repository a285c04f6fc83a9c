"""Top-5 Hessian eigenvalues: prune_landscape (SciPy eigsh over batched HVPs) vs PyHessian 0.1 defaults.

One run, same model, same data, same tolerance (1e-3, PyHessian's default), error against the exact
eigenvalues of the dense float64 Hessian (torch.func.hessian + eigvalsh). The model is
small enough (~2.7k parameters) for the exact Hessian. Timings: median of 3 interleaved repeats.

Run: .venv/bin/python benchmarks/bench_hessian.py   (needs `.venv/bin/pip install pyhessian==0.1`)
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call

from prune_landscape import models
from prune_landscape.probes import hessian_spectrum
from prune_landscape.training import train

TOL = 1e-3
K = 5


def setup():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 20, generator=g)
    teacher = models.mlp([20, 32, 5])
    teacher.init_weights(torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = teacher(x).argmax(1)
    net = models.mlp([20, 48, 32, 5])
    net.init_weights(torch.Generator().manual_seed(2))
    train(net, (x, y), epochs=20, lr=0.05, batch_size=100, seed=0)  # probe near a trained point
    return net.eval(), x, y


def exact_top(net, x, y):
    net64 = copy.deepcopy(net).double()
    named = dict(net64.named_parameters())
    shapes = {n: p.shape for n, p in named.items()}
    flat = torch.cat([p.detach().reshape(-1) for p in named.values()])

    def loss(vec):
        params, offset = {}, 0
        for n, s in shapes.items():
            params[n] = vec[offset : offset + s.numel()].reshape(s)
            offset += s.numel()
        return F.cross_entropy(functional_call(net64, params, (x.double(),)), y)

    H = torch.func.hessian(loss)(flat)  # vectorised forward-over-reverse: seconds, not minutes
    return torch.linalg.eigvalsh(H).flip(0)[:K], float(H.trace()), flat.numel()


def run_pyhessian(net, x, y):
    from pyhessian import hessian as pyhessian_hessian

    model = copy.deepcopy(net)
    start = time.perf_counter()
    engine = pyhessian_hessian(model, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=False)
    values, _ = engine.eigenvalues(top_n=K, tol=TOL)
    return time.perf_counter() - start, torch.tensor(sorted(values, reverse=True), dtype=torch.float64)


def run_ours(net, x, y, backend):
    start = time.perf_counter()
    result = hessian_spectrum(net, (x, y), k=K, tol=TOL, trace_probes=0, min_eigenvalue=False, batch_size=len(x),
                              backend=backend)
    return time.perf_counter() - start, torch.tensor(result.eigenvalues, dtype=torch.float64), result.matvecs


def main() -> None:
    torch.set_num_threads(1)  # shared 2-core machine: one thread for every method keeps timings stable
    torch.manual_seed(0)
    net, x, y = setup()
    exact, _, size = exact_top(net, x, y)
    print(f"model: MLP 20-48-32-5 ({size} parameters), 1000 samples, cross-entropy, tol {TOL}")
    print("exact top-5:", [f"{v:.6g}" for v in exact.tolist()])
    times = {"pyhessian": [], "torch": [], "curvlinops": []}
    errors = {}
    for _ in range(3):
        t, values = run_pyhessian(net, x, y)
        times["pyhessian"].append(t)
        errors["pyhessian"] = values
        for backend in ("torch", "curvlinops"):
            t, values, matvecs = run_ours(net, x, y, backend)
            times[backend].append(t)
            errors[backend] = values
    print(f"{'method':<28}{'time [s]':>10}{'max rel err':>14}   eigenvalues")
    rel = {}
    for name, values in errors.items():
        rel[name] = float(((values - exact).abs() / exact.abs()).max())
        label = "PyHessian 0.1 (power it.)" if name == "pyhessian" else f"prune_landscape ({name})"
        print(f"{label:<28}{statistics.median(times[name]):>10.3f}{rel[name]:>14.2e}   "
              + ", ".join(f"{v:.6g}" for v in values.tolist()))
    print(f"matvecs (ours): {matvecs}")
    for backend in ("torch", "curvlinops"):
        print(f"ratio [{backend}]: error {rel['pyhessian'] / max(rel[backend], 1e-16):.1f}x smaller, "
              f"time {statistics.median(times['pyhessian']) / statistics.median(times[backend]):.2f}x faster than PyHessian")


if __name__ == "__main__":
    main()
