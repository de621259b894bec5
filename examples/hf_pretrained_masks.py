"""Mask fine-tuning of a pretrained Hugging Face ViT: learn which frozen pretrained weights to keep.

1. "Pretraining": a small ViT is trained densely on scikit-learn's bundled digits and saved with
   ``save_pretrained`` to a local directory (skipped with ``--model-dir``, which loads your own local
   ``ViTForImageClassification`` directory; it must take 1x8x8 inputs and have 10 labels).
2. The model is loaded back with ``from_pretrained``, every ``nn.Linear`` / ``Conv2d`` gets a stochastic
   gate (``torch_slt.apply(model, "stg")``, all weights frozen), and ``SLTTrainer`` trains only the gates
   with the usual ``TrainingArguments``: cross entropy plus the sparsity penalty.
3. ``torch_slt.finalize`` bakes the masks in; ``save_pretrained`` writes a standard checkpoint that the
   unmodified ``ViTForImageClassification.from_pretrained`` loads with no missing or unexpected keys.

Nothing is downloaded. About a minute on a laptop CPU:

    python examples/hf_pretrained_masks.py                 # 30 + 30 epochs
    python examples/hf_pretrained_masks.py --smoke         # 1 + 1 epochs on a subset, for the test suite
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification

import torch_slt
from torch_slt.integrations.hf import SLTTrainer


def digits(smoke: bool):
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).view(-1, 1, 8, 8).sub_(0.5).div_(0.5)
    x_train, x_test, y_train, y_test = train_test_split(x, torch.tensor(y), test_size=0.2, random_state=0)
    if smoke:
        x_train, y_train, x_test, y_test = x_train[:128], y_train[:128], x_test[:64], y_test[:64]
    train = [{"pixel_values": a, "labels": int(b)} for a, b in zip(x_train, y_train)]
    return train, (x_test, y_test)


@torch.no_grad()
def accuracy(model, test) -> float:
    model.eval()
    x, y = test
    return (model(pixel_values=x).logits.argmax(-1) == y).float().mean().item()


def training_args(out: Path, epochs: int, lr: float) -> TrainingArguments:
    return TrainingArguments(output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=64,
                             learning_rate=lr, lr_scheduler_type="constant", logging_strategy="epoch",
                             report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True, seed=0)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", help="a local pretrained ViTForImageClassification directory")
    parser.add_argument("--workdir", help="where checkpoints go (default: a temporary directory)")
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=30, help="mask-training epochs")
    parser.add_argument("--lam", type=float, default=0.05, help="sparsity penalty weight (stg's lam)")
    parser.add_argument("--smoke", action="store_true", help="1 + 1 epochs on a subset, to check it runs")
    args = parser.parse_args(argv)
    pretrain_epochs, epochs = (1, 1) if args.smoke else (args.pretrain_epochs, args.epochs)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="slt_hf_"))
    torch.manual_seed(0)
    train, test = digits(args.smoke)

    # 1. A pretrained model in a local directory.
    model_dir = Path(args.model_dir) if args.model_dir else workdir / "pretrained"
    if not args.model_dir:
        config = ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=64, num_labels=10)
        dense = ViTForImageClassification(config)
        Trainer(model=dense, args=training_args(workdir / "dense", pretrain_epochs, 3e-3),
                train_dataset=train).train()
        dense.save_pretrained(model_dir)

    # 2. Load it, gate every weight, train only the gates.
    model = ViTForImageClassification.from_pretrained(model_dir)
    dense_acc = accuracy(model, test)
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    torch_slt.apply(model, "stg", lam=args.lam)
    SLTTrainer(model=model, args=training_args(workdir / "masks", epochs, 0.05), train_dataset=train).train()
    masked_acc = accuracy(model, test)
    report = torch_slt.report(model)
    unchanged = all(torch.equal(module.weight_orig, frozen[f"{name}.weight"])
                    for name, module, _ in torch_slt.gated_tensors(model))

    # 3. A standard checkpoint, loaded by the unmodified class.
    torch_slt.finalize(model)
    model.save_pretrained(workdir / "masked")
    reloaded, info = ViTForImageClassification.from_pretrained(workdir / "masked", output_loading_info=True)
    clean = not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
    x = test[0][:16]
    with torch.no_grad():
        matches = clean and torch.equal(reloaded.eval()(pixel_values=x).logits, model.eval()(pixel_values=x).logits)

    result = {"dense_accuracy": round(dense_acc, 4), "masked_accuracy": round(masked_acc, 4),
              "sparsity": round(report.sparsity, 4), "kept": report.kept, "total": report.total,
              "frozen_weights_unchanged": unchanged, "reload_matches": bool(matches),
              "checkpoint": str(workdir / "masked")}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
