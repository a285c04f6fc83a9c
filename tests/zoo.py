"""A zoo of small, randomly initialised models that people actually prune (issue #11).

Nothing is downloaded: torchvision, timm and HuggingFace transformers models are built from their
constructors / tiny configs with random weights. Every entry is seeded, so ``entry.build()`` twice gives
bit-identical models.

Each :class:`ZooEntry` carries what a user would pass to the structure analysis and the pruners:

* ``example_input()``: a tensor, a tuple of positional arguments, or a dict of keyword arguments (token
  ids for models that start with an embedding);
* ``output_transform``: maps the model's raw output (tuple, dict, HF ``ModelOutput``) to the one tensor
  that is "the" output, or None when the output already is a tensor;
* ``final_layer``: the weight name of the layer that produces that output (for tied weights, the name the
  head module holds it under);
* ``fast``: run in ``make test``; the others only in the benchmark.

Use :func:`zoo` for the list, :func:`entry` to look one up, :func:`call` to run a model on an example.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

__all__ = ["ZooEntry", "call", "entry", "zoo"]


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model.

    Attributes:
        name: short unique name (``"tv_resnet18"``).
        builder: builds the model with random weights (unseeded; use :meth:`build`).
        make_input: builds one example input (unseeded; use :meth:`example_input`).
        final_layer: the expected final layer's weight name.
        output_transform: raw output -> the output tensor; None when the output is a tensor.
        fast: included in ``make test``.
        tags: the failure classes of issue #11 the model exercises (``"layernorm"``, ``"gate"``, ...).
        tied: names of weight pairs that are one tensor (``(("lm_head.weight", "tok.weight"),)``).
        seed: the seed used by :meth:`build` and :meth:`example_input`.
    """

    name: str
    builder: Callable[[], nn.Module]
    make_input: Callable[[], Any]
    final_layer: str
    output_transform: Callable[[Any], torch.Tensor] | None = None
    fast: bool = True
    tags: tuple[str, ...] = ()
    tied: tuple[tuple[str, str], ...] = ()
    seed: int = 0

    def build(self) -> nn.Module:
        """The model, seeded, in eval mode (dropout off so forwards are reproducible)."""
        torch.manual_seed(self.seed)
        model = self.builder()
        return model.eval()

    def example_input(self) -> Any:
        """One seeded example input: tensor, tuple of positional args, or dict of keyword args."""
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed + 1)
        try:
            return self.make_input()
        finally:
            torch.random.set_rng_state(generator_state)

    def output(self, model: nn.Module, example: Any | None = None) -> torch.Tensor:
        """``output_transform(model(example))``: the output tensor."""
        raw = call(model, self.example_input() if example is None else example)
        return raw if self.output_transform is None else self.output_transform(raw)


def call(model: nn.Module, example: Any) -> Any:
    """Run ``model`` on an example the way the zoo stores it (tensor, positional tuple, keyword dict)."""
    if isinstance(example, dict):
        return model(**example)
    if isinstance(example, tuple):
        return model(*example)
    return model(example)


# ---------------------------------------------------------------------------------------------------
# Hand-written models (each exercises one failure class of issue #11)
# ---------------------------------------------------------------------------------------------------


class PlainMLP(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (12, 24, 16, 5)):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


class PlainCNN(nn.Module):
    """Conv-BN-ReLU-MaxPool twice, then a Linear head: the case the old analysis handled."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 4 * 4, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        return self.fc(x.flatten(1))


class LayerNormMLP(nn.Module):
    """Linear -> LayerNorm -> ReLU -> Linear (failure class 1)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 24)
        self.norm1 = nn.LayerNorm(24)
        self.fc2 = nn.Linear(24, 16)
        self.norm2 = nn.LayerNorm(16)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.fc1(x)))
        x = F.gelu(self.norm2(self.fc2(x)))
        return self.head(x)


class SwiGLUMLP(nn.Module):
    """A Llama-style SwiGLU block on (batch, tokens, features), mean over tokens, then a head (class 2, 6)."""

    def __init__(self, dim: int = 12, hidden: int = 20, classes: int = 5):
        super().__init__()
        self.inp = nn.Linear(8, dim)
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)
        self.norm = nn.RMSNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.down(F.silu(self.gate(h)) * self.up(h))
        return self.head(self.norm(h).mean(dim=1))


class SigmoidGLU(nn.Module):
    """GLU with a sigmoid gate that has a bias: a pruned gate row leaves sigmoid(bias) != 0 (class 2)."""

    def __init__(self):
        super().__init__()
        self.value = nn.Linear(10, 16)
        self.gate = nn.Linear(10, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.value(x) * torch.sigmoid(self.gate(x)))


