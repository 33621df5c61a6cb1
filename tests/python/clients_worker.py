"""Runs transformers / diffusers flows in a fresh interpreter for test_clients_*.py.

    python clients_worker.py FLOWS MODE OUT_DIR

FLOWS is `transformers` or `diffusers`. MODE says which `safetensors` the clients get:
  reference  the installed reference package; libsafetensors must never be imported.
  ours       libsafetensors.install_as_safetensors() before the clients are imported.
  late       the clients imported first (binding the reference), a few flows run with our
             package importable but not installed (the spy must see no call), then
             install_as_safetensors() (rebinding) and the same flows again.

A spy counts calls of our safe_open, of the serializer our save_file uses and of our
load_file and load, so that a side that claims to use our package is seen to. Results go to OUT_DIR/result.pt (torch.save): the
loaded state dicts per flow, the spy's counts, the names rebound, and the bytes' SHA-256 of
every safetensors file written.

Run with no `safetensors` alias on sys.path (the test suite's alias/ would hide the reference).
"""

import hashlib
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

FLOWS, MODE, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
CALLS = {"safe_open": 0, "serialize_file": 0, "load_file": 0, "load": 0}
REBOUND = []


def install_spy():
    import libsafetensors
    import libsafetensors._open as st_open
    import libsafetensors.torch as st_torch

    init = st_open.safe_open.__init__

    def counting_init(self, *args, **kwargs):
        CALLS["safe_open"] += 1
        return init(self, *args, **kwargs)

    st_open.safe_open.__init__ = counting_init
    serialize_file = st_torch.serialize_file

    def counting_serialize_file(*args, **kwargs):
        CALLS["serialize_file"] += 1
        return serialize_file(*args, **kwargs)

    st_torch.serialize_file = counting_serialize_file
    load_file = st_torch.load_file

    def counting_load_file(*args, **kwargs):
        CALLS["load_file"] += 1
        return load_file(*args, **kwargs)

    # Through the module attribute, as diffusers calls it (safetensors.torch.load_file).
    st_torch.load_file = counting_load_file
    load = st_torch.load

    def counting_load(*args, **kwargs):
        CALLS["load"] += 1
        return load(*args, **kwargs)

    st_torch.load = counting_load  # transformers' _safe_load_bytes, without mmap
    return libsafetensors


def install():
    import libsafetensors

    REBOUND.extend(libsafetensors.install_as_safetensors())


if MODE == "ours":
    install_spy()
    install()

import torch  # noqa: E402

FILES = {}


def record_files(directory, tag, variant=None):
    for name in sorted(os.listdir(directory)):
        if name.endswith(".safetensors") and (variant is None or f".{variant}." in name):
            with open(os.path.join(directory, name), "rb") as f:
                FILES[f"{tag}/{name}"] = hashlib.sha256(f.read()).hexdigest()


def plain(state_dict):
    return {k: v.detach().to("cpu").clone() for k, v in state_dict.items()}


# ---------------------------------------------------------------------------------------------
# transformers

def transformers_models():
    from transformers import (BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel,
                              LlamaConfig, LlamaForCausalLM)

    return {
        "gpt2": (GPT2LMHeadModel, GPT2Config(vocab_size=96, n_positions=32, n_embd=32, n_layer=2,
                                             n_head=2, tie_word_embeddings=True)),
        "llama": (LlamaForCausalLM, LlamaConfig(vocab_size=96, hidden_size=32,
                                                intermediate_size=64, num_hidden_layers=2,
                                                num_attention_heads=4, num_key_value_heads=2,
                                                max_position_embeddings=32,
                                                tie_word_embeddings=False)),
        "bert": (BertForMaskedLM, BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=64,
                                             max_position_embeddings=32)),
    }


# (name, max_shard_size, from_pretrained keyword arguments)
def transformers_flows(full):
    import transformers

    major = int(transformers.__version__.split(".")[0])
    dtype_key = "dtype" if major >= 5 else "torch_dtype"
    flows = [("single-cpu", None, {"device_map": "cpu"}),
             ("sharded-bf16-auto", "20KB", {dtype_key: torch.bfloat16, "device_map": "auto"})]
    if full:
        flows += [("single-bf16-auto", None, {dtype_key: torch.bfloat16, "device_map": "auto"}),
                  ("sharded-plain", "20KB", {})]
        if major >= 5:  # transformers 4 has no disable_mmap
            # Read whole into memory: safetensors.torch.load of the file's bytes.
            flows.append(("sharded-nommap", "20KB", {"disable_mmap": True}))
    return flows


