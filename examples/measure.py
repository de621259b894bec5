"""Run every example as the table in examples/README.md lists it and rewrite that table, dated.

The numbers in the table drifted from what the examples print (issue 22) because they were typed by
hand. This script runs each example's command in a fresh process with one thread, measures its wall
time and its CPU time (user + system, children), keeps what it prints as the result, counts the
warnings torch_slt itself printed (none is the goal: a shipped example must not trip its own
library's warnings), and writes ``examples/measured.json`` and the table between the markers of
``examples/README.md``.

    python examples/measure.py                  # all examples (about 5 minutes on a shared 2-core CPU)
    python examples/measure.py --only quickstart,hf_vit_swin-swin   # some rows; the others are kept
    python examples/measure.py --render         # rewrite the table from measured.json, run nothing
"""

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
RESULTS = HERE / "measured.json"
BEGIN, END = "<!-- measure.py: begin -->", "<!-- measure.py: end -->"
#: The line the runner prints for every warning raised by torch_slt's own code.
OWN_WARNING = re.compile(r"^measure.py: torch_slt warning: (.*)$", re.MULTILINE)
#: Runs an example as ``__main__``, marking each warning whose ``warnings.warn`` call is in torch_slt
#: (the warning's location is the example's line, by ``stacklevel``, so the stack is what tells).
RUNNER = """
import os, runpy, sys, traceback, warnings
own_dir = os.sep + "torch_slt" + os.sep
shown = warnings.showwarning
def show(message, category, filename, lineno, file=None, line=None):
    if any(own_dir in frame.filename for frame in traceback.extract_stack()[:-1]):
        first = str(message).splitlines()[0] if str(message) else ""
        print(f"measure.py: torch_slt warning: {category.__name__}: {first}", file=sys.stderr)
    shown(message, category, filename, lineno, file, line)
warnings.showwarning = show
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(script))
runpy.run_path(script, run_name="__main__")
"""


@dataclass(frozen=True)
class Example:
    """One row: the script, the arguments measured, and the columns that describe it."""

    key: str
    script: str
    args: tuple[str, ...]
    method: str
    model: str
    data: str


EXAMPLES = (
    Example("quickstart", "quickstart.py", (), "`stg` (Adam on the gates)", "random 64-300-100-10 MLP",
            "scikit-learn digits (bundled)"),
    Example("fashion_mnist_sweep", "fashion_mnist_sweep.py", ("--sparsities", "0.5,0.9", "--epochs", "3",
                                                             "--out", "{tmp}"),
            "`stg`, `magnitude`, `snip` (any)", "`lenet300`",
            "Fashion-MNIST (Debian `dataset-fashion-mnist`) or `--dataset digits`"),
    Example("cifar10_resnet", "cifar10_resnet.py", ("--smoke", "--device", "cpu"),
            "`stg` with a sparsity target (or `--method edgepopup`)", "`resnet18`, signed-constant init",
            "CIFAR-10, torchvision layout (`--download` to fetch); `--smoke`: random images"),
    Example("hf_vit_swin-swin", "hf_vit_swin.py", ("--arch", "swin"), "`stg`, sparsity target 0.5",
            "random `SwinForImageClassification` sized for 8x8 inputs (or `--pretrained PATH`)", "digits"),
    Example("hf_vit_swin-vit", "hf_vit_swin.py", ("--arch", "vit"), "`stg`, sparsity target 0.5",
            "random `ViTForImageClassification` sized for 8x8 inputs (or `--pretrained PATH`)", "digits"),
    Example("hf_pretrained_masks", "hf_pretrained_masks.py", (),
            "`stg` via `SLTTrainer`", "ViT trained on digits, saved and reloaded with `from_pretrained`",
            "digits"),
)


