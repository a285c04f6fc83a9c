"""Same seed, model and machine: the same mask with 1 and 2 torch threads (float32 SynFlow, float64 NTK-SAP)."""

import json
import os
import subprocess
import sys
from pathlib import Path

_SCRIPT = r"""
import json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from prune_landscape import models
from prune_landscape.pruning import prune
torch.manual_seed(0)
net = models.resnet20()
out = {}
synflow = prune(net, "synflow", 0.98, input_shape=(3, 32, 32), iterations=10)
ntk = prune(net, "ntk_sap", 0.9, input_shape=(3, 32, 32), prune_samples=8, iterations=2, repeats=1, double=True, seed=3)
for name, masks in (("synflow", synflow), ("ntk_sap_double", ntk)):
    out[name] = {n: m.reshape(-1).nonzero().flatten().tolist() for n, m in masks.items()}
out["threads"] = torch.get_num_threads()
print(json.dumps(out))
"""


def _masks_with_threads(*threads: int) -> list[dict]:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    # Both processes at once: the test waits for one run, not two.
    procs = [
        subprocess.Popen([sys.executable, "-c", _SCRIPT, str(t)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for t in threads
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_masks_identical_with_one_and_two_threads():
    one, two = _masks_with_threads(1, 2)
    assert one["threads"] == 1 and two["threads"] == 2
    for method in ("synflow", "ntk_sap_double"):
        assert one[method].keys() == two[method].keys()
        differing = [n for n in one[method] if one[method][n] != two[method][n]]
        assert not differing, f"{method}: masks differ between 1 and 2 threads in {differing}"
        kept = sum(len(v) for v in one[method].values())
        assert kept == {"synflow": round(0.02 * 270896), "ntk_sap_double": round(0.1 * 270896)}[method]
