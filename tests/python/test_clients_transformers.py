"""transformers as a real client: save_pretrained + from_pretrained of tiny GPT-2, Llama and
BERT models (random weights from configs, offline), single file and sharded, in bfloat16 with
device_map="auto" and in float32 with device_map="cpu", and the sharded files again by
accelerate's load_checkpoint_in_model (which checks the {"format": "pt"} metadata); through
libsafetensors' install_as_safetensors() and through the reference package, in separate
interpreters (clients_worker.py). Both must load the same state dicts, equal to the saved
model's; the files written must be the same bytes."""


import pytest

transformers = pytest.importorskip("transformers",
                                   reason="transformers is not installed (the test venv has it)")
pytest.importorskip("accelerate", reason="accelerate is not installed (the test venv has it)")

import libsafetensors  # noqa: E402
from clients_support import (NO_CALLS, assert_each_side_used_its_package,  # noqa: E402
                             assert_same_state_dicts, run_workers)  # noqa: E402

MODELS = ("gpt2", "llama", "bert")
TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])
FLOWS = ("single-cpu", "sharded-bf16-auto", "single-bf16-auto", "sharded-plain")
if TRANSFORMERS_MAJOR >= 5:  # transformers 4 has no disable_mmap
    FLOWS += ("sharded-nommap",)
LATE_FLOWS = FLOWS[:2]  # the late install runs only GPT-2 in these two


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return run_workers("transformers", ("reference", "ours", "late"),
                       tmp_path_factory.mktemp("transformers"))


def test_each_side_used_the_package_it_claims(runs):
    ours = assert_each_side_used_its_package(runs)
    # Every save_pretrained wrote each shard through our save_file; from_pretrained opened them.
    shards = sum(1 for name in ours["files"])
    assert ours["calls"]["serialize_file"] == shards
    assert ours["calls"]["safe_open"] >= shards
    # disable_mmap=True reads each shard's bytes through our load.
    assert ours["calls"]["load"] == sum(1 for name in ours["files"] if "/sharded-nommap/" in name)
    assert ours["rebound"] == []  # installed before transformers was imported


def test_every_flow_ran(runs):
    expected = {f"{model}/{flow}" for model in MODELS for flow in FLOWS + ("accelerate",)}
    for side in ("reference", "ours"):
        assert set(runs[side]["results"]) == expected, side
    assert set(runs["late"]["results"]) == {f"gpt2/{flow}" for flow in LATE_FLOWS}


def test_loaded_state_dicts_equal_the_reference_flow(runs):
    reference = runs["reference"]["results"]
    assert_same_state_dicts(runs["ours"]["results"], reference)
    late = runs["late"]["results"]
    assert_same_state_dicts(late, {flow: reference[flow] for flow in late})


def test_files_are_byte_identical_to_the_reference(runs):
    reference = {k.split("/", 1)[1]: v for k, v in runs["reference"]["files"].items()}
    ours = {k.split("/", 1)[1]: v for k, v in runs["ours"]["files"].items()}
    assert ours == reference


def test_tied_weights_survive(runs):
    for side, flows in (("reference", FLOWS), ("ours", FLOWS), ("late", LATE_FLOWS)):
        checks = runs[side]["checks"]
        assert set(checks) == {f"gpt2/{f}/tied" for f in flows}, side
        assert all(checks.values()), side
        for flow in flows:
            state = runs[side]["results"][f"gpt2/{flow}"]
            assert "lm_head.weight" in state and "transformer.wte.weight" in state


def test_install_after_transformers_was_imported(runs):
    late = runs["late"]
    # Not installed: transformers went on with the reference, our spy saw nothing.
    assert late["calls_before_install"] == NO_CALLS
    # Installed late: the names transformers took from the reference are rebound and used
    # (transformers 5 imports `load` as _safe_load_bytes, 4 imports `load_file`).
    loader = "_safe_load_bytes" if TRANSFORMERS_MAJOR >= 5 else "safe_load_file"
    for name in ("safe_open", "safe_save_file", loader):
        assert "transformers.modeling_utils." + name in late["rebound"]
    assert late["calls"]["serialize_file"] > 0
    assert late["calls"]["safe_open"] > 0
    assert late["safetensors_file"] == libsafetensors.__file__
