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
    ("torch_slt.api", "torch_slt.core.api"), ("torch_slt.checkpoint", "torch_slt.core.checkpoint"),
    ("torch_slt.train", "torch_slt.experiment.train"), ("torch_slt.zoo", "torch_slt.experiment.zoo"),
    ("torch_slt.ticket", "torch_slt.experiment.ticket"), ("torch_slt._validation", "torch_slt.core.validation"),
    ("torch_slt.core.checks", "torch_slt.core.readers"), ("torch_slt.core.state", "torch_slt.core.checkpoint"),
    ("torch_slt.checks", "torch_slt.core.readers"),
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


# ------------------------------------------------------------------ the import graph of the whole package
def _module_files() -> dict[str, Path]:
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] != "__init__":   # package namespaces re-export; the edges are between modules
            files[".".join(parts)] = path
    return files


def _runtime_imports(path: Path) -> list[str]:
    """Like :func:`_imports`, without the imports under ``if TYPE_CHECKING:`` (never run)."""
    tree = ast.parse(path.read_text())
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    names = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
    return names


def _import_graph() -> dict[str, set[str]]:
    files = _module_files()

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        while parts:
            if ".".join(parts) in files:
                return ".".join(parts)
            parts.pop()
        return None

    graph = {}
    for module, path in files.items():
        targets = {resolve(n) for n in _runtime_imports(path) if n.startswith("torch_slt.")}
        graph[module] = {t for t in targets if t and t != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle():
    graph = _import_graph()
    assert len(graph) > 80   # every module was read
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _private_core_uses(path: Path) -> list[str]:
    """Private names of the core (``_name``) that ``path`` imports or reaches through a core module."""
    tree = ast.parse(path.read_text())
    core_modules, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            layer = node.module.split(".")[1:2]
            if node.module.startswith("torch_slt.") and layer and layer[0] in CORE:
                for alias in node.names:
                    if alias.name.startswith("_"):
                        found.append(f"{node.module}.{alias.name}")
                    else:
                        core_modules.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in core_modules and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            found.append(f"{node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("layer", UPPER)
def test_upper_layers_use_no_private_name_of_the_core(layer):
    uses = {str(p.relative_to(PACKAGE)): _private_core_uses(p) for p in (PACKAGE / layer).rglob("*.py")}
    assert {k: v for k, v in uses.items() if v} == {}
