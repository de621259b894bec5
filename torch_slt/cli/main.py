"""The ``torch-slt`` command line (also ``python -m torch_slt``): find, sweep, inspect, methods.

``torch-slt find`` builds a network with random weights from a seed, gates it with a method, trains
the masks (weights frozen), evaluates, finalizes and saves the ticket with a report and a plot.
``torch-slt sweep`` does that for several methods and sparsities on one frozen network, plus the
dense-trained baseline. ``torch-slt inspect PATH`` reports on a saved ticket or run folder, and
``torch-slt methods`` lists the registered methods. See ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import inspect as _inspect
import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

import torch_slt
from torch_slt.errors import SLTError

#: Defaults of every setting of ``find`` / ``sweep`` (flags default to None so that ``--resume`` can
#: tell the flags a user typed from the ones left at their default).
DEFAULTS: dict[str, Any] = {
    "method": "stg", "dataset": "digits", "model": "lenet300", "width": 1.0, "init": "kaiming-normal",
    "data_dir": None, "download": False, "val_fraction": 0.1, "epochs": 20, "batch_size": 64,
    "lr": None, "optimizer": None, "momentum": None, "weight_decay": None, "schedule": None,
    "lam": None, "sigma": None, "sparsity": None, "method_args": {}, "train_weights": False, "seed": 0,
    "device": "auto",
}
#: Settings that may change when a run is resumed (they do not change the ticket).
RESUME_FREE = ("device",)
SWEEP_SPARSITIES = (0.5, 0.7, 0.9, 0.95)
#: Samples per class handed to data-driven one-shot methods (SNIP, GraSP), as in Synaptic-Flow.
SCORING_SAMPLES_PER_CLASS = 10
CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"


class CLIError(Exception):
    """A user error: printed as one paragraph (no traceback); the command exits with status 2."""


# ============================================================================================ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torch-slt", description="Find strong lottery tickets: sparse subnetworks of frozen random "
        "weights, found by learning which weights to keep.",
        epilog="Run 'torch-slt COMMAND --help' for the flags of a command; docs/cli.md has them all.")
    parser.add_argument("--version", action="version", version=f"torch-slt {torch_slt.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    find = sub.add_parser("find", help="train one ticket and save it with a report",
                          description="Build a random network from --seed, gate it with --method, train the "
                          "masks (weights frozen), evaluate, finalize and save the ticket, report.json/.md "
                          "and layer_sparsity.png in --out. With no flags: stg on lenet300 on digits.")
    find.add_argument("--method",
                      help=f"pruning method (default {DEFAULTS['method']}; see 'torch-slt methods')")
    _common_flags(find)
    find.add_argument("--resume", action="store_true",
                      help="continue the interrupted run in --out from its last epoch checkpoint, with its "
                      "settings; it ends with the same ticket as an uninterrupted run")
    # For tests: stop after N epochs, as a killed run would.
    find.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)
    find.set_defaults(func=cmd_find)

    sweep = sub.add_parser("sweep", help="several methods x sparsities on one frozen network, plus dense",
                           description="Train a ticket for every method and sparsity on one frozen random "
                           "network (gate methods reach each sparsity through their sparsity target), train "
                           "the dense baseline, and write sweep.json, sweep.md and curve.png in --out.")
    sweep.add_argument("--methods", help="comma-separated method names (default: every registered method)")
    sweep.add_argument("--sparsities", help="comma-separated fractions removed (default 0.5,0.7,0.9,0.95)")
    sweep.add_argument("--no-dense", action="store_true", help="skip the dense-trained baseline")
    _common_flags(sweep, sweep=True)
    sweep.set_defaults(func=cmd_sweep)

    insp = sub.add_parser("inspect", help="report on a saved ticket or run folder",
                          description="Print the report of a run folder (its report.json), a compact ticket "
                          "(*.slt.safetensors: rebuilt and verified) or a finalized state_dict "
                          "(*.safetensors: zeros per tensor).")
    insp.add_argument("path", metavar="PATH", help="run folder, report.json, ticket.slt.safetensors or "
                      "ticket.safetensors")
    insp.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    insp.set_defaults(func=cmd_inspect)

    meth = sub.add_parser("methods", help="list the registered methods",
                          description="The registered pruning methods, their family and default optimiser.")
    meth.add_argument("--json", action="store_true", help="print JSON instead of a table")
    meth.set_defaults(func=cmd_methods)
    return parser


def _common_flags(p: argparse.ArgumentParser, sweep: bool = False) -> None:
    from torch_slt.data import DATASETS
    from torch_slt.init import INITIALIZERS
    from torch_slt.zoo import MODEL_NAMES

    g = p.add_argument_group("method")
    g.add_argument("--lam", type=float, help="penalty weight of the gate methods (stg, hardconcrete)")
    g.add_argument("--sigma", type=float, help="stg gate noise standard deviation")
    if not sweep:
        g.add_argument("--sparsity", type=float, help="fraction of weights removed, in [0, 1): required by "
                       "edge-popup and the one-shot methods; a target for the gate methods")
    g.add_argument("--method-arg", dest="method_args", action="append", metavar="KEY=VALUE",
                   help="any other method hyperparameter, e.g. --method-arg threshold=0.6 (repeatable)")
    g.add_argument("--train-weights", action="store_true", default=None,
                   help="train the surviving weights too (a weak ticket; pruning at initialisation)")
    g = p.add_argument_group("data and model")
    g.add_argument("--dataset", help=f"{', '.join(DATASETS)} (default digits, bundled with scikit-learn)")
    g.add_argument("--data-dir", help="where the dataset files are (fashion-mnist defaults to the Debian "
                   "package's /usr/share/datasets/fashion-mnist)")
    g.add_argument("--download", action="store_true", default=None,
                   help="download missing dataset files (never done otherwise)")
    g.add_argument("--model", help=f"{', '.join(MODEL_NAMES)} or timm:NAME (default lenet300)")
    g.add_argument("--width", type=float, help="multiplies the hidden widths (default 1)")
    g.add_argument("--init", choices=INITIALIZERS,
                   help="random weight initialisation (default kaiming-normal)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, help=f"training epochs (default {DEFAULTS['epochs']})")
    g.add_argument("--lr", type=float, help="learning rate of the masks (default: per method, see "
                   "'torch-slt methods')")
    g.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), help="default: per method")
    g.add_argument("--momentum", type=float, help="SGD momentum (default: per method)")
    g.add_argument("--weight-decay", type=float, help="weight decay on the masks (default: per method)")
    g.add_argument("--schedule", choices=("cosine", "constant"), help="learning-rate schedule (default: per "
                   "method)")
    g.add_argument("--batch-size", type=int, help=f"default {DEFAULTS['batch_size']}")
    g.add_argument("--seed", type=int,
                   help="seeds the random weights, the data split and training (default 0)")
    g.add_argument("--device", help="cpu, cuda, cuda:N, mps or auto (default auto: CUDA when available)")
    g.add_argument("--threads", type=int, help="CPU threads torch may use (default: torch's own choice). On "
                   "a busy machine fewer is faster: with another job on a 2-core CPU, --threads 1 ran "
                   "'find --method edgepopup' in 3 s instead of 42 s")
    g = p.add_argument_group("output")
    g.add_argument("--out", help="output folder (default: a fresh folder under runs/)")
    g.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")


# ============================================================================================== main
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            print(f"torch-slt {args.command}: error: --threads {threads} must be at least 1.", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(threads)  # a run-time knob: not part of the settings a resume must match
    try:
        return args.func(args)
    except CLIError as err:
        print(f"torch-slt {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"torch-slt {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``torch-slt inspect DIR | head``): not an error of ours.
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115  (silences the flush at interpreter exit)
        return 0


# ========================================================================================= settings
def _explicit(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (flags left at None are not)."""
    out = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k, None) is not None}
    if "method_args" in out:
        out["method_args"] = _parse_method_args(out["method_args"])
    return out


