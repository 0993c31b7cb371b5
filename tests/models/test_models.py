import pytest
import torch
from layer_gradients import output_and_gradients

from unetkit.models import MODELS, DumbNet, UNet, create_model, model_class


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_default_unet_has_the_papers_31_million_parameters():
    assert round(parameters(UNet(1, 2)) / 1e6, 1) == 31.0


def test_bilinear_unet_halves_the_bottleneck_like_milesial():
    # milesial/Pytorch-UNet's bilinear UNet(3 channels, 2 classes) has 17.26M parameters
    assert round(parameters(UNet(3, 2, upsampling="bilinear")) / 1e6, 2) == 17.26


@pytest.mark.parametrize("upsampling", ["transposed", "bilinear"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [(32, 32), (37, 51), (17, 64)])
def test_unet_output_matches_any_input_size(upsampling, depth, size):
    model = UNet(2, 3, base_channels=4, depth=depth, upsampling=upsampling).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 2, *size))
    assert out.shape == (1, 3, *size)


def test_transposed_and_bilinear_use_their_own_upsampling_layer():
    transposed = UNet(1, 1, base_channels=4, depth=2, upsampling="transposed")
    bilinear = UNet(1, 1, base_channels=4, depth=2, upsampling="bilinear")
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in transposed.modules())
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in bilinear.modules())
    assert any(isinstance(m, torch.nn.Upsample) and m.mode == "bilinear" for m in bilinear.modules())


def test_dumbnet_is_one_level_down_and_up():
    model = DumbNet(3, 2, width=8).eval()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2), (1, 1), (1, 1)]
    assert convs[-1].kernel_size == (1, 1)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 31, 20)).shape == (2, 2, 31, 20)


def test_registry_builds_by_name_and_rejects_unknown_names():
    assert isinstance(create_model("unet", in_channels=1, num_classes=1, base_channels=4), UNet)
    assert isinstance(create_model("dumbnet", in_channels=1, num_classes=1), DumbNet)
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet")


def buildable(name: str) -> str:
    """`name`, skipped where its optional package is missing (encoder-unet needs timm: the
    `encoders` extra, tested in CI's environment of its own, .ci/encoders)."""
    if name == "encoder-unet":
        from unetkit.errors import UnetkitError
        from unetkit.models.encoder_unet import import_timm

        try:
            import_timm()
        except UnetkitError as err:
            pytest.skip(str(err))
    return name


def small(name: str) -> tuple[torch.nn.Module, dict]:
    """A registered model built small, as training builds it: from options, 3 channels in, 4 classes."""
    from types import SimpleNamespace

    cls = model_class(buildable(name))
    options = SimpleNamespace(base_channels=4, depth=2, upsampling="bilinear", encoder="resnet18")
    args = cls.arguments(options, 3, 4)
    return create_model(name, **args), args