class SECNN(nn.Module):
    """Conv -> squeeze-excitation gate -> conv -> global pool -> Linear (class 2)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.se_reduce = nn.Conv2d(16, 4, 1)
        self.se_expand = nn.Conv2d(4, 16, 1)
        self.conv2 = nn.Conv2d(16, 12, 3, padding=1)
        self.fc = nn.Linear(12, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        scale = torch.sigmoid(self.se_expand(F.relu(self.se_reduce(x.mean((2, 3), keepdim=True)))))
        x = F.relu(self.conv2(x * scale))
        return self.fc(x.mean((2, 3)))


class TiedLM(nn.Module):
    """Embedding -> MLP -> LayerNorm -> lm_head, with ``lm_head.weight is tok.weight`` (classes 4, 5, 6)."""

    def __init__(self, vocab: int = 40, dim: int = 16):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.fc1 = nn.Linear(dim, 32)
        self.fc2 = nn.Linear(32, dim)
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.tok.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.tok(ids)
        h = h + self.fc2(F.relu(self.fc1(h)))
        return self.lm_head(self.norm(h))


class LSTMClassifier(nn.Module):
    """Linear -> LSTM -> last step -> Linear; the LSTM returns a tuple (class 9)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 12)
        self.rnn = nn.LSTM(12, 10, batch_first=True)
        self.head = nn.Linear(10, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(torch.tanh(self.inp(x)))
        return self.head(out[:, -1])


class GRUClassifier(nn.Module):
    """Token ids -> Embedding -> GRU -> Linear -> ReLU -> Linear (classes 4, 9)."""

    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(30, 8)
        self.rnn = nn.GRU(8, 12, batch_first=True)
        self.fc = nn.Linear(12, 12)
        self.head = nn.Linear(12, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        _, h = self.rnn(self.tok(ids))
        return self.head(F.relu(self.fc(h[-1])))


class MHAClassifier(nn.Module):
    """Linear -> nn.MultiheadAttention (fused in_proj_weight, F.linear out_proj) -> mean -> head (class 7)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.head((h + a).mean(dim=1))


class DictOutputNet(nn.Module):
    """Returns ``{"logits": ..., "features": ...}`` (class 8)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(10, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = F.relu(self.body(x))
        return {"logits": self.head(features), "features": features}


class TupleOutputNet(nn.Module):
    """Takes a dict-like pair of inputs by keyword and returns ``(logits, aux)`` (class 8)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 12)
        self.b = nn.Linear(4, 12)
        self.head = nn.Linear(24, 3)
        self.aux = nn.Linear(24, 2)

    def forward(self, image: torch.Tensor, meta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([F.relu(self.a(image)), F.relu(self.b(meta))], dim=1)
        # The aux head runs last, so "the last prunable layer" would pick it: the transform names the output.
        return self.head(h), self.aux(h)


class MultiHeadNet(nn.Module):
    """Shared trunk and two task heads, output ``{"cls": ..., "box": ...}`` (class 8)."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.cls = nn.Linear(8, 5)
        self.box = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        return {"cls": self.cls(h), "box": self.box(h)}


class _Scale(nn.Module):
    """A custom parametrization: weight * 1.5 (keeps exact zeros)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * 1.5


class ParametrizedNet(nn.Module):
    """spectral_norm hidden layer, custom-parametrized hidden layer, weight_norm head (class 3)."""

    def __init__(self):
        super().__init__()
        self.fc1 = spectral_norm(nn.Linear(10, 20))
        self.fc2 = nn.Linear(20, 16)
        parametrize.register_parametrization(self.fc2, "weight", _Scale())
        self.head = weight_norm(nn.Linear(16, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fc2(F.relu(self.fc1(x)))))


class EmbeddingBagNet(nn.Module):
    """EmbeddingBag (ids, offsets) -> Linear -> ReLU -> head (class 4)."""

    def __init__(self):
        super().__init__()
        self.bag = nn.EmbeddingBag(50, 12, mode="mean")
        self.fc = nn.Linear(12, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fc(self.bag(ids, offsets))))


class ChannelsLastNet(nn.Module):
    """Conv -> permute to channels-last -> Linear on the channel axis -> permute back -> pool -> head (class 6)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pw = nn.Linear(8, 12)
        self.norm = nn.LayerNorm(12)
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        h = self.norm(F.gelu(self.pw(h)))
        return self.head(h.mean(dim=(1, 2)))


# ---------------------------------------------------------------------------------------------------
# Library models (random init, tiny configs)
# ---------------------------------------------------------------------------------------------------


def _tv(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(weights=None, **kwargs)

    return build


def _tv_convnext_small() -> nn.Module:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=10)


def _tv_vit_tiny() -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10)


def _tv_swin_tiny() -> nn.Module:
    from torchvision.models.swin_transformer import SwinTransformer

    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 1], num_heads=[2, 2], window_size=[2, 2], num_classes=10)