def _parse_method_args(items: list[str]) -> dict[str, Any]:
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise CLIError(f"--method-arg {item!r} must look like KEY=VALUE, e.g. --method-arg threshold=0.6")
        try:
            parsed[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            parsed[key.strip()] = value.strip()
    return parsed


def _resolve_settings(args: argparse.Namespace, out: Path | None) -> tuple[dict[str, Any], bool]:
    """Defaults, then the saved settings of the run in ``out`` (with ``--resume``), then the flags."""
    explicit = _explicit(args)
    saved: dict[str, Any] = {}
    if getattr(args, "resume", False) and out is not None and (out / CONFIG).exists():
        saved = json.loads((out / CONFIG).read_text())["settings"]
        clash = [f"--{k.replace('_', '-')} {explicit[k]!r} (the run has {saved.get(k)!r})"
                 for k in explicit if k not in RESUME_FREE and saved.get(k, DEFAULTS[k]) != explicit[k]]
        if clash:
            raise CLIError(f"--resume continues the run in {out} with the settings it started with, but "
                           f"{'; '.join(clash)} differ. Drop those flags to resume, or start a new run "
                           f"with another --out.")
    return {**DEFAULTS, **saved, **explicit}, bool(saved)


# =========================================================================================== prepare
@dataclass
class Prepared:
    """Everything validated before anything is written: data, spec, gated model, method kwargs."""

    settings: dict[str, Any]
    splits: Any
    spec: Any
    model: torch.nn.Module
    method_kwargs: dict[str, Any]
    train_config: Any
    device: torch.device


def _user_errors():
    """The exception types that mean bad input while preparing a run (turned into CLIError)."""
    return (SLTError, ValueError, TypeError, ImportError, FileNotFoundError, KeyError)


def _load_data(s: dict[str, Any]):
    from torch_slt.data import DATASETS, load_dataset

    if s["dataset"] not in DATASETS:
        raise CLIError(f"unknown dataset {s['dataset']!r}; choose one of {', '.join(DATASETS)}.")
    try:
        return load_dataset(s["dataset"], s["data_dir"], download=bool(s["download"]),
                            val_fraction=s["val_fraction"], seed=s["seed"])
    except _user_errors() + (OSError,) as err:
        raise CLIError(str(err)) from None


def _method_kwargs(method: str, s: dict[str, Any], sparsity: float | None, splits: Any,
                   device: torch.device) -> dict[str, Any]:
    """The method's keyword arguments from the flags; flags the method does not take are an error."""
    try:
        cls = torch_slt.get_method(method)
    except SLTError as err:
        raise CLIError(str(err)) from None
    params = _inspect.signature(cls.__init__).parameters
    given = {"lam": s["lam"], "sigma": s["sigma"], "sparsity": sparsity}
    kwargs = {k: v for k, v in given.items() if v is not None}
    kwargs.update(s["method_args"])
    for key in kwargs:
        if key not in params or key.startswith("_") or key in ("data", "loss_fn"):
            accepted = [n for n in params if n not in ("self", "data", "loss_fn") and not n.startswith("_")]
            flag = f"--{key}" if key in given else f"--method-arg {key}=..."
            raise CLIError(f"{flag} does not apply to method {method!r}; it takes: {', '.join(accepted)}.")
    if "seed" in params and "seed" not in kwargs:
        kwargs["seed"] = s["seed"]
    if "data" in params:
        kwargs["data"] = [_scoring_batch(splits, s["seed"], device)]
    return kwargs


def _full_method_config(model: torch.nn.Module, given: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of the method as applied (defaults included), for the report."""
    from torch_slt.checkpoint import method_config

    hook = next(torch_slt.gated_tensors(model))[2]
    return {**method_config(hook), **{k: v for k, v in given.items() if k not in ("data", "loss_fn")}}


def _check_method_settings(s: dict[str, Any], method: str, sparsity: float | None, splits: Any) -> None:
    kwargs = _method_kwargs(method, s, sparsity, splits, torch.device("cpu"))
    try:
        torch_slt.get_method(method)(**kwargs)
    except _user_errors() as err:
        raise CLIError(f"{method}: {err}") from None


def _scoring_batch(splits: Any, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random subset of the training split (10 per class on average), for SNIP / GraSP."""
    n = min(len(splits.train), SCORING_SAMPLES_PER_CLASS * splits.num_classes)
    order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(seed))[:n]
    items = [splits.train[int(i)] for i in order]
    x = torch.stack([torch.as_tensor(item[0]) for item in items]).to(device)
    y = torch.as_tensor([int(item[1]) for item in items]).to(device)
    return x, y


def _prepare(s: dict[str, Any], method: str | None, sparsity: float | None, splits: Any) -> Prepared:
    """Build the spec and the model, gate it (``method`` None: the dense baseline), resolve training."""
    from torch_slt.train import TrainConfig, resolve_device
    from torch_slt.zoo import ModelSpec, build_model

    try:
        device = resolve_device(s["device"])
        density = 1.0 if s["init"] == "kaiming-normal" or sparsity is None else 1.0 - sparsity
        spec = ModelSpec(s["model"], tuple(splits.in_shape), splits.num_classes, width=s["width"],
                         init=s["init"], density=density, seed=s["seed"])
        config = TrainConfig(epochs=s["epochs"], batch_size=s["batch_size"], lr=s["lr"],
                             optimizer=s["optimizer"], momentum=s["momentum"], weight_decay=s["weight_decay"],
                             schedule=s["schedule"], train_weights=bool(s["train_weights"]), seed=s["seed"],
                             device=str(device))
        try:
            config = config.resolved(method)
        except ValueError as err:  # name the flag, not the dataclass field
            raise CLIError(re.sub(r"TrainConfig: (\w+)=", lambda m: f"--{m.group(1).replace('_', '-')} ",
                                  str(err))) from None
        model = build_model(spec).to(device)
        kwargs = {}
        if method is not None:
            kwargs = _method_kwargs(method, s, sparsity, splits, device)
            freeze = not s["train_weights"]
            torch_slt.apply(model, method, freeze=freeze, **kwargs)
            kwargs = _full_method_config(model, kwargs)
    except CLIError:
        raise
    except _user_errors() as err:
        raise CLIError(str(err)) from None
    kwargs.pop("data", None)
    return Prepared(s, splits, spec, model, kwargs, config, device)


# ============================================================================================ output
def _default_out(command: str, s: dict[str, Any]) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{command}-{s['method'] if command == 'find' else 'methods'}-{s['model'].replace(':', '_')}-" \
           f"{s['dataset']}-{stamp}"
    base = Path("runs") / name
    path, i = base, 2
    while path.exists():
        path, i = base.with_name(f"{name}-{i}"), i + 1
    return path


def _check_out(out: Path, resume: bool) -> None:
    """Refuse an --out that is a file, is not writable, or already holds another run."""
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file, not a folder; choose a folder path.")
    if out.is_dir() and any(out.iterdir()):
        if (out / "report.json").exists() or (out / "sweep.json").exists():
            raise CLIError(f"--out {out} already holds a finished run (report.json); choose another folder.")
        if not resume:
            raise CLIError(f"--out {out} is not empty; pass --resume to continue the run in it, or choose "
                           f"another folder.")
        if not (out / CONFIG).exists():
            raise CLIError(f"--out {out} does not hold a torch-slt run ({CONFIG} is missing), so there is "
                           f"nothing to resume; choose another folder.")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise CLIError(f"--out {out} cannot be created: {parent} is not a writable folder.")


def _make_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise CLIError(f"--out {out} is not writable ({err.strerror or err}); choose another "
                       f"folder.") from None


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (Path, torch.device)):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _save_state_dict(path: Path, model: torch.nn.Module, spec: Any) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "pt", "torch_slt": torch_slt.__version__,
                                            "spec": json.dumps(spec.to_dict())})


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


