"""Tensor-parallel loading: load_checkpoint(tp_plan=, rank=, world_size=) on 4 gloo ranks is
bitwise equal to slicing a full load as DTensor's Shard does, for single files and sharded
checkpoints, every split kind, uneven splits and 0-d/1-d tensors; each rank reads about its
share; bad plans fail before any read."""

import json
import os
import tempfile

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("this torch has no gloo backend", allow_module_level=True)

import torch.multiprocessing as mp  # noqa: E402

from libsafetensors import Checkpoint, SafetensorError  # noqa: E402
from libsafetensors.torch import load_checkpoint, save_file  # noqa: E402

WORLD = 4

# Layer 0 divides evenly by 4, layer 1 does not (10 = 3 + 3 + 3 + 1, 5 = 2 + 2 + 1 + 0).
SHAPES = {
    "model.embed_tokens.weight": ((50, 16), torch.float32),
    "model.layers.0.self_attn.q_proj.weight": ((16, 16), torch.float32),
    "model.layers.0.self_attn.q_proj.bias": ((16,), torch.float32),
    "model.layers.0.self_attn.o_proj.weight": ((16, 16), torch.bfloat16),
    "model.layers.0.self_attn.o_proj.bias": ((16,), torch.bfloat16),
    "model.layers.0.mlp.gate_up_proj.weight": ((24, 16), torch.float16),
    "model.layers.0.mlp.down_proj.weight": ((16, 12), torch.float32),
    "model.layers.1.self_attn.q_proj.weight": ((10, 16), torch.float32),
    "model.layers.1.self_attn.q_proj.bias": ((10,), torch.float32),
    "model.layers.1.self_attn.o_proj.weight": ((16, 5), torch.float32),
    "model.layers.1.self_attn.o_proj.bias": ((16,), torch.float32),
    "model.layers.1.mlp.gate_up_proj.weight": ((13, 7), torch.float16),
    "model.layers.1.mlp.down_proj.weight": ((16, 7), torch.int64),
    "model.layers.1.experts": ((4, 6, 8), torch.float32),
    "model.norm.weight": ((16,), torch.float32),
    "model.step": ((), torch.int64),
    "lm_head.weight": ((50, 16), torch.float32),
}

PLAN = {
    "model.embed_tokens": "embedding_rowwise",
    "model.layers.*.self_attn.q_proj": "colwise",
    "model.layers.*.self_attn.o_proj": "rowwise",
    "model.layers.*.mlp.gate_up_proj": "packed_colwise",
    "model.layers.*.mlp.down_proj": "rowwise",
    "model.layers.*.experts": {"dim": 2, "sizes": [1, 3, 0, 4]},
    "model.norm": "replicate",
    "lm_head": "colwise_gather_output",
}


def _tensors():
    generator = torch.Generator().manual_seed(0)
    out = {}
    for name, (shape, dtype) in SHAPES.items():
        if dtype.is_floating_point:
            out[name] = torch.randn(shape, generator=generator).to(dtype)
        else:
            out[name] = torch.randint(-1000, 1000, shape, generator=generator, dtype=dtype)
    return out


