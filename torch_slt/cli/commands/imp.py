"""``torch-slt imp``: iterative magnitude pruning with rewinding (weak lottery tickets), with controls and
the instability analysis; writes every round to the run folder and resumes after a kill."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import torch_slt
from torch_slt.cli import output
from torch_slt.cli.prepare import load_data, user_errors
from torch_slt.cli.settings import CONFIG, CLIError, RunSettings, flag_of, read_config
from torch_slt.core.errors import SettingError

NAME = "imp"
HELP = "find a weak ticket by iterative magnitude pruning with rewinding"
DESCRIPTION = ("Train the network's weights, remove --prune-rate of the surviving weights by magnitude, "
               "rewind the rest to iteration --rewind, and repeat for --rounds rounds (Frankle & Carbin "
               "2019). Writes rounds.json, the masks and the rewind point as it goes, imp.md, imp.png and "
               "the last ticket at the end; --controls trains sanity checks at every round; --instability "
               "measures linear mode connectivity from the rewind point. With no flags: lenet300 on digits, "
               "5 rounds.")
#: Flags a resumed run may change (they do not change the result).
_RESUME_FREE = {"out", "resume", "quiet", "device", "threads", "stop_after", "func", "command"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from torch_slt.experiment.data import DATASETS
    from torch_slt.experiment.init import INITIALIZERS, canonical
    from torch_slt.experiment.zoo import MODEL_NAMES
    from torch_slt.lottery.config import CONTROLS

    g = p.add_argument_group("pruning")
    g.add_argument("--preset", choices=("paper", "open_lth"),
                   help="a reference's pruning settings, under any flag given: paper = layer-wise at "
                   "--prune-rate 0.2 with the output layer at 0.1 (Frankle & Carbin's LeNet); open_lth = "
                   "global at 0.2 with the output layer dense (open_lth's LeNet). Default: neither (global, "
                   "output layer at half rate)")
    g.add_argument("--rounds", type=int, help="pruning rounds after the dense round 0 (default 5; 19 at "
                   "0.2 leave 1.4%% of the weights)")
    g.add_argument("--prune-rate", type=float, help="fraction of the remaining weights removed per round "
                   "(default 0.2)")
    g.add_argument("--output-rate", type=float, help="rate of the output layer (default: half --prune-rate "
                   "for fully connected nets, as the paper; 0 keeps it dense)")
    g.add_argument("--scope", choices=("global", "layer"), help="rank all layers together (default, open_lth) "
                   "or prune each layer at the rate (the original paper)")
    g.add_argument("--rewind", type=int, help="iteration every round restarts from (default 0 = the "
                   "initial weights; a few hundred for late rewinding)")
    g.add_argument("--eval-every", type=int, help="iterations between evaluations, from which the early-"
                   "stopping iteration is chosen (default: every epoch)")
    g.add_argument("--controls", help=f"comma-separated sanity checks trained at every round: "
                   f"{', '.join(CONTROLS)}")
    g.add_argument("--instability", action="store_true", default=None,
                   help="after the last round, train two copies of its ticket from the rewind point with "
                   "different data order and measure the error barrier between them (30 points); also the "
                   "line from the rewind point to the trained ticket")
    g = p.add_argument_group("data, model and training")
    g.add_argument("--dataset", help=f"{', '.join(DATASETS)} (default digits)")
    g.add_argument("--data-dir", help="where the dataset files are")
    g.add_argument("--model", help=f"{', '.join(MODEL_NAMES)} or timm:NAME (default lenet300)")
    g.add_argument("--width", type=float, help="multiplies the hidden widths (default 1)")
    g.add_argument("--init", type=canonical, choices=INITIALIZERS,
                   help="weight initialisation (default kaiming-normal; ukn, kn, sc, usc work too)")
    g.add_argument("--epochs", type=int, help="training epochs per round (default 10)")
    g.add_argument("--batch-size", type=int, help="default 60, as the paper's LeNet")
    g.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), help="default adam")
    g.add_argument("--lr", type=float, help="learning rate of the weights (default 1.2e-3 with Adam, the "
                   "paper's LeNet; 0.1 with SGD)")
    g.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", type=float, help="default 0 with Adam, 1e-4 with SGD")
    g.add_argument("--schedule", choices=("cosine", "constant"), help="default constant with Adam (the paper), cosine with SGD")
    g.add_argument("--seed", type=int, help="seeds the weights, the data split and order (default 0)")
    g.add_argument("--device", help="cpu, cuda, cuda:N, mps or auto (default auto)")
    g.add_argument("--threads", type=int, help="CPU threads torch may use")
    g = p.add_argument_group("output")
    g.add_argument("--out", help="run folder (default: a fresh folder under runs/)")
    g.add_argument("--resume", action="store_true", help="continue the interrupted run in --out (the round "
                   "and epoch it stopped at) with its settings")
    g.add_argument("--quiet", action="store_true", help="no progress bars or per-round lines")
    p.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)


# ------------------------------------------------------------------------------------------- settings
_IMP_FLAGS = ("rounds", "prune_rate", "output_rate", "scope", "rewind", "eval_every", "controls")
_RUN_FLAGS = ("dataset", "data_dir", "model", "width", "init", "seed")
_TRAIN_FLAGS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule")
_DEFAULTS = {"rounds": 5, "epochs": 10, "batch_size": 60, "instability": False}


def _typed(args: argparse.Namespace) -> dict[str, Any]:
    names = _IMP_FLAGS + _RUN_FLAGS + _TRAIN_FLAGS + ("instability", "preset")
    typed = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    if "controls" in typed:
        typed["controls"] = [c.strip().lower().replace("-", "_") for c in typed["controls"].split(",")
                             if c.strip()]
    return typed


def _settings(args: argparse.Namespace, out: Path) -> tuple[dict[str, Any], bool]:
    """The run's flat settings: defaults, then a resumed run's saved settings, then the flags."""
    typed = _typed(args)
    saved: dict[str, Any] = {}
    config = read_config(out, NAME) if args.resume else None
    if config is not None:
        saved = config["settings"]
        clash = [f"{flag_of(k)} {v!r} (the run has {saved.get(k)!r})" for k, v in typed.items()
                 if saved.get(k) != v]
        if clash:
            raise CLIError(f"--resume continues the run in {out} with its own settings, but "
                           f"{'; '.join(clash)} differ. Drop those flags, or start a new run elsewhere.")
    return {**_DEFAULTS, **saved, **typed}, bool(saved)


def _imp_config(flat: dict[str, Any]):
    from torch_slt.lottery import IMPConfig

    from torch_slt.lottery.config import PRESETS

    kwargs = {k: flat[k] for k in _IMP_FLAGS if flat.get(k) is not None}
    try:
        return IMPConfig(**{**PRESETS.get(flat.get("preset"), {}), **kwargs})
    except SettingError as err:
        raise CLIError(f"{flag_of(err.setting)} {err.value!r} {err.reason}") from None


def _training(flat: dict[str, Any], device: str, quiet: bool, stop_after: int | None):
    from torch_slt.experiment.train import TrainConfig
    from torch_slt.lottery import weight_training_config

    kwargs = {k: flat[k] for k in _TRAIN_FLAGS if flat.get(k) is not None}
    try:
        cfg = TrainConfig(**kwargs, seed=flat.get("seed", 0), device=device, quiet=quiet, stop_after=stop_after)
        return weight_training_config(cfg)
    except SettingError as err:
        raise CLIError(f"{flag_of(err.setting)} {err.value!r} {err.reason}") from None


# ------------------------------------------------------------------------------------------------ run
def run(args: argparse.Namespace) -> int:
    from torch_slt.experiment.train import resolve_device
    from torch_slt.experiment.zoo import ModelSpec, build_model
    from torch_slt.lottery import imp

    out = Path(args.out) if args.out else None
    if args.resume and out is None:
        raise CLIError("--resume needs --out, the folder of the run to continue.")
    flat, resuming = _settings(args, out or Path("."))
    run_settings = RunSettings(**{k: flat[k] for k in _RUN_FLAGS if flat.get(k) is not None})
    out = out or output.default_out(NAME, replace(run_settings, method="imp"))
    output.check_out(out, args.resume)
    config = _imp_config(flat)
    try:
        device = str(resolve_device(args.device or "auto"))
    except ValueError as err:
        raise CLIError(str(err)) from None
    training = _training(flat, device, args.quiet, args.stop_after)
    splits = load_data(run_settings)
    try:
        spec = ModelSpec(run_settings.model, tuple(splits.in_shape), splits.num_classes,
                         width=run_settings.width, init=run_settings.init, seed=run_settings.seed)
        model = build_model(spec)
    except user_errors() as err:
        raise CLIError(str(err)) from None
    output.make_out(out, resume=bool(args.resume))
    if not resuming:
        output.write_json(out / CONFIG, {"command": NAME, "settings": flat})
    if not args.quiet:
        print(f"torch-slt imp: {config.rounds} rounds at {config.prune_rate:g} ({config.scope}), rewind to "
              f"iteration {config.rewind}, {run_settings.model} on {run_settings.dataset} -> {out}",
              file=sys.stderr)
    try:
        result = imp(model, splits.train, val=splits.val, test=splits.test, config=config, training=training,
                     run_dir=out, resume=args.resume)
    except KeyboardInterrupt:
        print(f"torch-slt imp: interrupted; continue with: torch-slt imp --out {out} --resume", file=sys.stderr)
        return 130
    except user_errors() as err:
        raise CLIError(str(err)) from None
    if not result.completed:
        print(f"torch-slt imp: stopped; continue with: torch-slt imp --out {out} --resume", file=sys.stderr)
        return 0
    _finish(result, model, spec, splits, training, flat, out)
    print(_summary(result, out))
    return 0


def _finish(result: Any, model: torch.nn.Module, spec: Any, splits: Any, training: Any,
            flat: dict[str, Any], out: Path) -> None:
    """The report (imp.md), the figure, the last ticket and, with --instability, the line analyses."""
    from torch_slt.lottery import plot_imp

    body = {"command": NAME, "settings": flat,
            "rows": [r.__dict__ | {"remaining": r.remaining} for r in result.rows]}
    with output.staged(out, last="report.json") as staging:   # a kill leaves no half-written output
        if flat.get("instability"):
            body["instability"] = _instability(model, splits, training, result, out, staging)
        ticket = torch_slt.finalize(model.to("cpu"))
        output.save_state_dict(staging / "ticket.safetensors", ticket, spec)
        try:
            plot_imp([result], staging / "imp.png",
                     title=f"IMP on {spec.name} / {flat.get('dataset', 'digits')}")
        except ImportError as err:
            print(f"torch-slt imp: no plot ({err})", file=sys.stderr)
        (staging / "imp.md").write_text(_markdown(result, body))
        output.write_json(staging / "report.json", body)


def _instability(model: torch.nn.Module, splits: Any, training: Any, result: Any, out: Path,
                 staging: Path) -> dict[str, Any]:
    import copy

    from torch_slt.lottery import RewindPoint, instability, interpolate_from_init, plot_instability, rewind

    point = RewindPoint.load(out / "rewind.pt")
    start = copy.deepcopy(model)
    rewind(start, point)
    seed = training.seed
    res = instability(start, splits.train, splits.test, training=training, start_iteration=point.iteration,
                      seeds=(seed + 1, seed + 2))
    mli = interpolate_from_init(start, model, splits.test)
    try:
        plot_instability({f"round {result.tickets()[-1].round} ticket": res}, staging / "instability.png")
    except ImportError:
        pass
    return {"instability": res.to_dict(), "init_to_trained": mli.to_dict()}


def report_markdown(body: dict[str, Any], path: Path) -> str:
    """imp.md from a run's report.json (``torch-slt inspect`` on an IMP folder)."""
    from torch_slt.experiment.train import TrainConfig
    from torch_slt.lottery import IMPConfig, IMPResult, RoundResult

    try:
        rows = [RoundResult(**{k: v for k, v in r.items() if k != "remaining"}) for r in body["rows"]]
        return _markdown(IMPResult(IMPConfig(), TrainConfig(), rows), body)
    except (KeyError, TypeError, AttributeError) as err:
        raise CLIError(f"{path} is not a readable IMP report ({type(err).__name__}: {err}).") from None


def _markdown(result: Any, body: dict[str, Any]) -> str:
    lines = ["# Iterative magnitude pruning", "", f"Settings: `{body['settings']}`", "", result.to_markdown()]
    if "instability" in body:
        ins, mli = body["instability"]["instability"], body["instability"]["init_to_trained"]
        lines += ["", (f"Error barrier between two copies trained from the rewind point (iteration "
                       f"{ins['start_iteration']}): **{100 * ins['barrier']:.2f} points**; line from the rewind "
                       f"point to the trained ticket: {'monotonic' if mli['monotonic'] else 'not monotonic'} "
                       f"(largest rise {mli['max_increase']:.4f}).")]
    return "\n".join(lines) + "\n"


def _summary(result: Any, out: Path) -> str:
    last = result.tickets()[-1]
    dense = result.tickets()[0]
    return (f"imp: {len(result.tickets()) - 1} rounds; {last.remaining:.2%} of the weights remain; test "
            f"{dense.early_test_accuracy:.2%} dense -> {last.early_test_accuracy:.2%} (early stop); {out}")