# ============================================================================================== find
def cmd_find(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    out = Path(args.out) if args.out else None
    if args.resume and out is None:
        raise CLIError("--resume needs --out, the folder of the run to continue.")
    s, resuming = _resolve_settings(args, out)
    s["method"] = s["method"].strip().lower().replace("-", "_")
    out = out or _default_out("find", s)
    _check_out(out, args.resume)
    splits = _load_data(s)
    prep = _prepare(s, s["method"], s["sparsity"], splits)
    _make_out(out)
    if not resuming:
        _write_json(out / CONFIG, {"command": "find", "settings": s})
    from torch_slt.train import fit

    config = prep.train_config
    config.quiet, config.stop_after = args.quiet, args.stop_after
    if not args.quiet:
        print(f"torch-slt find: {s['method']} on {s['model']} / {s['dataset']} ({len(splits.train)} train, "
              f"{len(splits.val)} val, {len(splits.test)} test) -> {out}", file=sys.stderr)
    try:
        result = fit(prep.model, splits.train, splits.val, config, checkpoint=out / CHECKPOINT,
                     resume=args.resume)
    except KeyboardInterrupt:
        print(f"torch-slt find: interrupted; continue with: torch-slt find --out {out} --resume",
              file=sys.stderr)
        return 130
    except ValueError as err:  # a checkpoint that does not fit
        raise CLIError(str(err)) from None
    if not result.completed:
        print(f"torch-slt find: stopped after epoch {len(result.history)} of {config.epochs}; continue "
              f"with: torch-slt find --out {out} --resume", file=sys.stderr)
        return 0
    report = _finish_find(prep, result, out, t_start)
    print(_summary(report, out) if args.quiet else _summary_table(report, out))
    (out / CHECKPOINT).unlink(missing_ok=True)
    return 0


def _finish_find(prep: Prepared, result: Any, out: Path, t_start: float) -> dict[str, Any]:
    """Finalize, evaluate (the test split once), and write every output; report.json last."""
    from torch_slt.train import evaluate

    model, s = prep.model, prep.settings
    if torch_slt.is_gated(model):
        torch_slt.finalize(model)
    val_acc = evaluate(model, prep.splits.val)
    test_acc = evaluate(model, prep.splits.test)
    sparsity = torch_slt.report(model)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        model_cpu = model.to("cpu")
        _save_state_dict(staging / "ticket.safetensors", model_cpu, prep.spec)
        with warnings.catch_warnings():
            if s["train_weights"]:  # a weak ticket: trained values are stored, as expected
                warnings.filterwarnings("ignore", message=r"save_ticket\(\): none of the model's weights")
            torch_slt.save_ticket(staging / "ticket.slt.safetensors", model_cpu, prep.spec,
                                  metadata={"method": s["method"], "test_accuracy": test_acc})
        try:
            from torch_slt.plots import plot_layer_sparsity

            plot_layer_sparsity(sparsity, staging / "layer_sparsity.png",
                                title=f"{s['method']} on {s['model']} / {s['dataset']}: "
                                      f"{sparsity.sparsity:.1%} removed, test {test_acc:.1%}")
        except ImportError as err:
            print(f"torch-slt find: no plot ({err})", file=sys.stderr)
        report = _find_report(prep, result, sparsity, val_acc, test_acc, t_start, staging)
        (staging / "report.md").write_text(_report_markdown(report))
        _write_json(staging / "report.json", report)
        names = sorted(p.name for p in staging.iterdir())
        mode = 0o666 & ~_umask()
        for name in names:
            os.chmod(staging / name, mode)  # temporary files are private; outputs follow the umask
        for name in [n for n in names if n != "report.json"] + ["report.json"]:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _find_report(prep: Prepared, result: Any, sparsity: Any, val_acc: float, test_acc: float,
                 t_start: float, folder: Path) -> dict[str, Any]:
    model, s = prep.model, prep.settings
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir())}
    return {
        "command": "find", "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch_slt": torch_slt.__version__, "torch": torch.__version__},
        "settings": s,
        "method": {"name": s["method"], "kwargs": prep.method_kwargs,
                   "learned": bool(torch_slt.get_method(s["method"]).learned)},
        "training": {**result.config.to_dict(), "resumed_from_epoch": result.resumed_from},
        "model": prep.spec.to_dict(),
        "dataset": {"name": s["dataset"], "train": len(prep.splits.train), "val": len(prep.splits.val),
                    "test": len(prep.splits.test), "in_shape": list(prep.splits.in_shape),
                    "num_classes": prep.splits.num_classes},
        "accuracy": {"val": val_acc, "test": test_acc},
        "sparsity": sparsity.to_dict(),
        "parameters": {"total": total, "nonzero": nonzero, "gated": sparsity.total,
                       "gated_kept": sparsity.kept},
        "wall_time_s": {"total": time.perf_counter() - t_start, "training": result.wall_time},
        "history": result.history,
        "files": files,
    }


