"""The ops the dependence pass swaps in while it runs (see :mod:`prune_landscape.dependence`).

Path-preserving substitutes for functions that hide paths for particular values (ReLU-family, hard gates,
max-pooling, saturating functions); written-out versions of fused kernels that forward-mode AD cannot go
through (scaled_dot_product_attention) or whose inner projections must be seen
(``F.multi_head_attention_forward``); and tangents written out where forward-mode AD's own rule is slow:
prunable calls (one product ``W t``, not two), layer_norm and eval-mode batch_norm, arithmetic with one
constant operand (forward-mode AD gives it an "efficient zero" tangent whose kernels run in Python).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD  # noqa: N812
from torch.nn import functional as F  # noqa: N812

__all__ = [
    "ARITHMETIC",
    "CONV_NAMES",
    "SUBSTITUTES",
    "attention_math",
    "batch_norm_dual",
    "dual_arithmetic",
    "dual_linear_call",
    "layer_norm_dual",
    "mha_forward",
    "scaled_call",
]

_LEAK = 0.1


# ---------------------------------------------------------------------------------------------------
# Path-preserving substitutes for ops that hide paths for particular values
# ---------------------------------------------------------------------------------------------------


def _leaky_relu(x: torch.Tensor, inplace: bool = False, *_: Any, **__: Any) -> torch.Tensor:
    return F.leaky_relu(x, _LEAK, inplace=bool(inplace))


def _leaky_relu_(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, _LEAK, inplace=True)


def _leaky_clamp(x: torch.Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> torch.Tensor:
    clamped = x.clamp(min_val, max_val)
    return clamped + _LEAK * (x - clamped)


def _leaky_relu6(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    return _leaky_clamp(x, 0.0, 6.0)


def _sigmoid(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    return torch.sigmoid(x)


def _swish(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    return x * torch.sigmoid(x)


def _avg_pool(dims: int) -> Callable[..., torch.Tensor]:
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]

    def substitute(x: torch.Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                   ceil_mode: bool = False, return_indices: bool = False) -> torch.Tensor:
        if return_indices:
            raise NotImplementedError("max-pooling with return_indices")
        if dilation not in (1, (1,) * dims, [1] * dims):
            raise NotImplementedError("dilated max-pooling")
        stride = kernel_size if stride is None or stride == [] else stride
        return pool(x, kernel_size, stride, padding, ceil_mode=ceil_mode, count_include_pad=False)

    return substitute


def _adaptive_avg_pool(dims: int) -> Callable[..., torch.Tensor]:
    pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[dims]

    def substitute(x: torch.Tensor, output_size: Any, return_indices: bool = False) -> torch.Tensor:
        if return_indices:
            raise NotImplementedError("adaptive max-pooling with return_indices")
        return pool(x, output_size)

    return substitute


def layer_norm_dual(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """layer_norm on a dual input: the fused kernel for the value (and its backward), the tangent written
    out (forward-mode AD through the fused kernel is several times slower):
    ``d y = w * inv * (dc - n * mean(n * dc))`` with ``c = x - mean(x)``, ``inv = 1 / sqrt(mean(c^2) + eps)``,
    ``n = c * inv`` and ``dc = dx - mean(dx)``."""
    primal, tangent = fwAD.unpack_dual(x)
    out = F.layer_norm(primal, normalized_shape, weight, bias, eps)
    if tangent is None:
        return out
    with torch.no_grad():
        dims = tuple(range(-len(normalized_shape), 0))
        centred = primal - primal.mean(dim=dims, keepdim=True)
        inv = torch.rsqrt(centred.pow(2).mean(dim=dims, keepdim=True) + eps)
        normed = centred * inv
        moved = tangent - tangent.mean(dim=dims, keepdim=True)
        change = (moved - normed * (normed * moved).mean(dim=dims, keepdim=True)) * inv
        if weight is not None:
            change = change * weight
    return fwAD.make_dual(out, change)


def batch_norm_dual(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """batch_norm in eval mode on a dual input: a per-channel affine map, so the tangent is
    ``t * weight / sqrt(running_var + eps)``. None in training mode (batch statistics: the caller falls
    back to forward-mode AD); forward-mode AD's own rule takes a slow path for the constant weight and bias."""
    primal, tangent = fwAD.unpack_dual(x)
    if training or running_mean is None or running_var is None or tangent is None:
        return None
    out = F.batch_norm(primal, running_mean, running_var, weight, bias, False, momentum, eps)
    with torch.no_grad():
        scale = torch.rsqrt(running_var + eps)
        if weight is not None:
            scale = scale * weight
        shape = [1] * tangent.dim()
        shape[1] = -1
        change = tangent * scale.reshape(shape)
    return fwAD.make_dual(out, change)


