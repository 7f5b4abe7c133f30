"""Classifier builders (small-input stems, heads, pretrained handling) and FiLM noise conditioning."""

import pytest
import torch
from diffusers import DDPMScheduler

from latentgap.errors import UserError
from latentgap.models import CLASSIFIERS, NoiseConditioned, NoiseSchedule, create_classifier, plan_strides

TINY_CONVNEXT = dict(dims=(8, 16, 16, 32), depths=(1, 1, 1, 1))


def test_plan_strides_hand_values():
    # ConvNeXt: standard /32 where the last stage keeps >= 1x1, lower stem stride only as needed
    assert plan_strides("convnext", 224) == (4, 3)
    assert plan_strides("convnext", 32) == (4, 3)
    assert plan_strides("convnext", 16) == (2, 3)
    assert plan_strides("convnext", 8) == (1, 3)
    assert plan_strides("convnext", 4) == (1, 2)
    # ResNet: the stem output stays >= 14 px (28 px images -> stride 2, no max-pool)
    assert plan_strides("resnet", 224) == (4, 3)
    assert plan_strides("resnet", 28) == (2, 3)


def test_resnet_stem_stride_option_gives_medmnist_geometry():
    """stem_stride=1 at 28 px: no max-pool, stride-1 conv1 (MedMNIST v2's ResNet-18), the last stage at 4x4 instead
    of the rule's 2x2; other models and strides are refused in one line."""
    from latentgap.errors import UserError

    kw = dict(in_chans=1, num_classes=2, input_size=28, pretrained=False)
    rule, med = create_classifier("resnet18", **kw), create_classifier("resnet18", stem_stride=1, **kw)
    x = torch.randn(2, 1, 28, 28)
    assert rule.forward_features(x).shape[-2:] == (2, 2) and rule.build_info["stem_stride"] == 2
    assert med.forward_features(x).shape[-2:] == (4, 4) and med.build_info["stem_stride"] == 1
    assert med.backbone.conv1.stride == (1, 1) and isinstance(med.backbone.maxpool, torch.nn.Identity)
    big = create_classifier("resnet18", in_chans=3, num_classes=2, input_size=224, pretrained=False, stem_stride=4)
    assert big.backbone.conv1.stride == (2, 2) and not isinstance(big.backbone.maxpool, torch.nn.Identity)
    for name, stride in (("convnext_atto", 1), ("resnet18", 3)):
        with pytest.raises(UserError, match="only ResNets take a stem stride, and only 1, 2 or 4"):
            create_classifier(name, stem_stride=stride, **kw)


@pytest.mark.parametrize("side, final", [(4, 1), (8, 1), (16, 1), (64, 2)])
def test_convnext_stem_handles_small_latents(side, final):
    torch.manual_seed(0)
    m = create_classifier("convnext_atto", in_chans=32, num_classes=3, input_size=side, pretrained=False, **TINY_CONVNEXT)
    x = torch.randn(2, 32, side, side, requires_grad=True)
    f = m.forward_features(x)
    assert f.shape == (2, 32, final, final)
    out = m.forward_head(f)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_convnext_tiny_keeps_standard_geometry_at_224():
    m = create_classifier("convnext_tiny", in_chans=4, num_classes=2, input_size=224, pretrained=False)
    assert m.backbone.stem[0].stride == (4, 4) and m.build_info["stem_stride"] == 4
    assert m.backbone.stem[0].in_channels == 4


def test_resnet_28px_grey_and_cosine_head():
    m = create_classifier("resnet18", in_chans=1, num_classes=2, input_size=28, pretrained=False,
                          cosine_head=True, scale=30.0)
    assert m.build_info["stem_stride"] == 2
    f = m.forward_features(torch.rand(3, 1, 28, 28))
    assert f.shape[-2:] == (2, 2)
    logits = m.forward_head(f)
    assert logits.shape == (3, 2) and (logits.abs() <= 30.0 + 1e-4).all()  # s * cosine


def test_unknown_model_is_user_error():
    with pytest.raises(UserError, match="unknown classifier 'vgg'"):
        create_classifier("vgg", 3, 2, 32)
    assert {"resnet50", "convnext_tiny", "resnet18", "convnext_atto"} <= set(CLASSIFIERS.names())


def test_offline_auto_falls_back_and_records_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("latentgap.models.classifiers._cached_hub_file", lambda name: None)
    m = create_classifier("resnet18", 3, 2, 32, pretrained="auto")
    assert m.build_info["pretrained"] is False and "offline" in m.build_info["pretrained_reason"]
    with pytest.raises(UserError, match="not available"):
        create_classifier("resnet18", 3, 2, 32, pretrained=True)