def run(example: Example) -> dict:
    """Run one example in a fresh single-thread process; its times, output and own warnings."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [a.replace("{tmp}", tmp) for a in example.args]
        # PYTHONPATH: the torch_slt of this checkout, not whichever one is installed
        path = os.pathsep.join(p for p in (str(HERE.parent), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "default",
               "PYTHONPATH": path}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", RUNNER, str(HERE / example.script), *args], cwd=HERE.parent,
                              env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"measure.py: {example.script} {' '.join(args)} failed ({done.returncode}):\n"
                         f"{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"command": " ".join(["python", f"examples/{example.script}", *example.args]).replace(
                " --out {tmp}", ""),
            "date": dt.date.today().isoformat(), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "result": result_text(done.stdout),
            "own_warnings": sorted(set(OWN_WARNING.findall(done.stderr)))}


def result_text(stdout: str) -> str:
    """What the example printed, as one table cell. An example that ends with a JSON object (after
    the ``Trainer``'s log lines, say) is summed up by that object's scalar fields."""
    text = stdout.strip()
    lines = text.splitlines()
    for start in range(len(lines) - 1, -1, -1):
        if lines[start].startswith("{"):
            try:
                data = json.loads("\n".join(lines[start:]))
            except ValueError:
                continue
            if isinstance(data, dict) and all(line.startswith("{") for line in lines[start:start + 1]):
                return ", ".join(f"{k} {v}" for k, v in data.items() if isinstance(v, (int, float, bool)))
    return "; ".join(" ".join(line.split()) for line in lines if line.strip() and not line.startswith("plot:"))


def machine() -> dict:
    """Where the numbers come from: they depend on it (and on the load)."""
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "load_average_at_start": round(os.getloadavg()[0], 1), "threads": 1}


def render(measured: dict) -> str:
    """The markdown table (between the README markers) from ``measured.json``."""
    info = measured["machine"]
    dates = sorted({row["date"] for row in measured["rows"].values()})
    when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
    lines = [BEGIN,
             f"Measured by `python examples/measure.py` on {when} (Python {info['python']}, torch "
             f"{info['torch']}, CPU only, `OMP_NUM_THREADS=1`, {info['cpus']} cores, load average "
             f"{info['load_average_at_start']} when the last run started: a shared machine, so the times are upper bounds "
             f"for a laptop; CPU is user + system time). Do not edit by hand: rerun the script.",
             "",
             "| example | method | model | data | command measured | wall time (CPU) | result printed | "
             "torch_slt warnings |",
             "|---|---|---|---|---|---|---|---|"]
    for example in EXAMPLES:
        row = measured["rows"].get(example.key)
        if row is None:
            continue
        warned = "; ".join(row["own_warnings"]) if row["own_warnings"] else "none"
        lines.append(f"| [{example.script}]({example.script}) | {example.method} | {example.model} | "
                     f"{example.data} | `{row['command']}` | {row['wall_s']:.0f} s ({row['cpu_s']:.0f} s) | "
                     f"{row['result']} | {warned} |")
    return "\n".join(lines + [END])


def write_readme(measured: dict) -> None:
    text = README.read_text()
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    README.write_text(text[:start] + render(measured) + text[stop:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated row keys to run: " + ", ".join(e.key for e in EXAMPLES))
    parser.add_argument("--render", action="store_true", help="rewrite the README table from measured.json")
    args = parser.parse_args(argv)
    measured = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": {}}
    if not args.render:
        keys = args.only.split(",") if args.only else [e.key for e in EXAMPLES]
        unknown = sorted(set(keys) - {e.key for e in EXAMPLES})
        if unknown:
            parser.error(f"--only: unknown rows {unknown}; choose from {', '.join(e.key for e in EXAMPLES)}")
        measured["machine"] = machine()
        for example in EXAMPLES:
            if example.key in keys:
                print(f"measure.py: {example.key} ...", file=sys.stderr, flush=True)
                measured["rows"][example.key] = run(example)
                print(f"measure.py: {example.key}: {measured['rows'][example.key]}", file=sys.stderr, flush=True)
                RESULTS.write_text(json.dumps(measured, indent=2) + "\n")
    write_readme(measured)
    print(render(measured))
    return 0


if __name__ == "__main__":
    sys.exit(main())
