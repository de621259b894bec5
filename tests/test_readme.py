"""The README's Python blocks run as printed (a README that lies is a bug)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_blocks():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, capsys):
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    if "test accuracy" in BLOCKS[index]:
        accuracy = float(re.search(r"test accuracy ([0-9.]+)", out).group(1))
        sparsity = float(re.search(r"sparsity ([0-9.]+)%", out).group(1))
        assert accuracy > 0.9 and sparsity > 60.0, out  # the README shows 0.956 at 76.6%