def test_local_weights_file_is_loaded(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    ref = timm.create_model("resnet18", num_classes=1000)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    m = create_classifier("resnet18", 3, 5, 64, pretrained=str(path))
    assert m.build_info["pretrained"] is True
    assert torch.equal(m.backbone.conv1.weight, ref.conv1.weight)
    assert torch.equal(m.backbone.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    with pytest.raises(UserError, match="does not exist"):
        create_classifier("resnet18", 3, 5, 64, pretrained=str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("side", [4, 8, 32])
def test_film_at_init_equals_backbone_exactly(side):
    torch.manual_seed(0)
    base = create_classifier("convnext_atto", 16, 4, side, pretrained=False, **TINY_CONVNEXT).eval()
    cond = NoiseConditioned(base, embed_dim=32).eval()
    x = torch.randn(5, 16, side, side)
    with torch.no_grad():
        plain = base(x)
        for sigma in (torch.zeros(5), torch.rand(5), torch.ones(5)):
            assert torch.equal(cond(x, sigma), plain)
        # once FiLM is trained it must actually modulate (so the equality above is not vacuous)
        torch.nn.init.normal_(cond.film[0].weight, std=0.5)
        assert not torch.allclose(cond(x, torch.rand(5)), plain)


def test_noise_conditioned_rejects_resnet():
    with pytest.raises(ValueError, match="ConvNeXt"):
        NoiseConditioned(create_classifier("resnet18", 3, 2, 32, pretrained=False))


def test_noise_schedule_matches_diffusers_and_forward_process():
    s = NoiseSchedule(1000, "scaled_linear", 0.00085, 0.012)
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    t = torch.tensor([0, 10, 500, 999])
    abar = ref.alphas_cumprod[t]
    z, eps = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    want = abar.sqrt().view(-1, 1, 1, 1) * z + (1 - abar).sqrt().view(-1, 1, 1, 1) * eps
    assert torch.allclose(s.q_sample(z, t, eps), want, atol=1e-6)
    assert torch.allclose(s.noise_level(t), (1 - abar).sqrt(), atol=1e-7)
    clean = torch.full((4,), -1)
    assert torch.equal(s.q_sample(z, clean, eps), z) and torch.equal(s.noise_level(clean), torch.zeros(4))
    assert s.quartile(torch.tensor([-1, 0, 249, 250, 999])).tolist() == [0, 0, 0, 1, 3]
    g = torch.Generator().manual_seed(0)
    draws = s.sample_timesteps(4000, g, clean_fraction=0.25, max_fraction=0.5)
    assert draws.max() < 500 and abs(float((draws == -1).float().mean()) - 0.25) < 0.03


def test_channels_last_policy_follows_the_measurements():
    """benchmarks/channels_last.md: CUDA always; CPU for ConvNeXt and ResNet-50, not ResNet-18 or MPS."""
    from latentgap.device import prefers_channels_last

    cpu = torch.device("cpu")
    assert prefers_channels_last(cpu, "convnext_tiny") and prefers_channels_last(cpu, "resnet50")
    assert not prefers_channels_last(cpu, "resnet18") and not prefers_channels_last(cpu, None)
    assert prefers_channels_last(torch.device("cuda"), "resnet18")
    assert not prefers_channels_last(torch.device("mps"), "convnext_tiny")


def test_pretrained_image_classifiers_normalise_inputs_with_the_weights_statistics(tmp_path):
    """With pretrained (ImageNet) weights, images in [0, 1] are normalised with the weights' mean/std inside
    the model (saved in its state dict); latents and random-init models see their inputs unchanged."""
    import timm
    from safetensors.torch import save_file

    weights = tmp_path / "r18.safetensors"
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(weights))
    rgb = create_classifier("resnet18", 3, 2, 32, pretrained=str(weights))
    assert rgb.build_info["pretrained"] is True
    assert torch.allclose(rgb.input_mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert torch.allclose(rgb.input_std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    grey = create_classifier("resnet18", 1, 2, 32, pretrained=str(weights))
    assert torch.allclose(grey.input_mean.flatten(), torch.tensor([(0.485 + 0.456 + 0.406) / 3]))
    x = torch.rand(2, 3, 32, 32)
    rgb.eval()
    want = rgb.forward_head(rgb.backbone.forward_features((x - rgb.input_mean) / rgb.input_std))
    assert torch.allclose(rgb(x), want, atol=1e-6)
    assert "input_mean" in rgb.state_dict()  # a run's checkpoint carries the normalisation back
    latent = create_classifier("resnet18", 3, 2, 32, pretrained=str(weights), image_input=False)
    plain = create_classifier("resnet18", 3, 2, 32, pretrained=False)
    for m in (latent, plain):
        assert torch.equal(m.input_mean, torch.zeros(1, 3, 1, 1)) and torch.equal(m.input_std, torch.ones(1, 3, 1, 1))
    plain.load_state_dict(rgb.state_dict())  # a run rebuilt without the weights file (load_run) takes them back
    assert torch.equal(plain.input_mean, rgb.input_mean)
