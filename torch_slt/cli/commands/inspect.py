"""``torch-slt inspect PATH``: report on a run folder, a compact ticket or a finalized state_dict."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import torch_slt
from torch_slt.cli.output import json_default
from torch_slt.cli.prepare import user_errors
from torch_slt.cli.reports import report_markdown, sweep_markdown
from torch_slt.cli.settings import CLIError

NAME = "inspect"
HELP = "report on a saved ticket or run folder"
DESCRIPTION = ("Print the report of a run folder (its report.json), a compact ticket "
               "(*.slt.safetensors: rebuilt and verified) or a finalized state_dict "
               "(*.safetensors: zeros per tensor).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="run folder, report.json, ticket.slt.safetensors or "
                   "ticket.safetensors")
    p.add_argument("--json", action="store_true", help="print JSON instead of markdown")


def run(args: argparse.Namespace) -> int:
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
    if not isinstance(data, dict):
        raise CLIError(f"{path} is not a torch-slt report (it holds a JSON {type(data).__name__}).")
    if as_json:
        print(json.dumps(data, indent=2))
    elif data.get("command") in ("sweep", "find"):
        try:
            text = (sweep_markdown if data["command"] == "sweep" else report_markdown)(data)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise CLIError(f"{path} lacks what a finished {data['command']} run records "
                           f"({type(err).__name__}: {err}); the report is damaged.") from None
        print(text)
    elif data.get("command") == "imp" or (path.parent / "imp.json").exists():
        from torch_slt.cli.commands.imp import report_markdown as imp_markdown

        print(imp_markdown(data, path))   # (before: "not a torch-slt report" on an IMP folder)
    else:
        raise CLIError(f"{path} is not a torch-slt report (a find, sweep or imp run's report.json).")
    return 0


def _inspect_compact(path: Path, as_json: bool) -> int:
    from torch_slt.experiment.ticket import ticket_info

    try:
        model, spec, meta = torch_slt.load_ticket(path)
        version = ticket_info(path)["format_version"]
    except user_errors() + (OSError,) as err:
        raise CLIError(f"{path}: {err}") from None
    rep = torch_slt.report(model)
    data = {"file": str(path), "bytes": path.stat().st_size, "spec": spec.to_dict(), "metadata": meta,
            "sparsity": rep.to_dict(), "weights_verified": True, "checksum_verified": version >= 2}
    if as_json:
        print(json.dumps(data, indent=2, default=json_default))
        return 0
    print(f"# Compact ticket {path} ({data['bytes']:,} bytes)\n")
    checked = "Checksum verified; rebuilt" if data["checksum_verified"] else "Rebuilt (format 1: no checksum)"
    print(f"{checked} from its spec; the regenerated weights match the stored hash.\n")
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
