"""device_map on one machine: `libsafetensors.plan_device_map` (the C++ planner, as `safetensors
plan` runs it) and `load_checkpoint(device_map=...)`: cpu tensors loaded, disk tensors lazy views
of the files (their pages absent from the process's page tables), GPU entries
refused before reading where torch has no CUDA; and transformers' from_pretrained taking a map
planned here."""

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

import libsafetensors  # noqa: E402
from libsafetensors import Checkpoint, DeviceMap, plan_device_map  # noqa: E402
from libsafetensors._convert import device_for  # noqa: E402
from libsafetensors.torch import load_checkpoint, save_file  # noqa: E402

MiB = 1 << 20
LAYERS = 4


def _tensors():
    """A Llama-shaped state dict: 256 KiB embedding, 4 layers of 4 MiB, a norm, lm_head. The
    layers' tensors are 2 MiB: more than the gap File.populate reads through between two
    selected tensors (1 MiB), so that a disk tensor between two cpu ones stays unread."""
    g = torch.Generator().manual_seed(7)
    out = {"model.embed_tokens.weight": torch.randn(64, 1024, generator=g),
           "model.norm.weight": torch.randn(1024, generator=g),
           "lm_head.weight": torch.randn(64, 1024, generator=g)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        out[p + "self_attn.q_proj.weight"] = torch.randn(512, 1024, generator=g)
        out[p + "mlp.up_proj.weight"] = torch.randn(512, 1024, generator=g)
        out[p + "input_layernorm.weight"] = torch.randn(1024, generator=g)
        out[p + "positions"] = torch.arange(1024, dtype=torch.int64)  # never converted
    return out


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    """The state dict in 3 shards with transformers' index."""
    directory = tmp_path_factory.mktemp("dmap")
    tensors = _tensors()
    names = sorted(tensors)
    shards = [names[0::3], names[1::3], names[2::3]]
    weight_map = {}
    for k, group in enumerate(shards):
        file = f"model-{k + 1:05d}-of-00003.safetensors"
        save_file({n: tensors[n] for n in group}, str(directory / file))
        weight_map.update({n: file for n in group})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    with open(directory / "model.safetensors.index.json", "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    return str(directory)


def _layer_bytes(i, half=False):
    return 2 * (2 if half else 4) * 512 * 1024 + (2 if half else 4) * 1024 + 8 * 1024


# --------------------------------------------------------------------------- the planner

def cli_path():
    built = os.path.join(os.path.dirname(libsafetensors.__file__), "..", "..", "tools",
                         "safetensors")
    return os.environ.get("SAFETENSORS_CLI", os.path.normpath(built))


def test_plan_equals_the_cli(checkpoint_dir):
    if not os.access(cli_path(), os.X_OK):
        pytest.skip("no safetensors command next to this package (set SAFETENSORS_CLI)")
    for args, kwargs in [
        (["--max-memory", "cuda:0=3MiB,cpu=5MiB"], dict(max_memory={"cuda:0": "3MiB",
                                                                      "cpu": 5 * MiB})),
        (["--max-memory", "cpu=5MiB", "--no-split", "model.layers.*", "--dtype", "bf16"],
         dict(max_memory={"cpu": "5MiB"}, no_split=["model.layers.*"], dtype=torch.bfloat16)),
    ]:
        out = subprocess.run([cli_path(), "plan", checkpoint_dir, "--json"] + args,
                             capture_output=True, text=True, check=True).stdout
        doc = json.loads(out)
        ours = plan_device_map(checkpoint_dir, **kwargs)
        assert list(ours.items()) == [(m["module"], m["device"]) for m in doc["device_map"]]
        assert ours.module_bytes == {m["module"]: m["bytes"] for m in doc["device_map"]}
        assert list(ours.used.items()) == [(d["device"], d["bytes"]) for d in doc["devices"]]


def test_budgets_fill_in_order(checkpoint_dir):
    total = Checkpoint(checkpoint_dir).total_size
    plan = plan_device_map(checkpoint_dir, {"cpu": "5MiB", 0: 3 * MiB})
    assert isinstance(plan, dict) and isinstance(plan, DeviceMap)
    assert list(plan.used) == [0, "cpu", "disk"]  # GPU first, whatever the dict's order
    assert plan.used[0] <= 3 * MiB and plan.used["cpu"] <= 5 * MiB
    assert sum(plan.used.values()) == total
    devices = list(plan.values())
    # Modules in checkpoint order (lm_head, then model.*, layers 0..3), devices never go back.
    rank = {0: 0, "cpu": 1, "disk": 2}
    assert [rank[d] for d in devices] == sorted(rank[d] for d in devices)
    assert set(devices) == {0, "cpu", "disk"}
    # Everything fits on the cpu: whole top-level modules, no split.
    assert plan_device_map(checkpoint_dir, {"cpu": total}) == {"lm_head": "cpu", "model": "cpu"}
    # Nothing fits: lm_head is split down to its tensor before the next device is taken.
    assert plan_device_map(Checkpoint(checkpoint_dir), {"cpu": 0}) == {"lm_head.weight": "disk",
                                                                        "model": "disk"}


def test_no_split_keeps_a_layer_together(checkpoint_dir):
    # 2.5 layers' worth of cpu after the 256 KiB lm_head and embedding: layer 2 is split
    # unless no_split says otherwise.
    budget = 512 * 1024 + int(2.5 * _layer_bytes(0))
    split = plan_device_map(checkpoint_dir, {"cpu": budget})
    assert "model.layers.2" not in split
    # Submodules in natural order: input_layernorm, mlp (fits), positions, self_attn.
    assert split["model.layers.2.mlp"] == "cpu" and split["model.layers.2.self_attn"] == "disk"
    whole = plan_device_map(checkpoint_dir, {"cpu": budget}, no_split=["model.layers.*"])
    assert whole["model.layers.1"] == "cpu" and whole["model.layers.2"] == "disk"
    assert not any(m.startswith("model.layers.2.") for m in whole)
    assert whole.module_bytes["model.layers.2"] == _layer_bytes(2)


def test_dtype_changes_sizes(checkpoint_dir):
    full = plan_device_map(checkpoint_dir, {"cpu": "1GiB"}, no_split=["model.layers.*"])
    half = plan_device_map(checkpoint_dir, {"cpu": "1GiB"}, dtype="float16")
    assert full.used["cpu"] == Checkpoint(checkpoint_dir).total_size
    # Floating-point tensors at 2 bytes, the int64 positions unchanged.
    ints = LAYERS * 8 * 1024
    assert half.used["cpu"] - ints == (full.used["cpu"] - ints) // 2
    assert half == plan_device_map(checkpoint_dir, {"cpu": "1GiB"}, dtype=torch.float16)


@pytest.mark.parametrize("max_memory, match", [
    ({"cpu": "12XB"}, r"max_memory\[cpu\].*12XB"),
    ({"cpu": -1}, "negative"),
    ({"cpu": 1.5}, "expected a number of bytes"),
    ({"gpu0": "1GiB"}, "gpu0.*unknown"),
    ({0: "1GiB", "cuda:0": "1GiB"}, "cuda:0.*twice"),
    ({}, "non-empty dict"),
])
def test_bad_budgets(checkpoint_dir, max_memory, match):
    with pytest.raises(ValueError, match=match):
        plan_device_map(checkpoint_dir, max_memory)


def test_bad_dtype_and_no_split(checkpoint_dir):
    with pytest.raises(ValueError, match="int8"):
        plan_device_map(checkpoint_dir, {"cpu": 1}, dtype=torch.int8)
    with pytest.raises(ValueError, match="no_split"):
        plan_device_map(checkpoint_dir, {"cpu": 1}, no_split=[3])


# --------------------------------------------------------------------------- loading

def _half_and_half(checkpoint_dir):
    return plan_device_map(checkpoint_dir, {"cpu": 512 * 1024 + 2 * _layer_bytes(0)},
                           no_split=["model.layers.*"])


def test_load_with_a_map_equals_a_plain_load(checkpoint_dir):
    plain = load_checkpoint(checkpoint_dir, copy=True)
    plan = _half_and_half(checkpoint_dir)
    assert set(plan.values()) == {"cpu", "disk"}
    hand = {"model.layers.3": "disk", "lm_head": "disk", "": "cpu"}  # accelerate's style
    for device_map in (plan, hand, dict(plan)):
        ours = load_checkpoint(checkpoint_dir, device_map=device_map)
        assert list(ours) == list(plain)
        for name, tensor in plain.items():
            assert ours[name].device.type == "cpu"
            assert ours[name].dtype == tensor.dtype and torch.equal(ours[name], tensor), name
    auto = load_checkpoint(checkpoint_dir, device_map="auto", threads=2,
                           max_memory={"cpu": 512 * 1024 + 2 * _layer_bytes(0)},
                           no_split=["model.layers.*"])
    assert all(torch.equal(auto[n], plain[n]) for n in plain)
    some = load_checkpoint(checkpoint_dir, device_map=plan, names="model.layers.3.*")
    assert sorted(some) == sorted(n for n in plain if n.startswith("model.layers.3."))


def test_load_with_a_map_and_dtype(checkpoint_dir):
    plan = _half_and_half(checkpoint_dir)
    plain = load_checkpoint(checkpoint_dir, dtype=torch.bfloat16)
    ours = load_checkpoint(checkpoint_dir, device_map=plan, dtype=torch.bfloat16)
    stored = load_checkpoint(checkpoint_dir)
    for name, tensor in ours.items():
        if device_for(plan, name) == "disk":
            # disk tensors are views of the file: as stored
            assert tensor.dtype == stored[name].dtype and torch.equal(tensor, stored[name])
        else:
            assert tensor.dtype == plain[name].dtype and torch.equal(tensor, plain[name]), name
    assert ours["model.embed_tokens.weight"].dtype == torch.bfloat16
    assert ours["model.layers.0.positions"].dtype == torch.int64


def test_bad_maps_raise_before_reading(checkpoint_dir):
    checkpoint = Checkpoint(checkpoint_dir)
    before = sum(checkpoint.bytes_read())
    with pytest.raises(ValueError, match="covers no module of .*lm_head.weight"):
        load_checkpoint(checkpoint, device_map={"model": "cpu"})
    with pytest.raises(ValueError, match="not a device"):
        load_checkpoint(checkpoint, device_map={"": "floppy"})
    with pytest.raises(ValueError, match="needs max_memory"):
        load_checkpoint(checkpoint, device_map="auto")
    with pytest.raises(ValueError, match="'balanced' is not a map"):
        load_checkpoint(checkpoint, device_map="balanced")
    with pytest.raises(ValueError, match="already planned"):
        load_checkpoint(checkpoint, device_map={"": "cpu"}, max_memory={"cpu": 1})
    with pytest.raises(ValueError, match="not both"):
        load_checkpoint(checkpoint, device_map={"": "cpu"}, tp_plan={}, rank=0, world_size=1)
    with pytest.raises(ValueError, match="not both"):
        load_checkpoint(checkpoint, device_map={"": "cpu"}, device="meta")
    with pytest.raises(ValueError, match="go with device_map"):
        load_checkpoint(checkpoint, max_memory={"cpu": 1})
    assert sum(checkpoint.bytes_read()) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where torch has no CUDA")
def test_cuda_entry_without_a_gpu_raises_before_reading(checkpoint_dir):
    checkpoint = Checkpoint(checkpoint_dir)
    before = sum(checkpoint.bytes_read())
    plan = plan_device_map(checkpoint, {0: "1MiB", "cpu": "4MiB"})
    assert 0 in plan.values()
    with pytest.raises(RuntimeError, match=r"on cuda:0, but torch has no usable CUDA device"):
        load_checkpoint(checkpoint, device_map=plan)
    with pytest.raises(RuntimeError, match=r"lm_head.weight.*cuda:1"):
        load_checkpoint(checkpoint, device_map={"lm_head": "cuda:1", "": "cpu"})
    with pytest.raises(RuntimeError, match=r"lm_head.weight.*cuda:2"):
        load_checkpoint(checkpoint, device_map={"lm_head": "2", "": "cpu"})
    with pytest.raises(RuntimeError, match=r"on cuda:0"):
        load_checkpoint(checkpoint, device_map="auto", max_memory={"cuda:0": 1 << 20, "cpu": 0})
    assert sum(checkpoint.bytes_read()) == before


def test_device_entries_other_than_cpu_are_moved(checkpoint_dir):
    """A non-cuda torch device ("meta" here, which every torch has) goes through the host one
    shard at a time and `.to()`."""
    ours = load_checkpoint(checkpoint_dir, device_map={"model.layers": "meta", "": "cpu"})
    assert ours["model.layers.1.mlp.up_proj.weight"].device.type == "meta"
    assert ours["model.layers.1.mlp.up_proj.weight"].shape == (512, 1024)
    assert ours["lm_head.weight"].device.type == "cpu"


# --------------------------------------------------------------------------- disk: not read
# Whether this process has read a page is whether the page is present in its page tables:
# bit 63 of its /proc/self/pagemap entry. (The page cache, which mincore(2) reports, is no
# measure: the kernel's read-around on a fault brings in up to read_ahead_kb around it, 8 MiB
# on the development VM, whoever asked.)

PAGE = os.sysconf("SC_PAGE_SIZE")


def _present(tensor):
    """The fraction of the pages under `tensor` present in this process's page tables."""
    address, length = tensor.data_ptr(), tensor.numel() * tensor.element_size()
    first, last = address // PAGE, (address + length - 1) // PAGE
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(first * 8)
        data = f.read((last - first + 1) * 8)
    entries = [int.from_bytes(data[i:i + 8], "little") for i in range(0, len(data), 8)]
    return sum(e >> 63 for e in entries) / len(entries)


@pytest.mark.skipif(not os.path.exists("/proc/self/pagemap"), reason="needs Linux's pagemap")
def test_disk_tensors_are_not_read(checkpoint_dir):
    plan = _half_and_half(checkpoint_dir)
    ours = load_checkpoint(checkpoint_dir, device_map=plan)
    big = {n: t for n, t in ours.items() if t.numel() * t.element_size() >= 1 << 20}
    on_disk = [n for n in big if n.startswith(("model.layers.2.", "model.layers.3."))]
    on_cpu = [n for n in big if n.startswith(("model.layers.0.", "model.layers.1."))]
    assert len(on_disk) == 4 and len(on_cpu) == 4
    for name in on_cpu:
        assert _present(ours[name]) == 1.0, name
    for name in on_disk:
        # At most the kernel's fault-around (64 KiB windows: it maps pages already cached
        # around a faulted one) at the edges next to cpu tensors: 128 KiB of 2 MiB.
        assert _present(ours[name]) < 0.15, (name, _present(ours[name]))
    # The views read the file when used, and hold its values.
    plain = load_checkpoint(checkpoint_dir, copy=True)
    for name in on_disk:
        assert torch.equal(ours[name], plain[name])
        assert _present(ours[name]) == 1.0
    # The same tensors loaded to the cpu are read in.
    everything = load_checkpoint(checkpoint_dir, device_map={"": "cpu"})
    assert all(_present(everything[name]) == 1.0 for name in on_disk)


# --------------------------------------------------------------------------- transformers

def test_transformers_from_pretrained_with_our_map(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    config = transformers.LlamaConfig(
        vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
        tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    directory = str(tmp_path / "llama")
    model.save_pretrained(directory, safe_serialization=True, max_shard_size="200KB")
    assert os.path.exists(os.path.join(directory, "model.safetensors.index.json"))
    layer = sum(p.numel() * 4 for p in model.model.layers[0].parameters())
    # lm_head and the embedding (96 x 64 each), two layers and the norm's worth of cpu.
    plan = plan_device_map(directory, {"cpu": 2 * 96 * 64 * 4 + 2 * layer + 64 * 4},
                           no_split=["model.layers.*"])
    assert set(plan.values()) == {"cpu", "disk"}, plan
    inputs = torch.arange(10).reshape(1, 10)
    with torch.no_grad():
        expected = model(inputs).logits
    # The DeviceMap itself; no offload_folder: transformers reads disk weights from the
    # safetensors shards.
    loaded = transformers.AutoModelForCausalLM.from_pretrained(directory, device_map=plan,
                                                               dtype=torch.float32)
    assert loaded.hf_device_map == dict(plan)
    with torch.no_grad():
        got = loaded(inputs).logits
    assert torch.equal(got, expected)
    # Our own load with the same map holds what transformers loaded.
    ours = load_checkpoint(directory, device_map=plan)
    for name, parameter in model.state_dict().items():
        assert torch.equal(ours[name], parameter), name
    # The same from_pretrained with libsafetensors serving transformers' `safetensors`, in a
    # fresh interpreter (installing it here would change the package for the other tests).
    torch.save(expected, str(tmp_path / "expected.pt"))
    script = (
        "import json, sys, torch, libsafetensors\n"
        "libsafetensors.install_as_safetensors()\n"
        "import safetensors, transformers\n"
        "assert safetensors.safe_open is libsafetensors.safe_open\n"
        "plan = dict(json.loads(sys.argv[2]))\n"
        "model = transformers.AutoModelForCausalLM.from_pretrained(\n"
        "    sys.argv[1], device_map=plan, dtype=torch.float32)\n"
        "assert model.hf_device_map == plan, model.hf_device_map\n"
        "with torch.no_grad():\n"
        "    got = model(torch.arange(10).reshape(1, 10)).logits\n"
        "assert torch.equal(got, torch.load(sys.argv[3])), 'logits differ'\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(
                   [os.path.dirname(os.path.dirname(libsafetensors.__file__))] +
                   [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    result = subprocess.run([sys.executable, "-c", script, directory, json.dumps(dict(plan)),
                             str(tmp_path / "expected.pt")], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