def run_transformers(out, tag, full=True):
    results = {}
    checks = {}
    models = transformers_models()
    for model_name, (cls, config) in models.items():
        if not full and model_name != "gpt2":
            continue
        torch.manual_seed(1234)
        model = cls(config).eval()
        original = plain(model.state_dict())
        for flow, shard, kwargs in transformers_flows(full):
            directory = os.path.join(out, tag, model_name, flow)
            save_kwargs = {"max_shard_size": shard} if shard else {}
            model.save_pretrained(directory, **save_kwargs)
            files = [n for n in os.listdir(directory) if n.endswith(".safetensors")]
            index = os.path.exists(os.path.join(directory, "model.safetensors.index.json"))
            assert (len(files) > 1 and index) if shard else (files == ["model.safetensors"]), files
            record_files(directory, f"{tag}/{model_name}/{flow}")
            loaded = cls.from_pretrained(directory, **kwargs).eval()
            state = plain(loaded.state_dict())
            dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
            for key, tensor in original.items():
                expected = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() \
                    else tensor
                assert torch.equal(state[key], expected), (model_name, flow, key)
            if model_name == "gpt2":
                tied = loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()
                assert tied, (flow, "lm_head and wte are no longer tied")
                checks[f"{model_name}/{flow}/tied"] = tied
            results[f"{model_name}/{flow}"] = state
        if full:
            # accelerate's own loader on the sharded directory: it checks the metadata's
            # {"format": "pt"} and reads through safe_open and load_file.
            # (device_map=None would take torch.distributed's path, which needs a process group.)
            from accelerate import init_empty_weights
            from accelerate.utils import load_checkpoint_in_model

            with init_empty_weights():
                empty = cls(config)
            empty.tie_weights()
            directory = os.path.join(out, tag, model_name, "sharded-plain")
            load_checkpoint_in_model(empty, directory, device_map={"": "cpu"})
            state = plain(empty.state_dict())
            for key, tensor in original.items():
                assert torch.equal(state[key], tensor), (model_name, "accelerate", key)
            results[f"{model_name}/accelerate"] = state
    return results, checks


# ---------------------------------------------------------------------------------------------
# diffusers

def diffusers_models():
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(4321)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8,
        attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
        latent_channels=4, layers_per_block=1, norm_num_groups=4, sample_size=16)
    return {"unet": unet.eval(), "vae": vae.eval()}


def run_diffusers(out, tag, full=True):
    results = {}
    checks = {}
    for name, model in diffusers_models().items():
        if not full and name != "vae":
            continue
        cls = type(model)
        original = plain(model.state_dict())
        directory = os.path.join(out, tag, name)
        model.save_pretrained(directory)
        record_files(directory, f"{tag}/{name}")
        loaded = cls.from_pretrained(directory).eval()
        state = plain(loaded.state_dict())
        assert state.keys() == original.keys(), name
        for key, tensor in original.items():
            assert torch.equal(state[key], tensor), (name, key)
        results[name] = state
        if not full:
            continue
        # The fp16 variant, as the hub's repositories have it: diffusion_pytorch_model.fp16.*
        model.to(torch.float16).save_pretrained(directory, variant="fp16")
        assert os.path.exists(os.path.join(directory,
                                           "diffusion_pytorch_model.fp16.safetensors"))
        record_files(directory, f"{tag}/{name}-fp16", variant="fp16")
        half = cls.from_pretrained(directory, variant="fp16", torch_dtype=torch.float16).eval()
        state = plain(half.state_dict())
        for key, tensor in original.items():
            got = state[key]
            assert got.dtype == torch.float16, (name, key, got.dtype)
            assert torch.equal(got, tensor.to(torch.float16)), (name, key)
        results[f"{name}-fp16"] = state
        model.to(torch.float32)
    converted = os.environ.get("CLIENTS_CONVERTED")
    if converted and full:
        # A Stable-Diffusion .ckpt converted by `safetensors convert`, read as diffusers reads
        # a single-file checkpoint.
        from diffusers.models.model_loading_utils import load_state_dict

        results["converted"] = plain(load_state_dict(converted))
    return results, checks


RUN = {"transformers": run_transformers, "diffusers": run_diffusers}[FLOWS]


def main():
    out = {"mode": MODE}
    if MODE == "late":
        # Binds the reference's names in the clients' modules.
        if FLOWS == "transformers":
            import transformers.modeling_utils  # noqa: F401
        else:
            import diffusers.models.modeling_utils  # noqa: F401

        install_spy()
        RUN(OUT, "before-install", full=False)
        out["calls_before_install"] = dict(CALLS)
        install()
        out["results"], out["checks"] = RUN(OUT, "late", full=False)
    else:
        out["results"], out["checks"] = RUN(OUT, MODE)
    import safetensors

    out["calls"] = dict(CALLS)
    out["rebound"] = REBOUND
    out["files"] = FILES
    out["safetensors_file"] = getattr(safetensors, "__file__", None)
    out["libsafetensors_imported"] = "libsafetensors" in sys.modules
    torch.save(out, os.path.join(OUT, "result.pt"))
    print(json.dumps({k: out[k] for k in ("mode", "calls", "libsafetensors_imported")}))


if __name__ == "__main__":
    main()