def _tv_densenet_small() -> nn.Module:
    from torchvision.models.densenet import DenseNet

    return DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2, num_classes=10)


def _tv_mobilenet_v3_small() -> nn.Module:
    import torchvision

    return torchvision.models.mobilenet_v3_small(weights=None, width_mult=0.25, num_classes=10)


def _tv_efficientnet_small() -> nn.Module:
    from torchvision.models.efficientnet import EfficientNet, MBConvConfig

    setting = [
        MBConvConfig(1, 3, 1, 16, 8, 1),
        MBConvConfig(4, 3, 2, 8, 12, 1),
        MBConvConfig(4, 5, 2, 12, 16, 1),
    ]
    return EfficientNet(setting, dropout=0.2, last_channel=32, num_classes=10)


def _tv_regnet_small() -> nn.Module:
    from torchvision.models.regnet import BlockParams, RegNet

    params = BlockParams.from_init_params(depth=4, w_0=8, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25)
    return RegNet(params, num_classes=10)


def _timm(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, **kwargs)

    return build


def _hf_gpt2_lm() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


def _hf_gpt2_cls() -> nn.Module:
    from transformers import GPT2Config, GPT2ForSequenceClassification

    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=48, n_positions=16, num_labels=3, pad_token_id=0,
                        bos_token_id=0, eos_token_id=0)
    return GPT2ForSequenceClassification(config)


def _hf_bert_cls() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
        max_position_embeddings=16, num_labels=3,
    )
    return BertForSequenceClassification(config)


def _hf_llama_lm() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=16, tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def _ids(vocab: int, batch: int = 2, length: int = 8) -> Callable[[], torch.Tensor]:
    return lambda: torch.randint(0, vocab, (batch, length))


def _image(size: int = 32, batch: int = 2) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(batch, 3, size, size)


def _logits(output: Any) -> torch.Tensor:
    return output.logits


def _first(output: Any) -> torch.Tensor:
    return output[0]


def _bert_input() -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 64, (2, 8))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _bag_input() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randint(0, 50, (10,)), torch.tensor([0, 4])