def _report_markdown(r: dict[str, Any]) -> str:
    s, acc, sp, par = r["settings"], r["accuracy"], r["sparsity"], r["parameters"]
    lines = [
        f"# Ticket: {s['method']} on {s['model']} / {s['dataset']}", "",
        "| | |", "|---|---|",
        f"| test accuracy | {acc['test']:.2%} |",
        f"| val accuracy | {acc['val']:.2%} |",
        f"| sparsity (gated weights removed) | {sp['sparsity']:.2%} "
        f"({sp['kept']:,} of {sp['total']:,} kept) |",
        f"| parameters | {par['total']:,} total, {par['nonzero']:,} non-zero |",
        f"| wall time | {r['wall_time_s']['total']:.1f} s ({r['wall_time_s']['training']:.1f} s training) |",
        "", "## Configuration", "", "| setting | value |", "|---|---|",
    ]
    training = r["training"]
    for key, value in s.items():
        if value is None and training.get(key) is not None:
            value = f"{training[key]} (default for {s['method']})"
        lines.append(f"| {key} | {value} |")
    lines += [f"| {key} | {value} |" for key, value in training.items()
              if key not in s and key not in ("quiet", "stop_after", "num_workers")]
    lines += [f"| {s['method']}.{key} | {value} |" for key, value in r["method"]["kwargs"].items()]
    lines += [f"| model.{key} | {value} |" for key, value in r["model"].items()]
    lines += ["", "## Per-layer sparsity", "", "![layer sparsity](layer_sparsity.png)", "",
              "| tensor | shape | kept | total | sparsity |", "|---|---|---:|---:|---:|"]
    lines += [f"| {row['name']} | {'x'.join(map(str, row['shape']))} | {row['kept']:,} | {row['total']:,} "
              f"| {row['sparsity']:.2%} |" for row in sp["layers"]]
    if r["history"]:
        lines += ["", "## Training", "", "| epoch | loss | val accuracy | sparsity |",
                  "|---:|---:|---:|---:|"]
        lines += [f"| {h['epoch']} | {h['loss']:.4f} | {_fmt_pct(h['val_accuracy'])} "
                  f"| {_fmt_pct(h['sparsity'])} |" for h in r["history"]]
    lines += ["", "## Files", "", "| file | bytes |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in r["files"].items()]
    lines += ["", "Load the ticket:", "", "```python", "import torch_slt",
              'model, spec, meta = torch_slt.load_ticket("ticket.slt.safetensors")', "```", ""]
    return "\n".join(lines)


def _summary(r: dict[str, Any], out: Path) -> str:
    sp = r["sparsity"]
    return (f"test accuracy {r['accuracy']['test']:.2%} (val {r['accuracy']['val']:.2%}) with "
            f"{sp['sparsity']:.2%} of the gated weights removed ({sp['kept']:,} of {sp['total']:,} kept); "
            f"{r['wall_time_s']['total']:.1f} s. Ticket and report in {out}/")


def _summary_table(r: dict[str, Any], out: Path) -> str:
    """The final summary: accuracy, sparsity overall and per layer, time, where the files are."""
    s, sp = r["settings"], r["sparsity"]
    width = max([len(row["name"]) for row in sp["layers"]] + [16])
    lines = [f"{s['method']} on {s['model']} / {s['dataset']}",
             f"  {'test accuracy':<{width}}  {r['accuracy']['test']:>8.2%}   "
             f"(val {r['accuracy']['val']:.2%})",
             f"  {'sparsity':<{width}}  {sp['sparsity']:>8.2%}   "
             f"({sp['kept']:,} of {sp['total']:,} gated weights kept)"]
    lines += [f"  {row['name']:<{width}}  {row['sparsity']:>8.2%}   ({row['kept']:,} of {row['total']:,})"
              for row in sp["layers"]]
    lines += [f"  {'wall time':<{width}}  {r['wall_time_s']['total']:>7.1f} s",
              f"  {'ticket and report':<{width}}  {out}/"]
    return "\n".join(lines)


# ============================================================================================= sweep
def cmd_sweep(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    s, _ = _resolve_settings(args, None)
    methods = _split_methods(args.methods)
    sparsities = _split_sparsities(args.sparsities)
    out = Path(args.out) if args.out else _default_out("sweep", s)
    _check_out(out, resume=False)
    splits = _load_data(s)
    plan = []
    for method in methods:
        takes = "sparsity" in _inspect.signature(torch_slt.get_method(method).__init__).parameters
        plan += [(method, sp) for sp in sparsities] if takes else [(method, None)]
    # Check every combination before anything is written or trained: the model builds and gates with
    # the first one, the method settings of every other one are valid.
    _prepare(s, plan[0][0], plan[0][1], splits)
    for method, sp in plan[1:]:
        _check_method_settings(s, method, sp, splits)
    _make_out(out)
    rows, dense = [], None
    for i, (method, sp) in enumerate(plan, 1):
        rows.append(_sweep_run(s, method, sp, splits, args.quiet, f"[{i}/{len(plan)}]", out))
    if not args.no_dense:
        dense = _sweep_run(s, None, None, splits, args.quiet, "[dense]", out)
    result = {"command": "sweep", "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "versions": {"torch_slt": torch_slt.__version__, "torch": torch.__version__},
              "settings": {**s, "methods": methods, "sparsities": sparsities}, "rows": rows, "dense": dense,
              "wall_time_s": time.perf_counter() - t_start}
    try:
        from torch_slt.plots import plot_accuracy_vs_sparsity

        plot_accuracy_vs_sparsity(
            [{"method": r["method"], "sparsity": r["sparsity"], "accuracy": r["test_accuracy"]}
             for r in rows],
            out / "curve.png", dense_accuracy=dense["test_accuracy"] if dense else None,
            title=f"{s['model']} / {s['dataset']}, seed {s['seed']}")
    except ImportError as err:
        print(f"torch-slt sweep: no plot ({err})", file=sys.stderr)
    (out / "sweep.md").write_text(_sweep_markdown(result))
    _write_json(out / "sweep.json", result)
    print(_sweep_markdown(result, short=True))
    print(f"sweep.json, sweep.md and curve.png in {out}/")
    return 0


def _split_methods(text: str | None) -> list[str]:
    names = torch_slt.list_methods() if not text else [m.strip() for m in text.split(",") if m.strip()]
    resolved = []
    for name in names:
        try:
            resolved.append(torch_slt.get_method(name).name)
        except SLTError as err:
            raise CLIError(str(err)) from None
    return list(dict.fromkeys(resolved))


def _split_sparsities(text: str | None) -> list[float]:
    if not text:
        return list(SWEEP_SPARSITIES)
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"--sparsities {text!r} must be comma-separated numbers, e.g. 0.5,0.7,0.9") from None
    bad = [v for v in values if not 0.0 <= v < 1.0]
    if bad or not values:
        raise CLIError(f"--sparsities {text!r}: every value is a fraction of weights removed, in [0, 1).")
    return values


def _sweep_run(s: dict[str, Any], method: str | None, sparsity: float | None, splits: Any, quiet: bool,
               tag: str, out: Path) -> dict[str, Any]:
    from torch_slt.train import evaluate, fit

    t0 = time.perf_counter()
    prep = _prepare(s, method, sparsity, splits)
    prep.train_config.quiet = quiet
    name = method or "dense"
    if not quiet:
        print(f"{tag} {name}" + (f" at sparsity {sparsity}" if sparsity is not None else ""), file=sys.stderr)
    fit(prep.model, splits.train, splits.val, prep.train_config)
    if method is not None:
        torch_slt.finalize(prep.model)
    rep = torch_slt.report(prep.model)
    row = {"method": name, "target_sparsity": sparsity, "sparsity": rep.sparsity if method else 0.0,
           "val_accuracy": evaluate(prep.model, splits.val),
           "test_accuracy": evaluate(prep.model, splits.test),
           "epochs": prep.train_config.epochs, "kwargs": prep.method_kwargs,
           "wall_time_s": time.perf_counter() - t0}
    if method is not None:
        tickets = out / "tickets"
        tickets.mkdir(exist_ok=True)
        label = f"{name}-{sparsity}" if sparsity is not None else name
        with warnings.catch_warnings():
            if s["train_weights"]:
                warnings.filterwarnings("ignore", message=r"save_ticket\(\): none of the model's weights")
            path = torch_slt.save_ticket(tickets / f"{label}.slt.safetensors", prep.model.to("cpu"),
                                         prep.spec,
                                         metadata={"method": name, "test_accuracy": row["test_accuracy"]})
        row["ticket"] = str(Path(path).relative_to(out))
    if not quiet:
        print(f"{tag} {name}: test {row['test_accuracy']:.2%}, sparsity {row['sparsity']:.2%}",
              file=sys.stderr)
    return row


def _sweep_markdown(r: dict[str, Any], short: bool = False) -> str:
    s = r["settings"]
    title = f"# Sweep: {s['model']} / {s['dataset']}, seed {s['seed']}, {s['epochs']} epochs"
    lines = [] if short else [title, "", "![accuracy against sparsity](curve.png)", ""]
    lines += ["| method | target sparsity | sparsity | val accuracy | test accuracy | time (s) |",
              "|---|---:|---:|---:|---:|---:|"]
    rows = list(r["rows"]) + ([r["dense"]] if r["dense"] else [])
    for row in rows:
        target = "-" if row["target_sparsity"] is None else f"{row['target_sparsity']:.0%}"
        lines.append(f"| {row['method']} | {target} | {row['sparsity']:.2%} | {row['val_accuracy']:.2%} "
                     f"| {row['test_accuracy']:.2%} | {row['wall_time_s']:.1f} |")
    if not short:
        weights = "are trained too (--train-weights)" if s["train_weights"] else "stay frozen"
        lines += ["", f"The weights {weights}. Learned-mask methods train their masks; one-shot methods "
                  "choose theirs once at apply. `dense` trains every weight. Methods without a sparsity "
                  "target run once; their sparsity is what they reached.", ""]
    return "\n".join(lines)


# =========================================================================================== inspect
def cmd_inspect(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.exists():
        raise CLIError(f"{path} does not exist; pass a run folder, report.json or a .safetensors ticket.")
    if path.is_dir():
        for name in ("report.json", "sweep.json"):
            if (path / name).exists():
                return _inspect_json(path / name, args.json)
        raise CLIError(f"{path} holds no report.json or sweep.json; is it a finished torch-slt run?")
    if path.suffix == ".json":
        return _inspect_json(path, args.json)
    if path.name.endswith(".slt.safetensors"):
        return _inspect_compact(path, args.json)
    if path.suffix == ".safetensors":
        return _inspect_state_dict(path, args.json)
    raise CLIError(f"{path}: cannot inspect this kind of file; pass a run folder, report.json or a "
                   f".safetensors ticket.")


def _inspect_json(path: Path, as_json: bool) -> int:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CLIError(f"{path} is not a readable JSON report ({err}).") from None
    if as_json:
        print(json.dumps(data, indent=2))
    elif data.get("command") == "sweep":
        print(_sweep_markdown(data))
    elif data.get("command") == "find":
        print(_report_markdown(data))
    else:
        raise CLIError(f"{path} is not a torch-slt report.")
    return 0


def _inspect_compact(path: Path, as_json: bool) -> int:
    try:
        model, spec, meta = torch_slt.load_ticket(path)
    except _user_errors() + (OSError,) as err:
        raise CLIError(f"{path}: {err}") from None
    rep = torch_slt.report(model)
    data = {"file": str(path), "bytes": path.stat().st_size, "spec": spec.to_dict(), "metadata": meta,
            "sparsity": rep.to_dict(), "weights_verified": True}
    if as_json:
        print(json.dumps(data, indent=2, default=_json_default))
        return 0
    print(f"# Compact ticket {path} ({data['bytes']:,} bytes)\n")
    print("Rebuilt from its spec; the regenerated weights match the stored hash.\n")
    print("| | |\n|---|---|")
    for k, v in {**{f"spec.{k}": v for k, v in spec.to_dict().items()}, **meta}.items():
        print(f"| {k} | {v} |")
    print(f"\n{rep.to_markdown()}")
    return 0


def _inspect_state_dict(path: Path, as_json: bool) -> int:
    from safetensors import safe_open

    try:
        rows = []
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            for key in f.keys():
                t = f.get_tensor(key)
                if t.dim() >= 2 and t.is_floating_point():
                    rows.append({"name": key, "shape": list(t.shape), "kept": int(torch.count_nonzero(t)),
                                 "total": t.numel()})
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise CLIError(f"{path} is not a readable safetensors file ({err}).") from None
    kept, total = sum(r["kept"] for r in rows), sum(r["total"] for r in rows)
    data = {"file": str(path), "metadata": meta, "sparsity": 1 - kept / total if total else 0.0,
            "kept": kept, "total": total, "layers": rows}
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"# State dict {path}\n\nZeros of every weight matrix / kernel (tensors of 2+ dimensions).\n")
    print("| tensor | shape | non-zero | total | sparsity |\n|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {'x'.join(map(str, r['shape']))} | {r['kept']:,} | {r['total']:,} | "
              f"{1 - r['kept'] / r['total']:.2%} |")
    print(f"| **total** | | {kept:,} | {total:,} | {data['sparsity']:.2%} |")
    return 0


# =========================================================================================== methods
def cmd_methods(args: argparse.Namespace) -> int:
    from torch_slt.train import method_defaults

    rows = []
    for name in torch_slt.list_methods():
        cls = torch_slt.get_method(name)
        d = method_defaults(name)
        rows.append({"name": name, "family": "learned" if cls.learned else "one-shot",
                     "optimizer": f"{d.optimizer} lr {d.lr:g}" if cls.learned else "-",
                     "description": cls.description or (cls.__doc__ or "").strip().splitlines()[0]})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| method | family | default optimizer | description |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['family']} | {r['optimizer']} | {r['description']} |")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
