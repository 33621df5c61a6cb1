"""diffusers as a real client: a tiny UNet2DConditionModel and AutoencoderKL (random weights
from configs, offline) saved and loaded, float32 and the fp16 variant, through libsafetensors'
install_as_safetensors() and through the reference, in separate interpreters
(clients_worker.py); and a Stable-Diffusion-style .ckpt converted by `safetensors convert`,
then read by diffusers' loader on both sides to the checkpoint's tensors."""

import json
import os
import subprocess

import pytest

pytest.importorskip("diffusers", reason="diffusers is not installed (the test venv has it)")

import torch  # noqa: E402

import libsafetensors  # noqa: E402
from clients_support import (NO_CALLS, assert_each_side_used_its_package,  # noqa: E402
                             assert_same_state_dicts, run_workers)  # noqa: E402
from libsafetensors.torch import load_file  # noqa: E402

FLOWS = {"unet", "unet-fp16", "vae", "vae-fp16", "converted"}


def cli_path():
    """The `safetensors` command of the build tree this package comes from (or
    $SAFETENSORS_CLI), as test_paths.py finds it."""
    built = os.path.join(os.path.dirname(libsafetensors.__file__), "..", "..", "tools",
                         "safetensors")
    return os.environ.get("SAFETENSORS_CLI", os.path.normpath(built))


def sd_state_dict():
    """Names, shapes and dtypes as a Stable Diffusion 1.x checkpoint has them, in miniature."""
    generator = torch.Generator().manual_seed(7)
    shapes = {
        "model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
        "model.diffusion_model.input_blocks.0.0.bias": (8,),
        "model.diffusion_model.time_embed.0.weight": (32, 8),
        "model.diffusion_model.out.2.weight": (4, 8, 3, 3),
        "first_stage_model.encoder.conv_in.weight": (8, 3, 3, 3),
        "first_stage_model.decoder.conv_out.bias": (3,),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (16, 8),
        "model_ema.diffusion_modelinput_blocks00weight": (8, 4, 3, 3),
    }
    state = {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    state["model_ema.decay"] = torch.tensor(0.9999)
    state["model_ema.num_updates"] = torch.tensor(1234, dtype=torch.int32)
    state["alphas_cumprod"] = torch.rand(10, generator=generator, dtype=torch.float64)
    state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = \
        torch.arange(6).unsqueeze(0)
    state["first_stage_model.quant_conv.weight"] = torch.randn(8, 8, 1, 1).half()
    return state


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    if not os.access(cli_path(), os.X_OK):
        pytest.skip("no safetensors command next to this package (set SAFETENSORS_CLI)")
    directory = tmp_path_factory.mktemp("ckpt")
    state = sd_state_dict()
    ckpt = str(directory / "sd-tiny.ckpt")
    torch.save({"state_dict": state, "global_step": 470000, "epoch": 6}, ckpt)
    run = subprocess.run([cli_path(), "convert", ckpt, "--json"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    out = str(directory / "sd-tiny.safetensors")
    assert os.path.exists(out), report
    return out, state, report


@pytest.fixture(scope="module")
def runs(tmp_path_factory, converted):
    return run_workers("diffusers", ("reference", "ours", "late"),
                       tmp_path_factory.mktemp("diffusers"),
                       extra_env={"CLIENTS_CONVERTED": converted[0]})


def test_each_side_used_the_package_it_claims(runs):
    ours = assert_each_side_used_its_package(runs)
    assert ours["calls"]["serialize_file"] == len(ours["files"]) == 4
    # from_pretrained and the converted checkpoint: safetensors.torch.load_file each.
    assert ours["calls"]["load_file"] == 5


def test_models_round_trip_and_equal_the_reference_flow(runs):
    for side in ("reference", "ours"):
        assert set(runs[side]["results"]) == FLOWS, side
    reference = runs["reference"]["results"]
    assert_same_state_dicts(runs["ours"]["results"], reference)
    assert set(runs["late"]["results"]) == {"vae"}  # the late install runs the VAE only
    assert_same_state_dicts(runs["late"]["results"], {"vae": reference["vae"]})
    # The worker checked each load against the model saved; the fp16 variant is fp16.
    assert all(t.dtype == torch.float16 for t in runs["ours"]["results"]["unet-fp16"].values())


def test_files_are_byte_identical_to_the_reference(runs):
    reference = {k.split("/", 1)[1]: v for k, v in runs["reference"]["files"].items()}
    ours = {k.split("/", 1)[1]: v for k, v in runs["ours"]["files"].items()}
    assert ours == reference


def test_install_after_diffusers_was_imported(runs):
    late = runs["late"]
    assert late["calls_before_install"] == NO_CALLS
    assert "diffusers.models.modeling_utils.safetensors" in late["rebound"]
    assert "diffusers.models.model_loading_utils.safetensors" in late["rebound"]
    assert late["calls"]["serialize_file"] == 1 and late["calls"]["load_file"] == 1


def test_legacy_format_ckpt_converts_too(tmp_path):
    # Older training scripts wrote the pre-zip pickle format; convert reads it without running it.
    if not os.access(cli_path(), os.X_OK):
        pytest.skip("no safetensors command next to this package (set SAFETENSORS_CLI)")
    state = sd_state_dict()
    ckpt = str(tmp_path / "legacy.ckpt")
    torch.save({"state_dict": state, "global_step": 3}, ckpt, _use_new_zipfile_serialization=False)
    out = str(tmp_path / "legacy.safetensors")
    run = subprocess.run([cli_path(), "convert", ckpt, out], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    loaded = load_file(out)
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], v) and loaded[k].dtype == v.dtype for k, v in state.items())


def test_converted_checkpoint_loads_to_its_tensors(converted, runs):
    path, state, report = converted
    # global_step and epoch are not tensors: the report names what was left out.
    assert "global_step" in json.dumps(report)
    for loaded in (load_file(path), runs["ours"]["results"]["converted"],
                   runs["reference"]["results"]["converted"]):
        assert loaded.keys() == state.keys()
        for name, tensor in state.items():
            assert loaded[name].dtype == tensor.dtype, name
            assert torch.equal(loaded[name], tensor), name
