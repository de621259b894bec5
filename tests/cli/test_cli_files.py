"""Run folders and files that lie (issue 20): another command's folder, unreadable configs, damaged
checkpoints, masks and tickets, a full disk, a killed output staging, a --method-arg that overrides a
flag. Every case exits 2 with one message naming the file or flag, no traceback; a resumable run still
ends with the uninterrupted run's ticket."""

from __future__ import annotations

import errno
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import torch_slt
from torch_slt import cli
from torch_slt.cli import output

FIND = ["find", "--epochs", "2", "--batch-size", "128", "--width", "0.25", "--quiet", "--device", "cpu"]
IMP = ["imp", "--rounds", "1", "--epochs", "2", "--batch-size", "128", "--width", "0.25", "--quiet",
       "--device", "cpu"]
#: What `imp` writes once its rounds are done: deleting them gives the folder of a run killed after its
#: last round's row (the state of the issue's kill -9).
IMP_OUTPUTS = ("report.json", "imp.md", "imp.png", "ticket.safetensors")


def _run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _refused(argv, capsys, *needles):
    rc, _, err = _run(argv, capsys)
    assert rc == 2, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _tensors_equal(a, b):
    ta, tb = load_file(str(a)), load_file(str(b))
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.fixture(scope="module")
def find_done(tmp_path_factory):
    out = tmp_path_factory.mktemp("find") / "run"
    assert cli.main([*FIND, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def imp_done(tmp_path_factory):
    out = tmp_path_factory.mktemp("imp") / "run"
    assert cli.main([*IMP, "--out", str(out)]) == 0
    return out


def _stopped(argv, out, capsys):
    rc, _, err = _run([*argv, "--out", out, "--stop-after", "1"], capsys)
    assert rc == 0 and "--resume" in err, err
    return out


def _copy(folder, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def _imp_killed_after_the_rounds(imp_done, tmp_path):
    out = _copy(imp_done, tmp_path)
    for name in IMP_OUTPUTS:
        (out / name).unlink()
    return out


# ------------------------------------------------------------------------------ item 1: IMP outputs
class Killed(BaseException):
    """A kill: no `except Exception` in the command catches it."""


@pytest.mark.parametrize("stage", ["after the last row", "while plotting", "while writing report.json"])
def test_imp_killed_after_its_rounds_resumes_to_the_uninterrupted_ticket(stage, imp_done, tmp_path, capsys,
                                                                         monkeypatch):
    """Before: the resume skipped every finished round and wrote rewind weights x mask (an untrained
    ticket) while report.json claimed the trained accuracy."""
    if stage == "after the last row":
        out = _imp_killed_after_the_rounds(imp_done, tmp_path)
    else:
        out = tmp_path / "run"
        with monkeypatch.context() as m:
            if stage == "while plotting":
                m.setattr("torch_slt.lottery.plot_imp", lambda *a, **k: (_ for _ in ()).throw(Killed()))
            else:
                real = output.write_json
                m.setattr(output, "write_json", lambda path, data: (_ for _ in ()).throw(Killed())
                          if path.name == "report.json" else real(path, data))
            with pytest.raises(Killed):
                cli.main([*IMP, "--out", str(out)])
        capsys.readouterr()
        assert not (out / "report.json").exists()
        (out / ".staging-killed").mkdir()          # what SIGKILL leaves: the staging folder itself
        (out / ".staging-killed" / "ticket.safetensors").write_bytes(b"half")
    rc, stdout, err = _run(["imp", "--out", out, "--resume", "--quiet"], capsys)
    assert rc == 0, err
    assert _tensors_equal(out / "ticket.safetensors", imp_done / "ticket.safetensors")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]  # noqa: E731
    assert strip(json.loads((out / "report.json").read_text())["rows"]) == \
        strip(json.loads((imp_done / "report.json").read_text())["rows"])
    assert not list(out.glob(".staging-*")) and not list(out.glob("*.tmp"))


# ------------------------------------------------------------------------------ item 3: whose folder
def test_resume_refuses_a_folder_another_command_started(tmp_path, capsys):
    """Before: find --resume on an imp folder ran a stg find with imp's settings, imp --resume on a find
    folder ran IMP and orphaned the checkpoint; the original run was then refused."""
    find_dir = _stopped(FIND, tmp_path / "find", capsys)
    imp_dir = _stopped(IMP, tmp_path / "imp", capsys)
    before = {d: _snapshot(d) for d in (find_dir, imp_dir)}
    _refused(["imp", "--out", find_dir, "--resume", "--quiet"], capsys, "holds a 'find' run, not an imp run",
             f"torch-slt find --out {find_dir} --resume")
    _refused(["find", "--out", imp_dir, "--resume", "--quiet"], capsys, "holds an 'imp' run, not a find run",
             f"torch-slt imp --out {imp_dir} --resume")
    _refused(["sweep", "--out", imp_dir, "--resume", "--quiet"], capsys,
             "holds an 'imp' run, not a sweep run")
    assert {d: _snapshot(d) for d in (find_dir, imp_dir)} == before
    rc, _, err = _run(["find", "--out", find_dir, "--resume", "--quiet"], capsys)   # the owner still can
    assert rc == 0, err


@pytest.mark.parametrize("command", ["find", "imp", "sweep"])
@pytest.mark.parametrize("content, needle", [("{not json", "config.json is not readable JSON"),
                                             ("[1, 2]", "does not hold a run's 'command' and 'settings'"),
                                             ('{"settings": {}}', "does not hold a run's 'command'")])
def test_resume_refuses_a_config_it_cannot_read_naming_the_file(command, content, needle, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(content)
    (out / "checkpoint.pt").write_bytes(b"x")
    _refused([command, "--out", out, "--resume", "--quiet"], capsys, needle, str(out / "config.json"))
    assert (out / "config.json").read_text() == content


# ------------------------------------------------------------------------------ damaged run files
def _garbage(path):
    path.write_bytes(b"not a checkpoint")


def _epoch_99(path):
    ckpt = torch.load(path, weights_only=True)
    ckpt["epoch"] = 99
    torch.save(ckpt, path)


def _no_history(path):
    ckpt = torch.load(path, weights_only=True)
    del ckpt["history"]
    torch.save(ckpt, path)


def _other_model(path):
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"] = {"w": torch.zeros(2)}
    torch.save(ckpt, path)


@pytest.mark.parametrize("damage, needle", [(_garbage, "cannot read the checkpoint"),
                                            (_epoch_99, "says epoch 99 of a 2-epoch run with 1 epochs"),
                                            (_no_history, "lacks history"),
                                            (_other_model, "does not fit this model")])
def test_find_resume_with_a_damaged_checkpoint_names_it(damage, needle, tmp_path, capsys):
    """Before: a traceback from torch, or (epoch=99) "stopped after epoch 1 of 2; continue with
    --resume", which never ends."""
    out = _stopped(FIND, tmp_path / "run", capsys)
    damage(out / "checkpoint.pt")
    _refused(["find", "--out", out, "--resume", "--quiet"], capsys, needle, str(out / "checkpoint.pt"),
             "delete it to start over")
    assert not (out / "report.json").exists()


def _empty_mask(out):
    save_file({}, str(out / "masks" / "round_01.safetensors"))
    return "masks/round_01.safetensors does not hold round 1's mask"


def _zero_byte_mask(out):
    (out / "masks" / "round_01.safetensors").write_bytes(b"")
    return "cannot read"


def _truncated_rewind(out):
    data = (out / "rewind.pt").read_bytes()
    (out / "rewind.pt").write_bytes(data[: len(data) // 2])
    return "rewind.pt"


def _corrupt_imp_json(out):
    (out / "imp.json").write_text('{"imp": ')
    return "imp.json"


def _corrupt_rounds_json(out):
    (out / "rounds.json").write_text("[{")
    return "rounds.json"


def _foreign_rows(out):
    (out / "rounds.json").write_text('[{"round": 0}]')
    return "rounds.json: a row does not fit"


@pytest.mark.parametrize("damage", [_empty_mask, _zero_byte_mask, _truncated_rewind, _corrupt_imp_json,
                                    _corrupt_rounds_json, _foreign_rows])
def test_imp_resume_with_a_damaged_run_file_names_it(damage, imp_done, tmp_path, capsys):
    """Before: an empty mask trained round 1 with round 0's mask, silently; the others were tracebacks
    from safetensors, torch or json."""
    out = _imp_killed_after_the_rounds(imp_done, tmp_path)
    needle = damage(out)
    _refused(["imp", "--out", out, "--resume", "--quiet"], capsys, needle)
    assert not (out / "report.json").exists()


def test_imp_resume_with_a_damaged_round_checkpoint_names_it(tmp_path, capsys):
    out = _stopped(IMP, tmp_path / "run", capsys)
    (out / "checkpoint-r00-ticket.pt").write_bytes(b"garbage")
    _refused(["imp", "--out", out, "--resume", "--quiet"], capsys, "cannot read the checkpoint",
             "checkpoint-r00-ticket.pt")


# ------------------------------------------------------------------------------ a full disk, a kill
def _disk_full_after(bytes_written=b"partial"):
    def write(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(bytes_written)
        raise OSError(errno.ENOSPC, "No space left on device", str(f))
    return write


@pytest.mark.parametrize("argv, name", [(FIND, "checkpoint.pt"), (IMP, "rewind.pt")])
def test_a_full_disk_while_writing_a_checkpoint_leaves_no_tmp_and_says_to_resume(argv, name, tmp_path,
                                                                                  capsys, monkeypatch):
    """Before: a traceback, and checkpoint.pt.tmp left next to the last good checkpoint."""
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(torch, "save", _disk_full_after())
        _refused([*argv, "--out", out], capsys, "No space left on device", f"{name}.tmp",
                 "continue with --resume")
    assert not list(out.rglob("*.tmp")) and not (out / name).exists()
    rc, _, err = _run([argv[0], "--out", out, "--resume", "--quiet"], capsys)
    assert rc == 0, err


def test_a_full_disk_while_writing_the_outputs_leaves_no_staging_and_resumes(find_done, tmp_path, capsys,
                                                                              monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        def full(path, *a, **k):
            path.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        m.setattr(output, "save_state_dict", full)
        _refused([*FIND, "--out", out], capsys, "No space left on device")
    assert not list(out.glob(".staging-*")) and not (out / "report.json").exists()
    assert (out / "checkpoint.pt").exists()      # the training is kept: the resume only writes
    rc, _, err = _run(["find", "--out", out, "--resume", "--quiet"], capsys)
    assert rc == 0, err
    assert _tensors_equal(out / "ticket.safetensors", find_done / "ticket.safetensors")


def test_a_killed_output_staging_is_cleared_by_the_resume(find_done, tmp_path, capsys):
    """SIGKILL while the outputs were staged leaves .staging-XXXX/ and *.tmp files; before, they stayed in
    the finished folder forever."""
    out = _stopped(FIND, tmp_path / "run", capsys)
    (out / ".staging-abc123").mkdir()
    (out / ".staging-abc123" / "ticket.safetensors").write_bytes(b"half")
    (out / "report.json.tmp").write_text("{")
    (out / "checkpoint.pt.tmp").write_bytes(b"half")
    rc, _, err = _run(["find", "--out", out, "--resume", "--quiet"], capsys)
    assert rc == 0, err
    assert {p.name for p in out.iterdir()} == {p.name for p in find_done.iterdir()}
    assert _tensors_equal(out / "ticket.safetensors", find_done / "ticket.safetensors")


def test_staging_moves_the_last_file_after_removing_the_staging_folder(tmp_path, monkeypatch):
    """A kill between the last move and the clean-up cannot leave a staging folder in a finished run:
    the folder is gone before report.json appears."""
    seen = []
    real = output.os.replace

    def replace(src, dst):
        if str(dst).endswith("report.json"):
            seen.append(sorted(p.name for p in tmp_path.iterdir()))
        return real(src, dst)

    monkeypatch.setattr(output.os, "replace", replace)
    with output.staged(tmp_path, last="report.json") as staging:
        (staging / "a.txt").write_text("a")
        (staging / "report.json").write_text("{}")
    assert seen == [["a.txt", "report.json.tmp"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "report.json"]


# ------------------------------------------------------------------------------ tickets and reports
def test_load_file_reads_the_cli_ticket_and_older_headers(find_done, tmp_path):
    """Before: JSONDecodeError "Extra data": the CLI wrote its version under the header key load_file
    reads as gate metadata."""
    plain = torch_slt.load_file(find_done / "ticket.safetensors")
    assert plain.keys() == load_file(str(find_done / "ticket.safetensors")).keys()
    tensors = load_file(str(find_done / "ticket.safetensors"))
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"format": "pt", "torch_slt": "0.1.0"})
    assert torch_slt.load_file(tmp_path / "old.safetensors").keys() == tensors.keys()
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata={"torch_slt": '{"1": '})
    with pytest.raises(ValueError, match=r"bad\.safetensors: the header's 'torch_slt' entry is not valid"):
        torch_slt.load_file(tmp_path / "bad.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "old.safetensors").read_bytes()[:50])
    with pytest.raises(ValueError, match=r"cut\.safetensors is not a readable safetensors file"):
        torch_slt.load_file(tmp_path / "cut.safetensors")


def _flip(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.parametrize("damage, needle", [(_flip, "checksum does not match"),
                                            (_truncate, "not a readable safetensors file"),
                                            (lambda p: p.write_bytes(b""), "not a readable safetensors")])
def test_a_damaged_compact_ticket_exits_2_in_inspect_evaluate_and_compare(damage, needle, find_done, tmp_path,
                                                                         capsys):
    """Before: a flipped byte loaded as another model; truncated or empty files were tracebacks."""
    out = _copy(find_done, tmp_path)
    ticket = out / "ticket.slt.safetensors"
    damage(ticket)
    _refused(["inspect", ticket], capsys, needle, str(ticket))
    _refused(["evaluate", out, "--metrics", "accuracy", "--quiet"], capsys, needle)
    _refused(["compare", ticket, find_done / "ticket.slt.safetensors", "--out", tmp_path / "cmp"], capsys,
             needle)
    assert not (out / "evaluation.json").exists() and not (tmp_path / "cmp").exists()


def test_inspect_an_imp_folder_prints_its_rounds(imp_done, tmp_path, capsys):
    """Before: "not a torch-slt report"."""
    rc, out, err = _run(["inspect", imp_done], capsys)
    assert rc == 0, err
    assert "# Iterative magnitude pruning" in out and "| 1 | ticket |" in out
    older = _copy(imp_done, tmp_path)           # a report.json written before it named its command
    body = json.loads((older / "report.json").read_text())
    del body["command"]
    (older / "report.json").write_text(json.dumps(body))
    rc, out2, _ = _run(["inspect", older], capsys)
    assert rc == 0 and out2 == out


# ------------------------------------------------------------------------------ item 9
@pytest.mark.parametrize("argv, needle", [
    (["find", "--lam", "2", "--method-arg", "lam=1"], "--method-arg lam=1 and --lam 2.0 both set lam"),
    (["find", "--method", "magnitude", "--sparsity", "0.5", "--method-arg", "sparsity=0.2"],
     "--method-arg sparsity=0.2 and --sparsity"),
    (["sweep", "--methods", "magnitude", "--sparsities", "0.5", "--method-arg", "sparsity=0.2"],
     "--method-arg sparsity=0.2 and --sparsity (--sparsities in a sweep) 0.5"),
])
def test_a_method_arg_that_overrides_a_flag_is_refused_naming_both(argv, needle, tmp_path, capsys):
    """Before: --lam 2 --method-arg lam=1 trained with 1 and recorded 2."""
    out = tmp_path / "run"
    _refused([*argv, "--epochs", "1", "--quiet", "--device", "cpu", "--out", out], capsys, needle)
    assert not out.exists()


def test_damaged_reports_and_sweep_cells_name_the_file(find_done, tmp_path, capsys):
    """A report.json missing its entries (inspect, evaluate), a sweep cell row that is not JSON
    (sweep --resume): exit 2 naming the file, not a KeyError or JSONDecodeError traceback."""
    out = _copy(find_done, tmp_path)
    body = json.loads((out / "report.json").read_text())
    del body["sparsity"]
    (out / "report.json").write_text(json.dumps(body))
    _refused(["inspect", out], capsys, str(out / "report.json"), "the report is damaged")
    _refused(["evaluate", out, "--metrics", "accuracy", "--quiet"], capsys, str(out / "report.json"))
    sweep = tmp_path / "sweep"
    argv = ["sweep", "--methods", "magnitude", "--sparsities", "0.5", "--no-dense", "--epochs", "1",
            "--width", "0.25", "--quiet", "--device", "cpu", "--out", sweep]
    rc, _, err = _run(argv, capsys)
    assert rc == 0, err
    (sweep / "sweep.json").unlink()           # killed before the sweep's own outputs
    (sweep / "cells" / "magnitude-0.5.json").write_text("{")
    _refused([*argv, "--resume"], capsys, "magnitude-0.5.json", "delete it to train that cell again")


def test_inspect_says_the_checksum_was_verified(find_done, capsys):
    rc, out, err = _run(["inspect", find_done / "ticket.slt.safetensors"], capsys)
    assert rc == 0 and "Checksum verified" in out, err
    rc, out, _ = _run(["inspect", find_done / "ticket.slt.safetensors", "--json"], capsys)
    assert rc == 0 and json.loads(out)["checksum_verified"] is True