def attention_math(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """scaled_dot_product_attention written out (forward-mode AD has no rule for the fused CPU kernel)."""
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        repeat = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(repeat, dim=-3), value.repeat_interleave(repeat, dim=-3)
    scores = query @ key.transpose(-2, -1) * (scale if scale is not None else 1.0 / math.sqrt(query.shape[-1]))
    if is_causal:
        causal = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    return torch.softmax(scores, dim=-1) @ value


_SATURATION_LEAK = 0.01


def _leaky_saturating(op: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``op(x) + 0.01 x``: same zeros (sigmoid(b) stays non-zero, SiLU(0) stays 0) but a derivative that never
    rounds to exactly 0, so a large activation (a deep residual stream, a SE gate) cannot fake a cut."""

    def substitute(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        kwargs.pop("inplace", None)
        if args and isinstance(args[-1], bool):  # F.silu(x, inplace), F.elu(x, alpha, inplace)
            args = args[:-1]
        # One add with alpha: its tangent rule has no constant operand (a scalar product would take
        # forward-mode AD's slow path for zero tangents).
        return torch.add(op(x, *args, **kwargs), x, alpha=_SATURATION_LEAK)

    return substitute


SUBSTITUTES: dict[str, Callable[..., torch.Tensor]] = {
    "sigmoid": _leaky_saturating(torch.sigmoid),
    "tanh": _leaky_saturating(torch.tanh),
    "silu": _leaky_saturating(F.silu),
    "gelu": _leaky_saturating(F.gelu),
    "softplus": _leaky_saturating(F.softplus),
    "mish": _leaky_saturating(F.mish),
    "elu": _leaky_saturating(F.elu),
    "logsigmoid": _leaky_saturating(F.logsigmoid),
    "relu": _leaky_relu,
    "relu_": _leaky_relu_,
    "relu6": _leaky_relu6,
    "hardtanh": _leaky_clamp,
    "hardtanh_": _leaky_clamp,
    "hardsigmoid": _sigmoid,
    "hardswish": _swish,
    "max_pool1d": _avg_pool(1),
    "max_pool2d": _avg_pool(2),
    "max_pool3d": _avg_pool(3),
    "_max_pool1d": _avg_pool(1),
    "_max_pool2d": _avg_pool(2),
    "_max_pool3d": _avg_pool(3),
    "adaptive_max_pool1d": _adaptive_avg_pool(1),
    "adaptive_max_pool2d": _adaptive_avg_pool(2),
    "adaptive_max_pool3d": _adaptive_avg_pool(3),
    "_adaptive_max_pool1d": _adaptive_avg_pool(1),
    "_adaptive_max_pool2d": _adaptive_avg_pool(2),
    "_adaptive_max_pool3d": _adaptive_avg_pool(3),
}
CONV_NAMES = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}


# ---------------------------------------------------------------------------------------------------
# Prunable calls: unit-norm rows applied to the output, tangents as one product
# ---------------------------------------------------------------------------------------------------


def dual_linear_call(func: Callable, name: str, args: tuple, kwargs: dict, scale: torch.Tensor | None,
                     axis: int) -> torch.Tensor:
    """A linear/conv call on a dual input, its tangent computed as one product ``W t`` (scaled like the
    output, no bias). Forward-mode AD would also multiply by the weight's (zero) tangent: one more
    product of the layer's size."""
    position = 1 if name == "addmm" else 0
    primal, tangent = fwAD.unpack_dual(args[position])
    args = list(args)
    args[position] = primal
    out = scaled_call(func, name, args, kwargs, scale, axis) if scale is not None else func(*args, **kwargs)
    if tangent is None:
        return out
    with torch.no_grad():
        if name == "addmm":
            change = torch.mm(tangent, args[2]) * kwargs.get("alpha", 1)
        else:
            args[position], kwargs = tangent, dict(kwargs)
            if len(args) > 2:
                args[2] = None
            else:
                kwargs["bias"] = None
            change = func(*args, **kwargs)
        if scale is not None:
            shape = [1] * change.dim()
            shape[axis] = -1
            change = change * scale.reshape(shape)
    return fwAD.make_dual(out, change)

def scaled_call(func: Callable, name: str, args: tuple, kwargs: dict, scale: torch.Tensor, axis: int) -> torch.Tensor:
    """``(W x) * scale + b``: the weight's rows at unit norm, the bias left as it is (a scaled bias could
    push a softmax or a gate into exact saturation)."""
    args, kwargs = list(args), dict(kwargs)
    if name == "addmm":
        bias = args[0]
        out = torch.mm(args[1], args[2])
    else:
        if len(args) > 2:
            bias, args[2] = args[2], None
        else:
            bias = kwargs.pop("bias", None)
            kwargs["bias"] = None
        out = func(*args, **kwargs)
    shape = [1] * out.dim()
    shape[axis] = -1
    out = out * scale.reshape(shape)
    return out if bias is None else out + (bias.reshape(shape) if axis == 1 else bias)


# ---------------------------------------------------------------------------------------------------
# Arithmetic with one dual operand
# ---------------------------------------------------------------------------------------------------


_ADD, _SUB, _RSUB, _MUL, _DIV = "add", "sub", "rsub", "mul", "div"
ARITHMETIC = {
    "__add__": _ADD, "__radd__": _ADD, "add": _ADD, "__sub__": _SUB, "sub": _SUB, "subtract": _SUB,
    "__rsub__": _RSUB, "rsub": _RSUB, "__mul__": _MUL, "__rmul__": _MUL, "mul": _MUL, "multiply": _MUL,
    "__truediv__": _DIV, "div": _DIV, "divide": _DIV, "true_divide": _DIV,
}


def dual_arithmetic(func: Callable, name: str, args: tuple) -> torch.Tensor | None:
    """``a op b`` with exactly one dual operand, its tangent computed directly; None when not that case.

    Forward-mode AD gives the constant operand a zero tangent of the "efficient zero" kind, whose kernels
    run through Python reference implementations: about 1 ms per op, for every bias, norm scale and scalar
    a forward multiplies or adds. The value is computed by ``func`` on the primal (so the backward pass
    sees it), the tangent is +-t, t * b or t / b.
    """
    tangents = [fwAD.unpack_dual(a).tangent if isinstance(a, torch.Tensor) else None for a in args]
    if (tangents[0] is None) == (tangents[1] is None):
        return None
    side = 0 if tangents[0] is not None else 1
    kind, other, tangent = ARITHMETIC[name], args[1 - side], tangents[side]
    if (kind == _DIV and side == 1) or not isinstance(other, (torch.Tensor, int, float, bool)):
        return None
    primals = list(args)
    primals[side] = fwAD.unpack_dual(args[side]).primal
    out = func(*primals)
    with torch.no_grad():
        if kind in (_MUL, _DIV):
            change = tangent * other if kind == _MUL else tangent / other
        else:
            negate = (kind == _SUB and side == 1) or (kind == _RSUB and side == 0)
            change = -tangent if negate else tangent
        if change.shape != out.shape or change.dtype != out.dtype:
            change = change.expand(out.shape).to(out.dtype, copy=True)
    return fwAD.make_dual(out, change)


# ---------------------------------------------------------------------------------------------------
# nn.MultiheadAttention, re-stated from F.linear calls so the projections are seen
# ---------------------------------------------------------------------------------------------------


# The one function over the 8-parameter limit: it mirrors torch's F.multi_head_attention_forward (25
# parameters) so the interception can forward the exact call it receives; allow-listed by the lead.
def mha_forward(query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias, bias_k, bias_v,
                 add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training=True, key_padding_mask=None,
                 need_weights=True, attn_mask=None, use_separate_proj_weight=False, q_proj_weight=None,
                 k_proj_weight=None, v_proj_weight=None, static_k=None, static_v=None, average_attn_weights=True,
                 is_causal=False):
    """``F.multi_head_attention_forward`` for the dependence pass (eval mode, no dropout), from F.linear."""
    if bias_k is not None or bias_v is not None or add_zero_attn or static_k is not None or static_v is not None:
        raise NotImplementedError("nn.MultiheadAttention with bias_k/bias_v/add_zero_attn/static_k/static_v")
    unbatched = query.dim() == 2
    if unbatched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    tgt_len, bsz, embed_dim = query.shape
    src_len = key.shape[0]
    head_dim = embed_dim // num_heads
    if use_separate_proj_weight:
        b_q, b_k, b_v = in_proj_bias.chunk(3) if in_proj_bias is not None else (None, None, None)
        q, k, v = F.linear(query, q_proj_weight, b_q), F.linear(key, k_proj_weight, b_k), F.linear(value, v_proj_weight, b_v)
    elif query is key and key is value:
        q, k, v = F.linear(query, in_proj_weight, in_proj_bias).chunk(3, dim=-1)
    else:
        raise NotImplementedError("nn.MultiheadAttention with a packed in_proj_weight and distinct query/key/value")
    q = q.reshape(tgt_len, bsz * num_heads, head_dim).transpose(0, 1)
    k = k.reshape(src_len, bsz * num_heads, head_dim).transpose(0, 1)
    v = v.reshape(src_len, bsz * num_heads, head_dim).transpose(0, 1)
    scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(head_dim)
    if is_causal and attn_mask is None:
        attn_mask = torch.ones(tgt_len, src_len, dtype=torch.bool, device=q.device).triu(1)
    if attn_mask is not None:
        attn_mask = attn_mask.reshape(-1, tgt_len, src_len) if attn_mask.dim() == 3 else attn_mask.unsqueeze(0)
        scores = scores.masked_fill(attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    if key_padding_mask is not None:
        pad = key_padding_mask.reshape(bsz, 1, 1, src_len).expand(-1, num_heads, -1, -1).reshape(bsz * num_heads, 1, src_len)
        scores = scores.masked_fill(pad, float("-inf")) if pad.dtype == torch.bool else scores + pad
    weights = torch.softmax(scores, dim=-1)
    attn = torch.bmm(weights, v).transpose(0, 1).reshape(tgt_len, bsz, embed_dim)
    out = F.linear(attn, out_proj_weight, out_proj_bias)
    if unbatched:
        out = out.squeeze(1)
    averaged = None
    if need_weights:
        averaged = weights.reshape(bsz, num_heads, tgt_len, src_len)
        averaged = averaged.mean(dim=1) if average_attn_weights else averaged
        if unbatched:
            averaged = averaged.squeeze(0)
    return out, averaged
