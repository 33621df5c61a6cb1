"""A tiny Llama-shaped model with its own tp_plan on 4 gloo ranks: transformers builds the
tensor-parallel model (DTensor parameters), libsafetensors loads each rank's parts with
load_checkpoint(tp_plan=model.tp_plan), and they are bitwise the parts transformers loaded;
put into the model in place of transformers' own, the forward pass equals the single-process
model's. Uneven splits on purpose: 50 intermediate features and 66 vocabulary rows over 4."""

import os

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
transformers = pytest.importorskip("transformers")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("this torch has no gloo backend", allow_module_level=True)
if not hasattr(transformers, "LlamaForCausalLM") or int(transformers.__version__.split(".")[0]) < 5:
    pytest.skip("needs transformers 5 (tensor parallelism on CPU with DTensor)",
                allow_module_level=True)

import torch.multiprocessing as mp  # noqa: E402

from libsafetensors import Checkpoint  # noqa: E402
from libsafetensors.torch import load_checkpoint  # noqa: E402

WORLD = 4


def _config():
    return transformers.LlamaConfig(
        vocab_size=66, hidden_size=32, intermediate_size=50, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
        tie_word_embeddings=False)


def _inputs():
    return torch.arange(12).reshape(1, 12) % 66


def _worker(rank, world, directory, through):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world))
    if through == "ours":
        # transformers' own tensor-parallel loading (its safe_open and get_slice calls) served
        # by libsafetensors instead of the reference package.
        import libsafetensors
        libsafetensors.install_as_safetensors()
        import safetensors
        assert safetensors.safe_open is libsafetensors.safe_open
    dist.init_process_group("gloo", init_method=f"file://{directory}/init", rank=rank,
                            world_size=world)
    try:
        model = transformers.LlamaForCausalLM.from_pretrained(
            os.path.join(directory, "model"), tp_plan="auto", dtype=torch.float32)
        checkpoint = Checkpoint(os.path.join(directory, "model"))
        ours = load_checkpoint(checkpoint, tp_plan=model.tp_plan, strict=True)
        read = sum(checkpoint.bytes_read())
        assert read < checkpoint.total_size, (read, checkpoint.total_size)
        parameters = dict(model.named_parameters())
        assert sorted(parameters) == sorted(ours)
        for name, parameter in parameters.items():
            local = parameter.to_local() if hasattr(parameter, "to_local") else parameter
            assert local.shape == ours[name].shape, (name, local.shape, ours[name].shape)
            assert torch.equal(local.detach(), ours[name]), name
        with torch.no_grad():
            expected = model(_inputs()).logits
            # The model with libsafetensors' parts in place of transformers' own.
            for name, parameter in parameters.items():
                local = parameter.to_local() if hasattr(parameter, "to_local") else parameter
                local.zero_()
                local.copy_(ours[name])
            got = model(_inputs()).logits
        assert torch.equal(got, expected)
        reference = torch.load(os.path.join(directory, "reference.pt"))
        torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("through", ["reference", "ours"])
def test_tiny_llama_on_four_gloo_ranks(tmp_path, through):
    """With transformers loading through the reference package, and through ours."""
    directory = str(tmp_path)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(_config())
    model.save_pretrained(os.path.join(directory, "model"))
    with torch.no_grad():
        torch.save(model(_inputs()).logits, os.path.join(directory, "reference.pt"))
    mp.spawn(_worker, args=(WORLD, directory, through), nprocs=WORLD, join=True)