# Every test below runs on every registered model (timm's tests/test_models.py): a new model is
# tested by registering it.
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_keeps_the_input_size_from_its_minimum_up(name):
    model, args = small(name)
    side = model_class(name).min_input_size(args)
    with torch.no_grad():
        for size in ((side, side), (side + 5, 2 * side + 3), (3 * side, side + 1)):
            assert model.eval()(torch.randn(2, 3, *size)).shape == (2, 4, *size), size


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_learns_and_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model, args = small(name)
    side = 2 * model_class(name).min_input_size(args)
    # a label for each quarter of the side: the same task at any size (per-pixel random labels ask a
    # model at 128 px to memorise 64 times as many as one at 16 px)
    images = torch.randn(2, 3, side, side)
    target = torch.randint(0, 4, (2, 4, 4)).repeat_interleave(side // 4, 1).repeat_interleave(side // 4, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses, learning = [], set()
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model.train()(images), target)
        optimizer.zero_grad()
        loss.backward()
        # by the second step: timm's residual blocks start with their last BN at zero (zero_init_last)
        learning |= {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        if len(losses) == 1:
            assert learning == {name for name, _ in model.named_parameters()}
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_says_the_width_of_its_first_level(name):
    model, args = small(name)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert (first.in_channels, first.out_channels) == (3, model_class(name).probe_channels(args))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_folding_batchnorm_into_convs_keeps_the_outputs(name):
    import copy

    from unetkit.models import fuse_conv_bn

    model, _ = small(name)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    model.eval()
    fused = fuse_conv_bn(copy.deepcopy(model))
    ours = [m for name, m in fused.named_modules() if not name.startswith("encoder")]  # timm's encoder keeps its BN
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ours)
    x = torch.randn(2, 3, 24, 28)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="eval"):
        fuse_conv_bn(model.train())


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_convolution_and_relu_fused_keep_the_outputs(name, dtype):
    """blocks.fused_for_cpu against the folded model it came from: ConvReLU (oneDNN's convolution
    with a ReLU post-op), SplitConvReLU for the first of each Up block (no concatenation) and
    MaxPool2x2 (no indices)."""
    import copy

    from unetkit.models import blocks

    model, _ = small(name)
    folded = blocks.fuse_conv_bn(model.eval())
    fused = blocks.fused_for_cpu(copy.deepcopy(folded), dtype)

    def count(module: torch.nn.Module, kind: type) -> int:
        return sum(isinstance(m, kind) for m in module.modules())

    ups = count(folded, blocks.Up)
    assert count(fused, blocks.SplitConvReLU) == ups
    assert count(fused, blocks.ConvReLU) == count(folded, blocks.ConvBNReLU) - ups
    assert count(fused, blocks.MaxPool2x2) == count(folded, blocks.Down)
    assert count(fused, blocks.ConvBNReLU) == 0
    x = torch.randn(2, 3, 24, 28).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        ours, theirs = fused(x).float(), folded(x).float()
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2 * float(theirs.abs().max())
    torch.testing.assert_close(ours, theirs, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_max_pool_without_indices_gives_the_max_pool(dtype, layout):
    """blocks.MaxPool2x2 takes the same maxima as nn.MaxPool2d(2), odd sizes and NaN included."""
    from unetkit.models.blocks import MaxPool2x2

    x = torch.randn(3, 5, 17, 22).to(dtype).contiguous(memory_format=layout)
    x[0, 1, 4, 6] = float("nan")
    torch.testing.assert_close(MaxPool2x2()(x), torch.nn.MaxPool2d(2)(x), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_max_pool_of_relu_maps_on_the_bits_gives_the_max_pool(dtype, layout):
    """MaxPool2x2(of_relu_maps=True) takes its maxima on the int16 bits: the same as nn.MaxPool2d's
    on what a ReLU writes (zeros, ties among them, positive numbers, +inf), odd sizes included."""
    from unetkit.models.blocks import MaxPool2x2

    torch.manual_seed(0)
    x = torch.randn(3, 5, 17, 22).mul(1e4 if dtype == torch.float16 else 1e30).relu().to(dtype)
    x[0, 1, 4, 6], x[1, 0, :2, :2] = float("inf"), 0.0  # an overflow, and a window of ties at zero
    x = x.contiguous(memory_format=layout)
    assert x.isinf().any() and (x == 0).float().mean() > 0.4
    ours = MaxPool2x2(of_relu_maps=True)(x)
    assert ours.dtype == dtype and torch.equal(ours, torch.nn.MaxPool2d(2)(x))
    negatives = -torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=dtype).view(1, 1, 2, 2)  # no ReLU writes these
    assert MaxPool2x2(of_relu_maps=True)(negatives).item() == -4.0  # the bits' order was read: -4's is the largest
    assert MaxPool2x2()(negatives).item() == -1.0


def test_pools_read_bits_only_where_the_fused_relu_writes_no_sign_bit():
    """The ground MaxPool2x2(of_relu_maps=True) stands on: oneDNN's ReLU post-op (ConvReLU) writes
    +0 for negative numbers and NaN, so no number it writes has its sign bit set (asked once by
    relu_post_op_clears_signs, here checked on a larger convolution too); and fused_for_cpu reads
    bits only in bf16, where the answer is yes and every ConvBNReLU became such a ConvReLU."""
    import copy

    from unetkit.models import blocks

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    x = torch.randn(2, 4, 16, 16).contiguous(memory_format=torch.channels_last).to(torch.bfloat16)
    x[0, 0, 3, 3], x[1, 2, 8, 8] = float("nan"), -float("nan")
    out = blocks.ConvReLU(conv, torch.bfloat16)(x)
    clears = bool((out.view(torch.int16) >= 0).all()) and not out.isnan().any()
    assert (out > 0).any() and (out == 0).any() and clears == blocks.relu_post_op_clears_signs(torch.bfloat16)

    def pools_on_bits(model: torch.nn.Module) -> list[bool]:
        return [m.of_relu_maps for m in model.modules() if isinstance(m, blocks.MaxPool2x2)]

    model = UNet(3, 2, base_channels=8, depth=3).eval()
    for dtype, expected in ((torch.bfloat16, clears), (torch.float32, False)):
        assert pools_on_bits(blocks.fused_for_cpu(blocks.fuse_conv_bn(copy.deepcopy(model)), dtype)) == [expected] * 3
    unfolded = blocks.fused_for_cpu(copy.deepcopy(model), torch.bfloat16)  # no BatchNorm folded: no ConvReLU
    assert pools_on_bits(unfolded) == [False] * 3


def test_a_cpu_without_the_fused_bf16_call_keeps_pools_on_values(monkeypatch):
    """bf16 on an AVX2-only CPU: oneDNN has no fused bf16 convolution ("needs avx512bw ..."), so
    the probe answers no instead of failing, fused_for_cpu completes, and the Predictor's own
    check then keeps the model unfused."""
    import copy

    from unetkit.models import blocks

    def no_bf16_path(*args, **kwargs):
        raise RuntimeError("mkldnn_convolution: bf16 path needs the cpu support avx_ne_convert or avx512bw")

    blocks.relu_post_op_clears_signs.cache_clear()
    monkeypatch.setattr(blocks, "fused_convolution", no_bf16_path)
    try:
        model = blocks.fuse_conv_bn(UNet(1, 2, base_channels=8, depth=2).eval())
        fused = blocks.fused_for_cpu(copy.deepcopy(model), torch.bfloat16)
        assert [m.of_relu_maps for m in fused.modules() if isinstance(m, blocks.MaxPool2x2)] == [False] * 2
    finally:
        blocks.relu_post_op_clears_signs.cache_clear()  # the real answer for the tests after this one


def test_the_split_convolution_reads_a_transposed_upsampling_and_an_odd_size_like_the_concatenation():
    """SplitConvReLU's two weight slices follow the concatenation's order (skip first) whatever
    the Up block's upsampling and width, and on a size the pooling does not divide."""
    import copy

    from unetkit.models.blocks import SplitConvReLU, fuse_conv_bn, fused_for_cpu

    model = UNet(in_channels=2, num_classes=3, base_channels=6, depth=3, upsampling="transposed").eval()
    for block in model.modules():  # BatchNorm statistics that are not the identity
        if isinstance(block, torch.nn.BatchNorm2d):
            block.running_mean.uniform_(-0.5, 0.5)
            block.running_var.uniform_(0.5, 2.0)
    folded = fuse_conv_bn(model).to(memory_format=torch.channels_last)
    fused = fused_for_cpu(copy.deepcopy(folded), torch.float32)
    assert sum(isinstance(m, SplitConvReLU) for m in fused.modules()) == 3
    x = torch.randn(1, 2, 37, 45).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), folded(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_split_convolution_sums_in_place_into_the_skips_map_with_the_same_values(dtype):
    """The second half of SplitConvReLU writes over the first half's output (oneDNN's in-place
    binary post-op): the same values as the out-of-place sum, and no new activation map."""
    from unetkit.models.blocks import fused_convolution

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(10, 4, 3, padding=1)
    skip, up = (torch.randn(2, 5, 19, 23, dtype=dtype).contiguous(memory_format=torch.channels_last) for _ in "ab")
    weights = [w.to(dtype).contiguous(memory_format=torch.channels_last) for w in conv.weight.detach().split(5, 1)]
    bias = conv.bias.detach().to(dtype)
    with torch.inference_mode():
        partial = fused_convolution(skip, weights[0], None, conv, "none")
        geometry = (conv.padding, conv.stride, conv.dilation, conv.groups)
        expected = torch.ops.mkldnn._convolution_pointwise.binary(
            up, partial, weights[1], bias, *geometry, "add", 1.0, "relu", [], ""
        )
        summed = fused_convolution(up, weights[1], bias, conv, "relu", into=partial)
    assert summed.data_ptr() == partial.data_ptr()
    torch.testing.assert_close(summed, expected, rtol=0, atol=0)
    reference = torch.relu(conv.to(dtype)(torch.cat([skip, up], 1)).float())
    torch.testing.assert_close(summed.float(), reference, rtol=0.05, atol=0.05 if dtype == torch.bfloat16 else 1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_model_gives_back_the_options_it_was_built_from(name):
    """options() inverts arguments(): --init-from builds the network a checkpoint was trained as."""
    from types import SimpleNamespace

    cls = model_class(buildable(name))
    unset = {"base_channels": None, "depth": None, "upsampling": None, "encoder": None}
    args = cls.arguments(SimpleNamespace(base_channels=8, depth=2, upsampling="bilinear"), 3, 4)
    assert cls.arguments(SimpleNamespace(**{**unset, **cls.options(args)}), 3, 4) == args
    # A checkpoint that stored only the counts means the constructor's defaults.
    default = create_model(name, in_channels=1, num_classes=2).state_dict()
    rebuilt = create_model(name, **cls.arguments(SimpleNamespace(**{**unset, **cls.options({})}), 1, 2))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in default.items()}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_exports_to_onnx_safetensors_and_bioimageio(name, tmp_path):
    """A registered model leaves unetkit every way a trained one does (smp's model tests export
    every encoder): ONNX (checked against PyTorch on two sizes), safetensors (read back to the
    same weights) and a bioimage.io package."""
    from unetkit.data import MaskValues, Preprocess
    from unetkit.inference.export.bioimageio import export_bioimageio
    from unetkit.inference.export.onnx import export_onnx
    from unetkit.models.checkpoint import load_checkpoint
    from unetkit.models.safetensors_file import save_safetensors
    from unetkit.models.spec import ModelSpec

    model, args = small(name)
    spec = ModelSpec(name, args, MaskValues([0, 1, 2, 3]), Preprocess(3, [0.5] * 3, [0.25] * 3), False)
    state = {**spec.to_state(), "model": model.eval().state_dict()}
    assert export_onnx(state, tmp_path / "m.onnx") < 1e-3
    weights = load_checkpoint(save_safetensors(state, tmp_path / "m.safetensors"))["model"]
    assert all(torch.equal(weights[key], value) for key, value in state["model"].items())
    assert export_bioimageio(state, tmp_path / "m.zip").stat().st_size > 0


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("size", [(2, 2), (3, 5), (16, 12), (1, 6)])
def test_the_upsampling_folded_into_the_convolution_gives_the_convolution_of_the_upsampled_map(layout, size):
    """UpsampleSplitConvReLU: one transposed convolution of the coarse map with the composed kernel,
    its outermost ring corrected, equals the 3x3 convolution of the 2x bilinear upsampling (fp32,
    to rounding), edges and corners included; a map of one row or column takes the plain path."""
    import torch.nn.functional as F

    from unetkit.models import blocks

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(11, 5, 3, padding=1)
    block = blocks.UpsampleSplitConvReLU(conv, 4, torch.float32)
    skip = torch.randn(2, 4, 2 * size[0], 2 * size[1]).contiguous(memory_format=layout)
    x = torch.randn(2, 7, *size).contiguous(memory_format=layout)
    corrections = []
    ring_correction = blocks.ring_correction
    with pytest.MonkeyPatch.context() as patch, torch.inference_mode():
        patch.setattr(blocks, "ring_correction", lambda *args: corrections.append(1) or ring_correction(*args))
        ours = block(skip, x)
        up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        theirs = F.relu(conv(torch.cat([skip, up], dim=1)))
    assert len(corrections) == (min(size) >= 2)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_bilinear_unet_fused_for_the_cpu_folds_its_upsampling_and_keeps_its_logits(dtype):
    """Every Up block of a bilinear U-Net gets UpsampleSplitConvReLU, a transposed one the plain
    SplitConvReLU; the logits stay those of the folded model on a size the pooling divides and on
    one it does not."""
    import copy

    from unetkit.models import blocks

    torch.manual_seed(0)
    model = UNet(in_channels=2, num_classes=3, base_channels=6, depth=3, upsampling="bilinear").eval()
    for block in model.modules():  # BatchNorm statistics that are not the identity
        if isinstance(block, torch.nn.BatchNorm2d):
            block.running_mean.uniform_(-0.5, 0.5)
            block.running_var.uniform_(0.5, 2.0)
    folded = blocks.fuse_conv_bn(model).to(memory_format=torch.channels_last)
    fused = blocks.fused_for_cpu(copy.deepcopy(folded), dtype)
    assert sum(isinstance(m, blocks.UpsampleSplitConvReLU) for m in fused.modules()) == 3
    for size in [(64, 48), (37, 45)]:
        x = torch.randn(2, 2, *size).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            ours, theirs = fused(x).float(), folded(x).float()
        tolerance = 1e-5 if dtype == torch.float32 else 2e-2 * float(theirs.abs().max())
        torch.testing.assert_close(ours, theirs, rtol=tolerance, atol=tolerance)


def test_the_folded_upsampling_takes_the_up_blocks_own_path_where_the_sizes_do_not_double():
    """An Up block called on sizes that are not 2x (a caller that did not pad to a multiple):
    the fused block upsamples 2x and then resizes to the skip's size, as Up itself does."""
    import copy

    import torch.nn.functional as F

    from unetkit.models import blocks

    torch.manual_seed(0)
    up = blocks.Up(7, 4, 5, "bilinear").eval()
    folded = blocks.fuse_conv_bn(up)
    fused = blocks.fused_for_cpu(copy.deepcopy(folded), torch.float32)
    assert isinstance(fused.conv[0], blocks.UpsampleSplitConvReLU)
    x, skip = torch.randn(2, 7, 4, 5), torch.randn(2, 4, 9, 11)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x, skip), folded(x, skip), rtol=1e-5, atol=1e-5)
        doubled = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        plain = folded.conv(torch.cat([skip, F.interpolate(doubled, size=(9, 11), mode="bilinear")], 1))
        torch.testing.assert_close(fused(x, skip), plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_transposed_upsampling_gives_the_transposed_convolutions_output_and_gradients(amp, layout):
    """TransposedUp's backward (two GEMMs) against nn.ConvTranspose2d's own, with the same weights:
    an odd size, a gradient that is a channel slice (as the concatenation's backward hands it on),
    fp32 and bf16 autocast (the gradients of fp32 weights come back fp32)."""
    from unetkit.models.transposed import TransposedUp, TransposedUpFunction

    torch.manual_seed(0)
    reference = torch.nn.ConvTranspose2d(24, 12, 2, stride=2)
    ours = TransposedUp(24, 12)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(3, 24, 9, 7).contiguous(memory_format=layout)
    grad = torch.randn(3, 20, 18, 14).contiguous(memory_format=layout)[:, 4:16]
    results = [output_and_gradients(module, x, grad, amp) for module in (reference, ours)]
    assert type(ours(x.requires_grad_()).grad_fn).__name__ == f"{TransposedUpFunction.__name__}Backward"
    tolerance = {"atol": 0.05, "rtol": 0.02} if amp else {"atol": 1e-5, "rtol": 1e-5}
    for expected, got in zip(*results, strict=True):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        torch.testing.assert_close(got, expected, **tolerance)
    with torch.no_grad():  # inference is PyTorch's own layer
        assert ours(x).grad_fn is None and torch.equal(ours(x), reference(x))


@pytest.mark.parametrize("amp", [False, True])
def test_the_up_blocks_concatenation_gives_cats_gradients_bit_for_bit_and_dense(amp, monkeypatch):
    """ChannelConcat's backward hands each input a dense channels_last gradient (cat's hands on
    strided channel slices, a slow path for the next backward) with the same values: a U-Net's
    weight gradients equal those through torch.cat bit for bit, in fp32 and bf16 autocast."""
    import unetkit.models.blocks as blocks

    torch.manual_seed(0)
    model = UNet(1, 2, base_channels=4, depth=3, upsampling="bilinear").to(memory_format=torch.channels_last)
    x = torch.randn(3, 1, 40, 48).contiguous(memory_format=torch.channels_last)
    gradients = []
    for concatenate in (blocks.concatenate_channels, lambda skip, up: torch.cat([skip, up], dim=1)):
        monkeypatch.setattr(blocks, "concatenate_channels", concatenate)
        model.zero_grad()
        with torch.autocast("cpu", torch.bfloat16, enabled=amp):
            model(x).float().square().mean().backward()
        gradients.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(ours, cats) for ours, cats in zip(*gradients, strict=True))

    skip = torch.randn(2, 6, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    up = torch.randn(2, 5, 8, 8, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last).requires_grad_()
    with torch.autocast("cpu", torch.bfloat16):
        joined = blocks.ChannelConcat.apply(skip, up)  # autocast promotes: bf16 and fp32 -> fp32
    joined.backward(torch.randn(joined.shape).contiguous(memory_format=torch.channels_last))
    for leaf in (skip, up):
        assert leaf.grad.dtype == leaf.dtype and leaf.grad.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert blocks.concatenate_channels(skip, up).grad_fn is None


class ZeroPadded(torch.nn.Module):
    """A user's own model (registered by the test below): a 3x3 convolution that pads its input
    to a multiple of 4 with zeros, where an ONNX export's caller pads by reflection."""

    name = "zero-padded-test-model"

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: int = 4) -> None:
        super().__init__()
        self.size_multiple = 4
        self.conv = torch.nn.Conv2d(in_channels, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = torch.nn.functional.pad(x, (0, (-width) % 4, 0, (-height) % 4))
        return self.conv(x)[..., :height, :width]

    @classmethod
    def arguments(cls, options, in_channels: int, num_classes: int) -> dict:
        return {"in_channels": in_channels, "num_classes": num_classes}

    @classmethod
    def min_input_size(cls, args: dict) -> int:
        return 4

    @classmethod
    def probe_channels(cls, args: dict) -> int:
        return 4

    @classmethod
    def options(cls, args: dict) -> dict:
        return {}


@pytest.fixture
def own_model():
    from unetkit.models.registry import register_model

    register_model(ZeroPadded)
    yield ZeroPadded
    MODELS.pop(ZeroPadded.name, None)


def test_a_users_model_is_registered_once_and_its_mistakes_are_one_line(own_model, tmp_path):
    """A red-team round: a second class under "unet" replaced unetkit's own unsaid (the shipped
    models then loaded as "damaged"); a constructor that disagrees with arguments() was a
    TypeError from deep in training; a checkpoint of a model not registered in this process read
    as damaged; an export whose model pads otherwise was written with a 16.9 logit difference."""
    from unetkit.data import MaskValues, Preprocess
    from unetkit.errors import UnetkitError
    from unetkit.inference.export.onnx import export_onnx
    from unetkit.models.registry import register_model
    from unetkit.models.spec import ModelSpec

    assert register_model(ZeroPadded) is ZeroPadded  # the same class again (a module reloaded): fine
    impostor = type("UNet", (ZeroPadded,), {"name": "unet"})
    with pytest.raises(UnetkitError, match="model name 'unet' is taken by unetkit.models.unet.UNet; give"):
        register_model(impostor)
    assert MODELS["unet"] is UNet
    with pytest.raises(UnetkitError, match=r"\(ZeroPadded\): .*'depth'; its arguments\(\) and its constructor must"):
        create_model(own_model.name, depth=3)
    spec = ModelSpec(own_model.name, {"in_channels": 1, "num_classes": 2}, MaskValues([0, 1]),
                     Preprocess(1, [0.5], [0.25]), False)  # fmt: skip
    state = {**spec.to_state(), "model": own_model().state_dict()}
    with pytest.raises(UnetkitError, match="m.onnx: not written: its logits differ from PyTorch's"):
        export_onnx(state, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())
    from unetkit.cli import main
    from unetkit.models.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "own.pt", state)  # the command: its safetensors first, then the refused ONNX
    code = main(["export", "--checkpoint", str(tmp_path / "own.pt"), "--safetensors",
                 str(tmp_path / "own.safetensors"), "--onnx", str(tmp_path / "own.onnx")])  # fmt: skip
    assert code == 2 and (tmp_path / "own.safetensors").is_file() and not (tmp_path / "own.onnx").exists()
    MODELS.pop(own_model.name)
    with pytest.raises(UnetkitError, match="a zero-padded-test-model model, which is not registered in this process"):
        ModelSpec.from_state(state, "best.pt")