_ZOO: tuple[ZooEntry, ...] = (
    # plain baselines (the old analysis was right on these; must stay identical)
    ZooEntry("mlp", PlainMLP, lambda: torch.randn(2, 12), "layers.2.weight", tags=("plain",)),
    ZooEntry("cnn_maxpool", PlainCNN, _image(16), "fc.weight", tags=("plain", "batchnorm", "maxpool")),
    # torchvision
    ZooEntry("tv_resnet18", _tv("resnet18", num_classes=10), _image(32), "fc.weight", fast=False, tags=("residual", "batchnorm")),
    ZooEntry("tv_mobilenet_v3_small", _tv_mobilenet_v3_small, _image(32), "classifier.3.weight", tags=("gate", "hardswish")),
    ZooEntry("tv_efficientnet_small", _tv_efficientnet_small, _image(32), "classifier.1.weight", tags=("gate", "silu")),
    ZooEntry("tv_regnet_y_small", _tv_regnet_small, _image(32), "fc.weight", tags=("gate", "grouped")),
    ZooEntry("tv_convnext_small", _tv_convnext_small, _image(32), "classifier.2.weight", tags=("layernorm", "channels_last", "layer_scale")),
    ZooEntry("tv_vit_tiny", _tv_vit_tiny, _image(32), "heads.head.weight", tags=("layernorm", "attention", "fused", "tokens")),
    ZooEntry("tv_swin_tiny", _tv_swin_tiny, _image(32), "head.weight", tags=("layernorm", "attention", "channels_last")),
    ZooEntry("tv_squeezenet1_0", _tv("squeezenet1_0", num_classes=10), _image(64), "classifier.1.weight", fast=False,
             tags=("concat", "maxpool")),
    ZooEntry("tv_densenet_small", _tv_densenet_small, _image(32), "classifier.weight", tags=("concat", "batchnorm")),
    # timm
    ZooEntry("timm_test_vit", _timm("test_vit", num_classes=10, img_size=32), _image(32), "head.weight", tags=("layernorm", "attention", "timm")),
    ZooEntry("timm_test_efficientnet", _timm("test_efficientnet", num_classes=10), _image(32), "classifier.weight", tags=("gate", "timm")),
    ZooEntry("timm_test_convnext", _timm("test_convnext", num_classes=10), _image(32), "head.fc.weight", fast=False,
             tags=("layernorm", "timm")),
    # HuggingFace transformers (tiny configs)
    ZooEntry("hf_gpt2_lm", _hf_gpt2_lm, _ids(64), "lm_head.weight", _logits, tags=("tied", "conv1d", "attention", "tokens"),
             tied=(("lm_head.weight", "transformer.wte.weight"),)),
    ZooEntry("hf_gpt2_cls", _hf_gpt2_cls, _ids(48), "score.weight", _logits, tags=("conv1d", "attention", "tokens")),
    ZooEntry("hf_bert_cls", _hf_bert_cls, _bert_input, "classifier.weight", _logits, tags=("layernorm", "attention", "dict_input")),
    ZooEntry("hf_llama_lm", _hf_llama_lm, _ids(64), "lm_head.weight", _logits, tags=("tied", "rmsnorm", "gate", "attention"),
             tied=(("lm_head.weight", "model.embed_tokens.weight"),)),
    # hand-written, one failure class each
    ZooEntry("tied_lm", TiedLM, _ids(40), "lm_head.weight", tags=("tied", "tokens", "layernorm"), tied=(("lm_head.weight", "tok.weight"),)),
    ZooEntry("lstm_classifier", LSTMClassifier, lambda: torch.randn(2, 5, 6), "head.weight", tags=("rnn",)),
    ZooEntry("gru_classifier", GRUClassifier, _ids(30, length=6), "head.weight", tags=("rnn", "tokens")),
    ZooEntry("mha_classifier", MHAClassifier, lambda: torch.randn(2, 5, 6), "head.weight", tags=("attention", "fused", "tokens")),
    ZooEntry("dict_output", DictOutputNet, lambda: torch.randn(2, 10), "head.weight", lambda o: o["logits"], tags=("dict_output",)),
    ZooEntry("tuple_output", TupleOutputNet, lambda: {"image": torch.randn(2, 6), "meta": torch.randn(2, 4)}, "head.weight", _first,
             tags=("tuple_output", "dict_input", "concat")),
    ZooEntry("multi_head", MultiHeadNet, _image(8), "cls.weight", lambda o: o["cls"], tags=("dict_output", "multi_head")),
    ZooEntry("parametrized", ParametrizedNet, lambda: torch.randn(2, 10), "head.weight", tags=("parametrize",)),
    ZooEntry("layernorm_mlp", LayerNormMLP, lambda: torch.randn(2, 10), "head.weight", tags=("layernorm",)),
    ZooEntry("swiglu_mlp", SwiGLUMLP, lambda: torch.randn(2, 5, 8), "head.weight", tags=("gate", "rmsnorm", "tokens")),
    ZooEntry("sigmoid_glu", SigmoidGLU, lambda: torch.randn(2, 10), "head.weight", tags=("gate",)),
    ZooEntry("se_cnn", SECNN, _image(8), "fc.weight", tags=("gate",)),
    ZooEntry("embedding_bag", EmbeddingBagNet, _bag_input, "head.weight", tags=("tokens", "embedding_bag")),
    ZooEntry("channels_last", ChannelsLastNet, _image(8), "head.weight", tags=("channels_last", "layernorm")),
    # full-size torchvision constructors: benchmark only
    ZooEntry("tv_mobilenet_v3_small_full", _tv("mobilenet_v3_small", num_classes=10), _image(64), "classifier.3.weight", fast=False, tags=("gate",)),
    ZooEntry("tv_efficientnet_b0", _tv("efficientnet_b0", num_classes=10), _image(64), "classifier.1.weight", fast=False, tags=("gate",)),
    ZooEntry("tv_regnet_y_400mf", _tv("regnet_y_400mf", num_classes=10), _image(64), "fc.weight", fast=False, tags=("gate",)),
    ZooEntry("tv_convnext_tiny", _tv("convnext_tiny", num_classes=10), _image(64), "classifier.2.weight", fast=False, tags=("layernorm",)),
    ZooEntry("tv_swin_t", _tv("swin_t", num_classes=10), _image(64), "head.weight", fast=False, tags=("layernorm", "attention")),
    ZooEntry("tv_densenet121", _tv("densenet121", num_classes=10), _image(64), "classifier.weight", fast=False, tags=("concat",)),
    ZooEntry("tv_vit_b_16_small_image", _tv("vit_b_16", num_classes=10, image_size=64), _image(64), "heads.head.weight", fast=False,
             tags=("layernorm", "attention", "fused")),
)


def zoo(*, fast_only: bool = False) -> list[ZooEntry]:
    """The zoo entries (``fast_only``: only those run in ``make test``)."""
    return [e for e in _ZOO if e.fast or not fast_only]


def entry(name: str) -> ZooEntry:
    """The entry called ``name``.

    Raises:
        KeyError: naming the known entries.
    """
    for candidate in _ZOO:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no zoo entry {name!r}; expected one of {[e.name for e in _ZOO]}")
