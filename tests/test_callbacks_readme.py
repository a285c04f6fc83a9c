"""The README's Lightning snippet runs as written (it once used `pl.Trainer` after `import prune_landscape as pl`)."""

import csv
import json
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _lightning_snippet() -> str:
    text = README.read_text()
    section = text[text.index("## Lightning: audit any pruning run"):]
    section = section[: section.index("\n## ", 1)]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.parametrize("namespace", ["lightning.pytorch", "pytorch_lightning"])
def test_readme_lightning_snippet_runs_as_written(tmp_path, monkeypatch, namespace):
    code = _lightning_snippet()
    if namespace == "pytorch_lightning":  # the comment on the first line promises this swap works
        code = code.replace("import lightning.pytorch as L", "import pytorch_lightning as L").replace("from lightning.pytorch.", "from pytorch_lightning.")
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "readme_snippet"}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own code, run as a user would
    run_dir = tmp_path / scope["trainer"].log_dir
    assert run_dir == tmp_path / "runs" / "lightning_logs" / "version_0"
    report = json.loads((run_dir / "report.json").read_text())
    assert report["run"]["network"]["name"] == "net" and report["final_layer"]["name"] == "2.weight"
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("audit/final_layer/density")]
    # ModelPruning pruned half of the remaining weights+biases at each of the 3 epochs and made the masks
    # permanent: the head's nonzeros after fit are its last mask.
    head = scope["trainer"].lightning_module.net[2].weight
    assert float(rows[-1]["audit/final_layer/density"]) == pytest.approx((head != 0).double().mean().item())
    assert report["final_layer"]["density"] == pytest.approx((head != 0).double().mean().item()) and (head == 0).any()
    assert (run_dir / "mask.safetensors").is_file() and (run_dir / "report.md").is_file()