def test_a_model_without_a_size_multiple_is_one_line():
    from unetkit.errors import UnetkitError
    from unetkit.models.registry import register_model

    class NoMultiple(ZeroPadded):
        name = "no-multiple-test-model"

        def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
            torch.nn.Module.__init__(self)

    register_model(NoMultiple)
    try:
        with pytest.raises(UnetkitError, match=r"\(.*NoMultiple\) sets no whole size_multiple"):
            create_model(NoMultiple.name)
    finally:
        MODELS.pop(NoMultiple.name)


def test_predicted_classes_are_argmaxs_first_maximum_ties_included():
    """predicted_classes reads max's indices, argmax's slow path on CPU avoided (758 ms against 42 for a
    4-class slide band): the same ids, a tie going to the first class as argmax's does, in fp32 and bf16."""
    from unetkit.models.heads import predicted_classes

    logits = torch.randn(2, 5, 33, 47, generator=torch.Generator().manual_seed(0))
    logits[:, :, :4] = 0.0  # every class tied
    logits[:, 3, 4:9] = logits[:, 1, 4:9] = 9.0  # two tied above the rest
    for dtype in (torch.float32, torch.bfloat16):
        ids = predicted_classes(logits.to(dtype), dtype=torch.uint8)
        assert ids.dtype == torch.uint8 and torch.equal(ids.long(), logits.to(dtype).argmax(dim=1))
    assert (ids[:, :4] == 0).all() and (ids[:, 4:9] == 1).all()
