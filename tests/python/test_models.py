"""save_model/load_model with tied weights, and the shared-tensor helpers behind them."""

import pytest
import torch

from libsafetensors import safe_open
from libsafetensors.torch import (
    _find_shared_tensors,
    _is_complete,
    _remove_duplicate_names,
    load_model,
    save_file,
    save_model,
)


class Tied(torch.nn.Module):
    """An encoder/decoder pair sharing one embedding, as language models tie their heads."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.hidden = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight


class Untied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.hidden = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 10, bias=False)


def test_tied_weights_are_stored_once_and_restored(path):
    model = Tied()
    save_model(model, path, metadata={"format": "pt"})
    with safe_open(path, framework="pt") as f:
        # "embed.weight" < "head.weight": the first complete name in sorted order is kept.
        assert f.keys() == ["embed.weight", "hidden.bias", "hidden.weight"]
        assert f.metadata() == {"format": "pt", "head.weight": "embed.weight"}

    fresh = Tied()
    missing, unexpected = load_model(fresh, path)
    assert not missing and not unexpected
    assert torch.equal(fresh.head.weight, model.embed.weight)
    assert fresh.head.weight is fresh.embed.weight  # still tied


def test_user_metadata_wins_over_the_recorded_names(path):
    save_model(Tied(), path, metadata={"head.weight": "mine"})
    with safe_open(path, framework="pt") as f:
        assert f.metadata() == {"head.weight": "mine"}


def test_files_keeping_the_other_name_load_too(path):
    model = Tied()
    state = model.state_dict()
    del state["embed.weight"]
    save_file(state, path)
    fresh = Tied()
    load_model(fresh, path)
    assert torch.equal(fresh.embed.weight, model.embed.weight)


def test_strict_loading_reports_names(path):
    save_model(Tied(), path)
    with pytest.raises(RuntimeError, match='Missing key\\(s\\) in state_dict: "head.weight"'):
        load_model(Untied(), path)
    missing, unexpected = load_model(Untied(), path, strict=False)
    assert missing == {"head.weight"} and unexpected == []


def test_non_contiguous_parameters_are_made_contiguous_unless_told_not_to(path):
    # The reference's default is force_contiguous=True; False refuses non-contiguous tensors.
    model = Untied()
    model.hidden.weight = torch.nn.Parameter(torch.randn(4, 4).t())
    with pytest.raises(ValueError, match=r"save_model\(\.\.\., force_contiguous=True\)"):
        save_model(model, path, force_contiguous=False)
    save_model(model, path)
    fresh = Untied()
    load_model(fresh, path)
    assert torch.equal(fresh.hidden.weight, model.hidden.weight)


def test_shared_tensor_helpers():
    storage = torch.zeros(16)
    assert _is_complete(storage) and not _is_complete(storage[:8])
    assert not _is_complete(storage[::2])
    groups = _find_shared_tensors({"all": storage, "low": storage[:8], "high": storage[8:],
                                   "other": torch.zeros(2)})
    assert sorted(map(sorted, groups)) == [["all", "high", "low"], ["other"]]
    # Non-overlapping views of one storage are not shared.
    assert _find_shared_tensors({"low": storage[:8], "high": storage[8:]}) == [{"low"}, {"high"}]
    assert _remove_duplicate_names({"b": storage, "a": storage}) == {"a": ["b"]}
    assert _remove_duplicate_names({"b": storage, "a": storage},
                                   preferred_names=["b"]) == {"b": ["a"]}
    assert _remove_duplicate_names({"b": storage, "a": storage},
                                   discard_names=["a"]) == {"b": ["a"]}
    with pytest.raises(RuntimeError, match="Refusing to save/load"):
        _remove_duplicate_names({"low": storage[:8], "high": storage[4:]})
