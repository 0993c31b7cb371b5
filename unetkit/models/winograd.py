"""Winograd's F(2x2, 3x3): a 3x3 convolution with 2.25x fewer multiplications, for training on a CPU.

A 3x3 convolution (padding 1) gives each 2x2 block of output pixels from the 4x4 block of input
around it. Winograd (Lavin & Gray 2016) writes that as

    y = A^T [ (G w G^T) * (B^T d B) ] A        (* elementwise over the 4x4 positions)

so the multiplications become 16 matrix products, one per position of the 4x4 tile: the
transformed input tiles (tiles x Cin) against the transformed weights (Cin x Cout). A direct
convolution multiplies 9 x 4 = 36 times for those four pixels, Winograd 16 times; the transforms
are additions. The backward is the same three steps' adjoints: two products of the same size, and
the transforms' adjoints.

Where it pays is measured, not assumed: the products must outweigh the transforms' memory
traffic, so it wins on the deep levels (many channels, few pixels) and loses on the shallow ones
and where the weights outnumber the pixels. Forward + backward, batch 2 (benchmarks/NOTES.md,
"Issue 36, tenth slice"):

    AMD EPYC, AVX-512 BF16, bf16:  256 -> 256 at 64^2  64.8 -> 43.8 ms,  1024 -> 512 at 32^2  132.7 -> 88.0,
                                   128 -> 128 at 128^2 68.0 -> 96.8 (loses), 1024 -> 1024 at 16^2 85.9 -> 127.7 (loses)
    the same, AVX2 only, fp32:     512 -> 512 at 32^2  155.4 -> 83.5 ms

so Conv3x3 times both ways at each shape's first training forward and keeps the faster
(`winograd_is_faster`). The arithmetic differs from a direct convolution's by the rounding of the
transforms: in fp64 the two agree to 1e-12; in bf16 the output's error against fp64 is 2-4x a
direct bf16 convolution's (0.008 against 0.0035 of the largest output; 0.0067 against 0.0017 in
norm), which the accuracy benchmark checked before this became a default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unetkit.models.transposed import laid_out_like, onednn_backward


def rows_of_b(d0: torch.Tensor, d1: torch.Tensor, d2: torch.Tensor, d3: torch.Tensor, outs: list) -> None:
    """B^T d along one axis of a 4-tap tile: (d0 - d2, d1 + d2, d2 - d1, d1 - d3), into `outs`."""
    torch.sub(d0, d2, out=outs[0])
    torch.add(d1, d2, out=outs[1])
    torch.sub(d2, d1, out=outs[2])
    torch.sub(d1, d3, out=outs[3])


def input_tiles(x: torch.Tensor) -> torch.Tensor:
    """B^T d B of every 4x4 tile of `x` zero-padded by 1, at stride 2: (16, n * h/2 * w/2, Cin),
    the tile's 16 positions first, each a (tiles x Cin) matrix."""
    n, cin, height, width = x.shape
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # (n, h + 2, w + 2, cin)
    taps = [padded[:, k : k + height : 2] for k in range(4)]  # the 4 rows of every tile
    rows = [x.new_empty(n, height // 2, width + 2, cin) for _ in range(4)]
    rows_of_b(*taps, rows)
    tiles = x.new_empty(4, 4, n, height // 2, width // 2, cin)
    for i, row in enumerate(rows):
        rows_of_b(*(row[:, :, k : k + width : 2] for k in range(4)), list(tiles[i]))
    return tiles.view(16, -1, cin)


def output_from_tiles(products: torch.Tensor, n: int, height: int, width: int) -> torch.Tensor:
    """A^T m A of every tile's (4x4) products, A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]: the output,
    (n, Cout, h, w) laid out channels_last."""
    cout = products.shape[-1]
    m = products.view(4, 4, n, height // 2, width // 2, cout)
    halves = (m[0] + m[1] + m[2], m[1] - m[2] - m[3])
    # Returned whole, not as a view: a custom function's view output refuses in-place ops after it.
    out = torch.empty(n, cout, height, width, dtype=products.dtype, memory_format=torch.channels_last)
    blocks = out.permute(0, 2, 3, 1).view(n, height // 2, 2, width // 2, 2, cout)
    for i, half in enumerate(halves):
        torch.add(half[0] + half[1], half[2], out=blocks[:, :, i, :, 0])
        torch.sub(half[1] - half[2], half[3], out=blocks[:, :, i, :, 1])
    return out


def output_gradient_tiles(grad: torch.Tensor) -> torch.Tensor:
    """The adjoint of output_from_tiles: the output gradient as the products' gradient, (16, tiles, Cout)."""
    n, cout, height, width = grad.shape
    by_pixel = grad.permute(0, 2, 3, 1)
    g = [[by_pixel[:, p::2, q::2] for q in range(2)] for p in range(2)]  # the 2x2 output phases
    pairs = list(zip(*g, strict=True))  # (row phase 0, row phase 1) of each column phase
    rows = (g[0], [a + b for a, b in pairs], [a - b for a, b in pairs], [-b for b in g[1]])
    tiles = grad.new_empty(4, 4, n, height // 2, width // 2, cout)
    for a, (g0, g1) in enumerate(rows):  # the same adjoint (g0, g0 + g1, g0 - g1, -g1) along columns
        tiles[a, 0].copy_(g0)
        torch.add(g0, g1, out=tiles[a, 1])
        torch.sub(g0, g1, out=tiles[a, 2])
        torch.neg(g1, out=tiles[a, 3])
    return tiles.view(16, -1, cout)


def phases_of_b_adjoint(v: list, dim: int, even: torch.Tensor, odd: torch.Tensor) -> None:
    """The adjoint of rows_of_b along `dim`, summed over the overlapping tiles and cropped to the
    unpadded input: its even pixels 2u get (v1 - v2 + v3)[u] - v3[u - 1], its odd pixels 2u + 1
    get (v1 + v2 - v0)[u] + v0[u + 1]."""
    v0, v1, v2, v3 = v
    last = v0.shape[dim] - 1
    torch.sub(v1, v2, out=even).add_(v3)
    even.narrow(dim, 1, last).sub_(v3.narrow(dim, 0, last))
    torch.add(v1, v2, out=odd).sub_(v0)
    odd.narrow(dim, 0, last).add_(v0.narrow(dim, 1, last))


def input_gradient(tile_grad: torch.Tensor, n: int, cin: int, height: int, width: int) -> torch.Tensor:
    """The adjoint of input_tiles: the input's gradient from its tiles', (n, Cin, h, w) channels_last."""
    v = tile_grad.view(4, 4, n, height // 2, width // 2, cin)
    columns = tile_grad.new_empty(4, 2, n, height // 2, width // 2, cin)  # (tile row, column phase)
    for i in range(4):
        phases_of_b_adjoint(list(v[i]), 2, columns[i, 0], columns[i, 1])
    grad = torch.empty(n, cin, height, width, dtype=tile_grad.dtype, memory_format=torch.channels_last)
    blocks = grad.permute(0, 2, 3, 1).view(n, height // 2, 2, width // 2, 2, cin)
    for q in range(2):
        phases_of_b_adjoint(list(columns[:, q]), 1, blocks[:, :, 0, :, q], blocks[:, :, 1, :, q])
    return grad


def rows_of_g(w0: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, outs: torch.Tensor) -> None:
    """G w along one axis, G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]."""
    half = (w0 + w2).mul_(0.5)
    outs[0].copy_(w0)
    torch.add(half, w1, alpha=0.5, out=outs[1])
    torch.sub(half, w1, alpha=0.5, out=outs[2])
    outs[3].copy_(w2)


def at_least_fp32(t: torch.Tensor) -> torch.dtype:
    """The dtype the weight transforms compute in: fp32, or fp64 for fp64 weights."""
    return torch.promote_types(t.dtype, torch.float32)


def weight_tiles(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """G w G^T of every (Cout, Cin) pair's 3x3 kernel, computed in fp32: (16, Cout, Cin) in `dtype`."""
    cout, cin = weight.shape[:2]
    taps = weight.to(at_least_fp32(weight)).permute(2, 3, 0, 1)  # (3, 3, cout, cin)
    rows = taps.new_empty(4, 3, cout, cin)
    rows_of_g(taps[0], taps[1], taps[2], rows)
    tiles = torch.empty(4, 4, cout, cin, dtype=dtype)
    for a in range(4):
        rows_of_g(rows[a, 0], rows[a, 1], rows[a, 2], tiles[a])
    return tiles.view(16, cout, cin)


def rows_of_g_adjoint(u: torch.Tensor, outs: torch.Tensor) -> None:
    """G^T u along one axis: (u0 + h, (u1 - u2) / 2, u3 + h) with h = (u1 + u2) / 2."""
    half = (u[1] + u[2]).mul_(0.5)
    torch.add(u[0], half, out=outs[0])
    torch.sub(u[1], u[2], out=outs[1]).mul_(0.5)
    torch.add(u[3], half, out=outs[2])


def weight_gradient(tile_grad: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The adjoint of weight_tiles, in fp32: the weights' gradient (Cout, Cin, 3, 3), channels_last, in `dtype`."""
    _, cout, cin = tile_grad.shape
    u = tile_grad.to(at_least_fp32(tile_grad)).view(4, 4, cout, cin)
    columns = u.new_empty(4, 3, cout, cin)
    for a in range(4):
        rows_of_g_adjoint(u[a], columns[a])
    grad = torch.empty(cout, 3, 3, cin, dtype=dtype)
    rows_of_g_adjoint(columns, grad.permute(1, 2, 0, 3))
    return grad.permute(0, 3, 1, 2)


class WinogradConv3x3Function(torch.autograd.Function):
    """F.conv2d(x, weight, bias, padding=1) for an even-sized x, as Winograd's F(2x2, 3x3); the
    output and x's gradient in x's layout (channels_last unless x is dense in the default one).
    It saves the input's tiles for the weight gradient: 4x the input, where a direct convolution
    saves the input alone (a layer's saved tensors 4.6 -> 21.6 MiB at 128 channels, 64^2, batch 2,
    fp32), which is small on the deep levels where it runs and bounded by MAX_WINOGRAD_TILE_BYTES."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        n, _, height, width = x.shape
        with torch.autocast("cpu", enabled=False):
            tiles, kernels = input_tiles(x), weight_tiles(weight, x.dtype)
            out = laid_out_like(output_from_tiles(torch.bmm(tiles, kernels.transpose(1, 2)), n, height, width), x)
        ctx.save_for_backward(x, weight, tiles, kernels)
        ctx.with_bias = bias is not None
        return out if bias is None else out.add_(bias.view(1, -1, 1, 1))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, tiles, kernels = ctx.saved_tensors
        wants_x, wants_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_bias = grad.sum((0, 2, 3)) if ctx.with_bias and ctx.needs_input_grad[2] else None
        if torch.is_grad_enabled():  # create_graph: torch's own backward, which has a derivative
            return (*onednn_backward(x, weight, grad, wants_x, wants_weight), grad_bias)
        n, cin, height, width = x.shape
        products = output_gradient_tiles(grad)
        grad_x = grad_weight = None
        if wants_x:
            grad_x = laid_out_like(input_gradient(torch.bmm(products, kernels), n, cin, height, width), x)
        if wants_weight:
            grad_weight = weight_gradient(torch.bmm(products.transpose(1, 2), tiles), weight.dtype)
        return grad_x, grad_weight, grad_bias


def winograd_fits(x: torch.Tensor) -> bool:
    """Whether `x` is a map F(2x2, 3x3) tiles whole: 4-d, even height and width."""
    return x.dim() == 4 and x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0 and x.shape[-2] > 0 and x.shape[-1] > 0