def _write(directory):
    """A single file and a 3-shard checkpoint of the same tensors."""
    tensors = _tensors()
    single = os.path.join(directory, "single.safetensors")
    save_file(tensors, single)
    sharded = os.path.join(directory, "sharded")
    os.makedirs(sharded)
    names = sorted(tensors)
    weight_map = {}
    for i in range(3):
        shard = f"model-{i + 1:05d}-of-00003.safetensors"
        part = {n: tensors[n] for n in names[i::3]}
        save_file(part, os.path.join(sharded, shard))
        weight_map.update(dict.fromkeys(part, shard))
    total = sum(t.nelement() * t.element_size() for t in tensors.values())
    with open(os.path.join(sharded, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    return single, sharded


def _chunk(size, world, rank):
    """DTensor's Shard: ceil(size / world) per rank, the last ranks shorter or empty."""
    per = -(-size // world)
    begin = min(per * rank, size)
    return begin, min(begin + per, size)


def expected_part(name, full, rank, world):
    """What transformers' sharding gives `rank` of the full tensor, sliced in torch."""
    style = None
    parts = name.split(".")
    generic = ".".join("*" if p.isdigit() and i else p for i, p in enumerate(parts))
    for key in (generic, generic.rsplit(".", 1)[0]):
        if key in PLAN:
            style = PLAN[key]
            break
    if isinstance(style, dict):
        sizes = style["sizes"]
        begin = sum(sizes[:rank])
        return full.narrow(style["dim"], begin, sizes[rank])
    if style in ("colwise", "colwise_gather_output", "embedding_rowwise"):
        dim = 0 if full.dim() == 1 or style == "embedding_rowwise" else full.dim() - 2
    elif style == "rowwise":
        if name.endswith(".bias"):
            return full
        dim = full.dim() - 1
    elif style == "packed_colwise":
        dim = 0
        if full.dim() > 1:
            group = -(-full.shape[0] // 2)
            pieces = []
            for g in range(2):
                first = min(g * group, full.shape[0])
                length = min(first + group, full.shape[0]) - first
                b, e = _chunk(length, world, rank)
                pieces.append(full.narrow(0, first + b, e - b))
            return torch.cat(pieces, 0)
    else:
        return full
    b, e = _chunk(full.shape[dim], world, rank)
    return full.narrow(dim, b, e - b)


def _same(a, b):
    return (a.dtype == b.dtype and a.shape == b.shape
            and torch.equal(a.contiguous().reshape(-1).view(torch.uint8),
                            b.contiguous().reshape(-1).view(torch.uint8)))


def _worker(rank, world, init_file, single, sharded, report_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    report = {}
    try:
        full = _tensors()
        for label, path in (("single", single), ("sharded", sharded)):
            for replicated in ("read", "exchange"):
                checkpoint = Checkpoint(path)
                before = sum(checkpoint.bytes_read())
                got = load_checkpoint(checkpoint, tp_plan=PLAN, replicated=replicated,
                                      strict=True)
                read = sum(checkpoint.bytes_read()) - before
                assert sorted(got) == sorted(full), (label, replicated)
                share = 0
                replicated_bytes = 0
                for name, tensor in got.items():
                    want = expected_part(name, full[name], rank, world)
                    assert _same(tensor, want), (label, replicated, name, tensor.shape,
                                                 want.shape)
                    nbytes = want.nelement() * want.element_size()
                    if want.shape == full[name].shape and not any(
                            s == 0 for s in want.shape):
                        replicated_bytes += nbytes
                    else:
                        share += nbytes
                report[f"{label}-{replicated}"] = [read, share, replicated_bytes]
            # With a dtype: the parts convert as whole tensors do.
            got = load_checkpoint(path, dtype=torch.bfloat16, tp_plan=PLAN)
            for name, tensor in got.items():
                want = expected_part(name, full[name], rank, world)
                if want.dtype.is_floating_point:
                    want = want.to(torch.bfloat16)
                assert _same(tensor, want), (label, "bf16", name)
        # Rank and world size come from torch.distributed when not given.
        explicit = load_checkpoint(single, tp_plan=PLAN, rank=rank, world_size=world)
        assert all(_same(explicit[n], t)
                   for n, t in load_checkpoint(single, tp_plan=PLAN).items())
    finally:
        with open(os.path.join(report_dir, f"{rank}.json"), "w") as f:
            json.dump(report, f)
        dist.destroy_process_group()


def test_four_gloo_ranks_load_their_parts(tmp_path):
    single, sharded = _write(str(tmp_path))
    init_file = str(tmp_path / "init")
    report_dir = str(tmp_path / "reports")
    os.makedirs(report_dir)
    mp.spawn(_worker, args=(WORLD, init_file, single, sharded, report_dir), nprocs=WORLD,
             join=True)
    total = sum(t.nelement() * t.element_size() for t in _tensors().values())
    for rank in range(WORLD):
        with open(os.path.join(report_dir, f"{rank}.json")) as f:
            report = json.load(f)
        assert len(report) == 4, report
        for key, (read, share, replicated_bytes) in report.items():
            # Header reads aside (pread sources only), a rank reads its parts and, unless the
            # ranks exchange them, the replicated tensors: never the whole file.
            if key.endswith("read"):
                assert share + replicated_bytes <= read <= 1.1 * share + replicated_bytes + 4096
            else:
                assert read <= 1.1 * share + replicated_bytes / WORLD + 4096, (key, report)
            assert read < total, key


@pytest.fixture(scope="module")
def files():
    with tempfile.TemporaryDirectory() as directory:
        yield _write(directory)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_parts_of_every_rank_match_slicing(files, world):
    """Without a process group: rank and world_size given, any world size."""
    single, sharded = files
    full = _tensors()
    plan = {k: v for k, v in PLAN.items() if not isinstance(v, dict)}  # sizes for 4 ranks
    for path in (single, sharded):
        for rank in range(world):
            got = load_checkpoint(path, tp_plan=plan, rank=rank, world_size=world)
            for name, tensor in got.items():
                want = expected_part(name, full[name], rank, world)
                if name == "model.layers.1.experts":
                    want = full[name]
                assert _same(tensor, want), (name, rank, world)


def test_plan_tensor_parallel_lists_the_parts(files):
    single, _ = files
    checkpoint = Checkpoint(single)
    rules = [("model.layers.*.self_attn.q_proj", "colwise", 0, []),
             ("model.layers.*.mlp.gate_up_proj", "packed_colwise", 0, [])]
    parts = checkpoint.plan_tensor_parallel(rules, 3, 4)
    assert parts["model.layers.1.self_attn.q_proj.weight"] == (0, [(9, 10)])
    assert parts["model.layers.1.self_attn.q_proj.bias"] == (0, [(9, 10)])
    # 13 rows: groups of 7 and 6, each cut in 2s: rank 3 gets row 6 of the first group and
    # nothing of the second.
    assert parts["model.layers.1.mlp.gate_up_proj.weight"] == (0, [(6, 7)])
    assert checkpoint.plan_tensor_parallel(rules, 0, 4)[
        "model.layers.1.mlp.gate_up_proj.weight"] == (0, [(0, 2), (7, 9)])
    assert "model.norm.weight" not in parts


@pytest.mark.parametrize("plan, world, message", [
    ({"model.norm": "embedding_colwise"}, 2, "along dimension 1, which it does not have"),
    ({"model.step": "colwise"}, 2, "which it does not have"),
    ({"model.layers.*.self_attn.q_proj": "colwise"}, 17, "the world is larger than the dimension"),
    ({"model.nothing": "colwise"}, 2, "matches no tensor"),
    ({"model.norm": "unit_colwise"}, 2, "is not a style this loader knows"),
    ({"model.norm": {"dim": 0, "sizes": [1, 2]}}, 2, "sizes add up to 3"),
])
def test_bad_plans_fail_before_reading(files, plan, world, message):
    single, _ = files
    checkpoint = Checkpoint(single)
    before = checkpoint.bytes_read()
    with pytest.raises(SafetensorError, match=message):
        load_checkpoint(checkpoint, tp_plan=plan, rank=0, world_size=world, strict=True)
    assert checkpoint.bytes_read() == before


def test_bad_arguments(files):
    single, _ = files
    with pytest.raises(ValueError, match="rank and world_size"):
        if dist.is_initialized():
            pytest.skip("a process group is up")
        load_checkpoint(single, tp_plan={"model.norm": "replicate"})
    with pytest.raises(SafetensorError, match="rank 4 is outside a world of 4"):
        load_checkpoint(single, tp_plan={}, rank=4, world_size=4)
    with pytest.raises(TypeError, match="neither a style name nor a split"):
        load_checkpoint(single, tp_plan={"model.norm": 1.5}, rank=0, world_size=2)
    with pytest.raises(ValueError, match="replicated must be"):
        load_checkpoint(single, tp_plan={}, rank=0, world_size=2, replicated="never")
    with pytest.raises(ValueError, match="rank must be a non-negative integer"):
        load_checkpoint(single, tp_plan={}, rank=-1, world_size=2)
    with pytest.raises(ValueError, match="world_size 1099511627776 is too large"):
        load_checkpoint(single, tp_plan={}, rank=0, world_size=1 << 40)
