"""torch is the only hard dependency: the core works with every optional package hidden."""

from __future__ import annotations

import subprocess
import sys
import textwrap

OPTIONAL = ["transformers", "timm", "torchvision", "matplotlib", "sklearn", "safetensors", "lightning",
            "torch_pruning", "accelerate"]


def test_core_imports_and_runs_without_optional_packages():
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {OPTIONAL!r}:
                    raise ImportError("blocked optional package " + name)
        sys.meta_path.insert(0, Block())
        import torch, torch_slt
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        torch_slt.apply(model, "stg", lam=0.1)
        torch_slt.penalty(model).backward()
        torch_slt.finalize(model)
        print("ok", sorted(m for m in sys.modules if m.split(".")[0] in {OPTIONAL!r}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok []"
