"""Structured inputs and outputs: how batches are split, sliced, fed to a model, and which output is "the" one."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch.utils.data import DataLoader

from prune_landscape.batching import (
    Batches,
    batch_size_of,
    call_model,
    cat_inputs,
    first_batch,
    iter_batches,
    num_samples,
    select_output,
)


def test_dict_batches_split_into_keyword_inputs_and_the_first_target_key():
    rows = [{"input_ids": torch.tensor([i, i + 1]), "attention_mask": torch.ones(2), "labels": torch.tensor(i)} for i in range(5)]
    batches = list(iter_batches(DataLoader(rows, batch_size=2)))
    assert [tuple(x["input_ids"].shape) for x, _ in batches] == [(2, 2), (2, 2), (1, 2)]
    assert sorted(batches[0][0]) == ["attention_mask", "input_ids"] and batches[0][1].tolist() == [0, 1]
    inputs, targets = first_batch(DataLoader([{"inputs": torch.zeros(3), "targets": torch.tensor(1)}], batch_size=1))
    assert tuple(inputs.shape) == (1, 3) and targets.tolist() == [1]
    inputs, targets = first_batch(DataLoader([{"x": torch.zeros(3)}], batch_size=1))  # no targets at all
    assert isinstance(inputs, torch.Tensor) and tuple(inputs.shape) == (1, 3) and targets is None  # one entry: positional
    inputs, targets = first_batch(DataLoader([{"image": torch.ones(3), "label": torch.tensor(2)}], batch_size=1))
    assert torch.equal(inputs, torch.ones(1, 3)) and targets.tolist() == [2]


def test_structured_pairs_are_sliced_leaf_by_leaf_and_cut_at_max_samples():
    inputs = {"image": torch.arange(10.0).reshape(5, 2), "meta": (torch.arange(5), torch.zeros(5, 3))}
    targets = torch.arange(5)
    batches = list(iter_batches((inputs, targets), batch_size=2, max_samples=3))
    assert [b[1].tolist() for b in batches] == [[0, 1], [2]]
    assert batches[1][0]["image"].tolist() == [[4.0, 5.0]] and batches[1][0]["meta"][0].tolist() == [2]
    assert num_samples((inputs, targets)) == 5
    assert cat_inputs([b[0] for b in batches])["image"].tolist() == inputs["image"][:3].tolist()


def test_inputs_without_a_common_batch_dimension_are_one_batch():
    # EmbeddingBag: 10 ids and 2 offsets for 2 samples cannot be sliced along dim 0.
    ids, offsets, targets = torch.arange(10), torch.tensor([0, 4]), torch.tensor([1, 0])
    assert batch_size_of((ids, offsets)) is None
    (batch,) = list(iter_batches(((ids, offsets), targets), batch_size=1))
    assert batch[0][0] is ids and batch[1] is targets
    prepared = Batches([((ids, offsets), targets)])
    assert list(iter_batches(prepared, batch_size=1))[0][1] is targets


def test_call_model_feeds_positional_and_keyword_inputs():
    def model(*args, **kwargs):
        return args, kwargs

    assert call_model(model, torch.ones(1)) == ((torch.ones(1),), {})
    x, y = torch.zeros(1), torch.ones(1)
    assert call_model(model, (x, y))[0] == (x, y)
    assert call_model(model, {"a": x})[1] == {"a": x}


def test_select_output_rules_and_transform():
    logits, features = torch.zeros(2, 3), torch.ones(2, 4)
    assert select_output(logits) is logits
    assert select_output({"logits": logits, "features": features}) is logits
    assert select_output(OrderedDict(only=features)) is features
    assert select_output((features, (logits, logits))) is features  # an LSTM's (output, (h, c))

    class HFOutput(OrderedDict):  # a HuggingFace ModelOutput is an OrderedDict with attribute access
        @property
        def logits(self):
            return self["logits"]

    assert select_output(HFOutput(loss=None, logits=logits)) is logits
    assert select_output({"cls": logits, "box": features}, lambda out: out["box"]) is features
    with pytest.raises(ValueError, match=r"dict with tensors \['cls', 'box'\] and no 'logits': pass output_transform=lambda out: out\['cls'\]"):
        select_output({"cls": logits, "box": features})
    with pytest.raises(ValueError, match="output_transform must return a tensor, got tuple"):
        select_output((logits,), lambda out: out)
    with pytest.raises(ValueError, match="cannot pick the output tensor from a str"):
        select_output("text")
