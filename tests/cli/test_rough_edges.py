"""The newcomer's rough edges of issue 22, item 5: each one has its test here."""

import json

import pytest

from torch_slt import cli

QUICK = ["--epochs", "1", "--batch-size", "256", "--quiet", "--device", "cpu", "--width", "0.25"]


def _run(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _exit(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("command", ["find", "sweep"])
def test_a_model_that_cannot_run_on_the_data_is_refused_before_anything_is_written(command, tmp_path, capsys):
    pytest.importorskip("timm")
    out = tmp_path / "run"
    extra = ["--methods", "stg", "--sparsities", "0.5"] if command == "sweep" else []
    rc, stdout, err = _run([command, "--model", "timm:vit_tiny_patch16_224", *extra, "--epochs", "1", "--quiet",
                            "--device", "cpu", "--out", str(out)], capsys)
    assert rc == 2 and "Traceback" not in err
    assert "--model timm:vit_tiny_patch16_224 cannot run on --dataset digits (inputs (1, 8, 8))" in err
    assert "Kernel size" in err and "Nothing was written" in err
    assert not out.exists()          # the rerun with another --model is not blocked


@pytest.mark.parametrize("argv, hint", [
    (["find", "--sparsty", "0.9"], "did you mean --sparsity?"),
    (["sweep", "--sparsity", "0.9"], "did you mean --sparsities?"),   # was silently --sparsities
    (["find", "--epoch", "2"], "did you mean --epochs?"),             # abbreviations are refused
    (["find", "--bach-size=32"], "did you mean --batch-size?"),
    (["compare", "a", "b", "--lin"], "did you mean --line?"),
])
def test_a_mistyped_flag_gets_a_did_you_mean(argv, hint, capsys):
    code, err = _exit(argv, capsys)
    assert code == 2 and f"torch-slt {argv[0]}: error: unrecognized arguments" in err and hint in err


def test_a_flag_far_from_any_gets_no_wrong_guess(capsys):
    code, err = _exit(["find", "--zzzzzz", "1"], capsys)
    assert code == 2 and "unrecognized arguments: --zzzzzz 1" in err and "did you mean" not in err


def test_a_flag_the_method_does_not_take_lists_the_flags_it_does(tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, err = _run(["find", "--method", "edgepopup", "--sparsity", "0.5", "--lam", "0.1", *QUICK,
                       "--out", str(out)], capsys)
    assert rc == 2 and not out.exists()
    assert ("--lam does not apply to method 'edgepopup'; it takes --sparsity, --method-arg scope=VALUE, "
            "--method-arg amount=VALUE.") in err


def test_compare_warns_when_the_tickets_come_from_different_random_networks(tmp_path, capsys):
    runs = {}
    for name, seed, method in (("a", "0", "magnitude"), ("b", "0", "random"), ("c", "1", "magnitude")):
        runs[name] = tmp_path / name
        rc, _, err = _run(["find", "--method", method, "--sparsity", "0.5", "--seed", seed, *QUICK,
                           "--out", str(runs[name])], capsys)
        assert rc == 0, err
    rc, stdout, err = _run(["compare", str(runs["a"]), str(runs["b"]), "--out", str(tmp_path / "same")], capsys)
    assert rc == 0 and "warning" not in err and "Warning" not in stdout
    assert json.loads((tmp_path / "same" / "compare.json").read_text())["same_network"] is True

    rc, stdout, err = _run(["compare", str(runs["a"]), str(runs["c"]), "--out", str(tmp_path / "mixed")], capsys)
    assert rc == 0
    assert "torch-slt compare: warning: the tickets come from 2 different random networks" in err
    assert "a: seed 0, init kaiming-normal" in err and "c: seed 1, init kaiming-normal" in err
    assert (tmp_path / "mixed" / "compare.md").read_text().startswith("**Warning: the tickets come from 2")
    assert json.loads((tmp_path / "mixed" / "compare.json").read_text())["same_network"] is False
