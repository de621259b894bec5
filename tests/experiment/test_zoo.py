"""torch_slt.experiment.zoo: every model builds, runs, and is reproducible from its seed alone."""

import pytest
import torch

from torch_slt.core.errors import UnknownModelError
from torch_slt.experiment.zoo import MODEL_NAMES, ModelSpec, build_model, count_parameters, logits

# Small inputs and narrow widths keep this fast; resnet50 / wrn50 only build and count.
FORWARD = [("lenet300", (1, 8, 8), 1.0), ("conv2", (3, 8, 8), 0.25), ("conv4", (3, 8, 8), 0.25),
           ("conv6", (1, 8, 8), 0.25), ("resnet18", (3, 8, 8), 0.25), ("vit", (1, 8, 8), 0.25),
           ("swin", (3, 8, 8), 0.5), ("timm:test_vit", (3, 16, 16), 1.0),
           ("timm:test_resnet", (1, 16, 16), 1.0)]


def test_every_name_is_covered():
    assert {n for n, _, _ in FORWARD} | {"resnet50", "wrn50"} >= set(MODEL_NAMES)


@pytest.mark.parametrize("name,shape,width", FORWARD, ids=[f[0] for f in FORWARD])
def test_builds_and_forwards(name, shape, width):
    model = build_model(ModelSpec(name, shape, num_classes=5, width=width))
    out = logits(model.eval()(torch.randn(3, *shape)))
    assert out.shape == (3, 5)
    assert torch.isfinite(out).all()


def test_lenet300_and_conv_architectures_match_the_papers():
    mlp = build_model(ModelSpec("lenet300", (1, 28, 28), 10))
    assert [tuple(p.shape) for p in mlp.parameters()] == [(300, 784), (100, 300), (10, 100)]
    conv4 = build_model(ModelSpec("conv4", (3, 32, 32), 10))
    shapes = [tuple(p.shape) for p in conv4.parameters()]
    assert shapes[:4] == [(64, 3, 3, 3), (64, 64, 3, 3), (128, 64, 3, 3), (128, 128, 3, 3)]
    assert shapes[4:] == [(256, 8192), (256, 256), (10, 256)]  # first FC fan-in 8192, as in edge-popup
    conv6 = build_model(ModelSpec("conv6", (3, 32, 32), 10))
    assert tuple(conv6.classifier[1].weight.shape) == (256, 256 * 4 * 4)


def test_width_multiplies_hidden_widths():
    wide = build_model(ModelSpec("lenet300", (1, 8, 8), 10, width=2.0))
    assert [tuple(p.shape) for p in wide.parameters()] == [(600, 64), (200, 600), (10, 200)]
    half = build_model(ModelSpec("resnet18", (3, 32, 32), 10, width=0.5))
    assert half.conv1.out_channels == 32 and half.fc.in_features == 256


def test_resnet_stem_depends_on_input_size():
    small = build_model(ModelSpec("resnet18", (1, 32, 32), 10, width=0.25))
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1) and small.conv1.in_channels == 1
    assert isinstance(small.maxpool, torch.nn.Identity)
    large = build_model(ModelSpec("resnet18", (3, 96, 96), 10, width=0.25))
    assert large.conv1.kernel_size == (7, 7) and isinstance(large.maxpool, torch.nn.MaxPool2d)


def test_resnet50_and_wrn50_parameter_counts():
    # torchvision: resnet50 25.56M and wide_resnet50_2 68.88M parameters with 1000 classes; the CIFAR
    # stem's 3x3 conv1 has 64*3*9 weights instead of 64*3*49.
    stem_delta = 64 * 3 * (49 - 9)
    r50 = build_model(ModelSpec("resnet50", (3, 32, 32), 1000))
    assert count_parameters(r50) == 25_557_032 - stem_delta
    wrn = build_model(ModelSpec("wrn50", (3, 32, 32), 1000))
    assert count_parameters(wrn) == 68_883_240 - stem_delta


def test_vit_and_swin_are_sized_for_the_input():
    vit = build_model(ModelSpec("vit", (3, 32, 32), 10))
    assert vit.config.image_size == 32 and vit.config.patch_size == 4 and vit.config.num_channels == 3
    assert vit.config.hidden_size == 192
    swin = build_model(ModelSpec("swin", (1, 8, 8), 10))
    assert swin.config.patch_size == 2 and swin.config.window_size == 2 and swin.config.num_channels == 1


@pytest.mark.parametrize("name", ["lenet300", "resnet18", "vit"])
def test_deterministic_from_seed_and_global_rng_untouched(name):
    spec = ModelSpec(name, (3, 8, 8), 4, width=0.25, seed=7)
    before = torch.get_rng_state()
    a = build_model(spec)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(12345)  # a different global state must not matter
    b = build_model(spec)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    c = build_model(ModelSpec(name, (3, 8, 8), 4, width=0.25, seed=8))
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_init_and_density_reach_the_weights():
    model = build_model(ModelSpec("lenet300", (1, 8, 8), 10, init="signed-constant", density=0.5))
    w = model[1].weight
    assert torch.allclose(w.abs(), torch.full_like(w, (2.0 / (64 * 0.5)) ** 0.5))


def test_spec_round_trip_and_validation():
    spec = ModelSpec("timm:test_vit", [3, 16, 16], 10, init="scaled-kaiming-normal", density=0.3, seed=2)
    assert spec.in_shape == (3, 16, 16)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown keys"):
        ModelSpec.from_dict({**spec.to_dict(), "depth": 3})
    with pytest.raises(ValueError, match="in_shape"):
        ModelSpec("lenet300", (8, 8), 10)
    with pytest.raises(ValueError, match="KEPT"):
        ModelSpec("lenet300", (1, 8, 8), 10, density=0)
    with pytest.raises(ValueError, match="init"):
        ModelSpec("lenet300", (1, 8, 8), 10, init="xavier")


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UnknownModelError, match="lenet300, conv2.*timm:NAME") as info:
        ModelSpec("resnet19", (3, 32, 32), 10)
    assert isinstance(info.value, ValueError)
    with pytest.raises(UnknownModelError, match="did you mean.*vit_tiny_patch16_224"):
        build_model(ModelSpec("timm:vit_tiny_patch16_22", (3, 32, 32), 10))


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 8x8"):
        build_model(ModelSpec("conv6", (3, 4, 4), 10))
