"""The layers of the package (docs/architecture.md): the core never depends on what is built on it.

``torch_slt.core`` and ``torch_slt.methods`` are the gating library; ``experiment``, the subsystems
(``lottery``, ``evaluation``, ``analysis``, ``structured``), ``integrations`` and ``cli`` build on it.
Checked twice: statically (every import statement of every core file, including those inside
functions) and at run time (the core imports and gates a model with the upper layers blocked).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "torch_slt"
CORE = ("core", "methods")
UPPER = ("experiment", "cli", "integrations", "lottery", "evaluation", "analysis", "structured")


def _imports(path: Path) -> list[str]:
    """Absolute module names imported anywhere in ``path`` (top level and inside functions)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _core_files() -> list[Path]:
    return sorted(p for layer in CORE for p in (PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_file_imports_no_upper_layer(path):
    upper = [name for name in _imports(path)
             if name.startswith("torch_slt.") and name.split(".")[1] in UPPER]
    assert not upper, f"{path.relative_to(PACKAGE)} imports {upper}: the core must not depend on them"


def test_core_files_are_found():
    # guards the test above against an empty parametrization after a move
    assert len(_core_files()) >= 20


def test_core_works_with_the_upper_layers_blocked():
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                parts = name.split(".")
                if parts[0] == "torch_slt" and len(parts) > 1 and parts[1] in {UPPER!r}:
                    raise ImportError("blocked upper layer " + name)
        sys.meta_path.insert(0, Block())
        import torch, torch_slt
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        for method in torch_slt.list_methods():
            if method in ("stg", "magnitude", "edgepopup", "hardconcrete", "random"):
                m = torch_slt.apply(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                                                        torch.nn.Linear(8, 2)), method, sparsity=0.5)
                m(torch.randn(2, 4)).sum().backward()
                torch_slt.finalize(m)
        print("ok", sorted(m for m in sys.modules if m.startswith("torch_slt.")
                           and m.split(".")[1] in {UPPER!r}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok []"


def test_import_torch_slt_stays_cheap():
    # Measured against what ``import torch`` itself loads (torch.hub brings tqdm along, for instance).
    script = ("import sys, torch; before = set(sys.modules); import torch_slt; "
              "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
              "heavy = ['matplotlib', 'safetensors', 'tqdm', 'sklearn', 'transformers', 'timm', "
              "'torchvision', 'numpy', 'scipy']; print([m for m in heavy if m in new])")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("old, new", [
    ("torch_slt.api", "torch_slt.core.api"), ("torch_slt.checkpoint", "torch_slt.core.state"),
    ("torch_slt.train", "torch_slt.experiment.train"), ("torch_slt.zoo", "torch_slt.experiment.zoo"),
    ("torch_slt.ticket", "torch_slt.experiment.ticket"), ("torch_slt._validation", "torch_slt.core.validation"),
])
def test_moved_module_paths_warn_and_give_the_same_module(old, new):
    import importlib

    sys.modules.pop(old, None)
    with pytest.warns(FutureWarning, match=rf"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__spec__.name == new  # importlib's rewrite of __spec__ is undone


def test_old_import_lines_keep_working():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from torch_slt.train import TrainConfig, fit  # noqa: F401
        from torch_slt.zoo import ModelSpec  # noqa: F401
    import torch_slt
    from torch_slt.experiment.train import fit as new_fit

    assert fit is new_fit
    assert torch_slt.init.initialize is torch_slt.experiment.init.initialize


def test_init_is_a_public_namespace_without_warning():
    sys.modules.pop("torch_slt.init", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import torch_slt.init  # noqa: F401
