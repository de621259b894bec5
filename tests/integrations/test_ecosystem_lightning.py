"""The Lightning callback: gates at setup, optimizer check, sparsity logging, finalize at the end."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torch_slt

L = pytest.importorskip("lightning.pytorch")
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*")
from torch_slt.integrations.lightning import SLTCallback  # noqa: E402


class Net(L.LightningModule):
    def __init__(self, optimize_gates: bool = True) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        self.optimize_gates = optimize_gates

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y) + torch_slt.penalty(self)

    def configure_optimizers(self):
        params = torch_slt.mask_parameters(self) if self.optimize_gates else [self.net[0].bias]
        return torch.optim.Adam(params, lr=0.1)


def loader():
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g))
    return torch.utils.data.DataLoader(data, batch_size=8)


def trainer(callback, **kw):
    return L.Trainer(max_steps=4, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                     callbacks=[callback], **kw)


def test_callback_gates_trains_logs_and_finalizes():
    module = Net()
    start = {k: v.clone() for k, v in module.state_dict().items()}
    seen = {}

    class Spy(L.Callback):
        def on_train_end(self, trainer, pl_module):
            seen["mu"] = {n: p.detach().clone() for n, p in torch_slt.named_mask_parameters(pl_module)}

    t = trainer(SLTCallback("stg", lam=0.5, finalize=True))
    t.callbacks.insert(0, Spy())
    t.fit(module, loader())
    assert set(seen["mu"]) == {"net.0.weight_mu", "net.2.weight_mu"}
    assert all(not torch.equal(mu, torch.full_like(mu, 0.5)) for mu in seen["mu"].values())
    assert {"slt/sparsity", "slt/penalty"} <= set(t.callback_metrics)
    # finalized: a plain module again, weights = frozen originals times the hard mask
    assert not torch_slt.is_gated(module) and list(module.state_dict()) == list(start)
    for key in ("net.0.weight", "net.2.weight"):
        kept = module.state_dict()[key] != 0
        assert torch.equal(module.state_dict()[key][kept], start[key][kept])
    assert all(p.requires_grad for p in module.parameters())


def test_callback_refuses_an_optimizer_without_the_gates():
    with pytest.raises(ValueError, match="mask_parameters"):
        trainer(SLTCallback("stg")).fit(Net(optimize_gates=False), loader())
    with pytest.raises(torch_slt.NotGatedError, match="SLTCallback"):
        trainer(SLTCallback()).fit(Net(), loader())
    with pytest.raises(TypeError, match="lamda"):
        SLTCallback("stg", lamda=0.1)


class BNNet(Net):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


class ValidatedBNNet(BNNet):
    def validation_step(self, batch, batch_idx):
        return None   # the hook order is what is tested, not the metric


def test_callback_recalibrates_stale_batchnorm_before_validation_and_at_train_end():
    from torch_slt.core.batchnorm import stale_batchnorm

    module = ValidatedBNNet()
    stale_at_validation = []

    class Spy(L.Callback):
        def on_validation_start(self, trainer, pl_module):
            if not trainer.sanity_checking:
                stale_at_validation.append(stale_batchnorm(pl_module))

    t = L.Trainer(max_steps=8, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                  callbacks=[SLTCallback("stg", sparsity=0.5), Spy()])   # Spy's hook runs after ours
    t.fit(module, loader(), loader())
    assert stale_at_validation == [[], []]
    assert stale_batchnorm(module) == []
    # the statistics are the hard-masked layer's, averaged over the 4 training batches of 8
    bn = module.net[1]
    with torch.no_grad():
        module.eval()
        hs = [module.net[0](x) for x, _ in loader()]
    torch.testing.assert_close(bn.running_mean, torch.stack([h.mean(0) for h in hs]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([h.var(0) for h in hs]).mean(0))


def test_callback_can_leave_batchnorm_alone_and_warns_when_the_forward_cannot_take_the_batch():
    from torch_slt.core.batchnorm import stale_batchnorm

    module = BNNet()
    t = trainer(SLTCallback("stg", sparsity=0.5, recalibrate_batchnorm=False))
    t.fit(module, loader())
    assert stale_batchnorm(module) == ["net.1"]

    class KeywordOnly(BNNet):
        def forward(self, *, inputs):
            return self.net(inputs)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self(inputs=x), y) + torch_slt.penalty(self)

    module = KeywordOnly()
    with pytest.warns(UserWarning, match="recalibrate_batchnorm"):
        trainer(SLTCallback("stg", sparsity=0.5)).fit(module, loader())
    with pytest.raises(ValueError, match="recalibration_steps=0"):
        SLTCallback("stg", recalibration_steps=0)
