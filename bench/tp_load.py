#!/usr/bin/env python3
"""Tensor-parallel loading on N gloo ranks of one machine: wall time and bytes read per rank.

Three ways for every rank to end up with its parts of a Llama-shaped BF16 checkpoint under
Llama's tp_plan (q/k/v/gate/up colwise, o/down rowwise, embeddings and norms replicated):

  full+slice   load_checkpoint(path) (everything), then each part cut out and copied
  tp read      load_checkpoint(path, tp_plan=...): only the rank's parts, and the replicated
               tensors read by every rank
  tp exchange  the same, but each rank reads 1/N of the replicated tensors and the ranks
               all-gather them through torch.distributed (gloo)

Wall time is from a barrier before the load to a barrier after it (the slowest rank), best of
--reps; the file is in the page cache after the first run (warm). Bytes read are counted by the
source (Checkpoint.bytes_read). Usage: tp_load.py [--size-gb 2] [--ranks 4] [--reps 3] [--dir D]
"""
import argparse
import json
import os
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from libsafetensors import Checkpoint
from libsafetensors.torch import load_checkpoint, save_file

PLAN = {
    "model.layers.*.self_attn.q_proj": "colwise",
    "model.layers.*.self_attn.k_proj": "colwise",
    "model.layers.*.self_attn.v_proj": "colwise",
    "model.layers.*.self_attn.o_proj": "rowwise",
    "model.layers.*.mlp.gate_proj": "colwise",
    "model.layers.*.mlp.up_proj": "colwise",
    "model.layers.*.mlp.down_proj": "rowwise",
}


def llama_shapes(size_bytes, hidden=2048, intermediate=5632, vocab=32000):
    """Llama-shaped BF16 tensors, as many layers as fit in about size_bytes."""
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden),
              "model.norm.weight": (hidden,)}
    per_layer = 2 * (4 * hidden * hidden + 3 * hidden * intermediate + 2 * hidden)
    layers = max(1, (size_bytes - 2 * 2 * vocab * hidden) // per_layer)
    for i in range(layers):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{name}.weight"] = (hidden, hidden)
        shapes[p + "mlp.gate_proj.weight"] = (intermediate, hidden)
        shapes[p + "mlp.up_proj.weight"] = (intermediate, hidden)
        shapes[p + "mlp.down_proj.weight"] = (hidden, intermediate)
        shapes[p + "input_layernorm.weight"] = (hidden,)
        shapes[p + "post_attention_layernorm.weight"] = (hidden,)
    return shapes


def write_checkpoint(path, size_bytes):
    generator = torch.Generator().manual_seed(0)
    tensors = {name: torch.randn(shape, generator=generator, dtype=torch.float32).to(torch.bfloat16)
               for name, shape in llama_shapes(size_bytes).items()}
    save_file(tensors, path)


def full_then_slice(path, rank, world):
    checkpoint = Checkpoint(path)
    rules = [(k, v, 0, []) for k, v in PLAN.items()]
    parts = checkpoint.plan_tensor_parallel(rules, rank, world)
    tensors = load_checkpoint(checkpoint)
    out = {}
    for name, tensor in tensors.items():
        if name in parts:
            dim, ranges = parts[name]
            tensor = torch.cat([tensor.narrow(dim, b, e - b) for b, e in ranges], dim)
            tensor = tensor.contiguous().clone()
        out[name] = tensor
    return checkpoint, out


def worker(rank, world, path, reps, report):
    dist.init_process_group("gloo", init_method=f"file://{report}.init", rank=rank,
                            world_size=world)
    results = {}
    for mode in ("full+slice", "tp read", "tp exchange"):
        times, read = [], 0
        for _ in range(reps):
            dist.barrier()
            start = time.perf_counter()
            if mode == "full+slice":
                checkpoint, tensors = full_then_slice(path, rank, world)
            else:
                checkpoint = Checkpoint(path)
                tensors = load_checkpoint(checkpoint, tp_plan=PLAN, strict=True,
                                          replicated=mode.split()[1])
            dist.barrier()
            times.append(time.perf_counter() - start)
            read = sum(checkpoint.bytes_read())
            kept = sum(t.nelement() * t.element_size() for t in tensors.values())
            del tensors
        results[mode] = {"seconds": min(times), "bytes_read": read, "bytes_kept": kept}
    with open(f"{report}.{rank}.json", "w") as f:
        json.dump(results, f)
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the checkpoint is written")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        path = os.path.join(directory, "model.safetensors")
        write_checkpoint(path, int(args.size_gb * 1e9))
        size = os.path.getsize(path)
        checkpoint = Checkpoint(path)
        rules = [(k, v, 0, []) for k, v in PLAN.items()]
        split = checkpoint.plan_tensor_parallel(rules, 0, args.ranks)
        replicated = sum(
            torch.empty(0, dtype=torch.bfloat16).element_size() * _numel(checkpoint.info(n)[2])
            for n in checkpoint.keys() if n not in split)
        report = os.path.join(directory, "report")
        mp.spawn(worker, args=(args.ranks, path, args.reps, report), nprocs=args.ranks)
        rows = [json.load(open(f"{report}.{r}.json")) for r in range(args.ranks)]
    share = (size - replicated) / args.ranks
    print(f"checkpoint {size / 1e9:.2f} GB, {args.ranks} gloo ranks, replicated tensors "
          f"{replicated / 1e6:.0f} MB, split share per rank {share / 1e6:.0f} MB, warm cache, "
          f"best of {args.reps}, load avg {' '.join('%.2f' % x for x in os.getloadavg())}")
    print(f"{'mode':<12} {'wall s':>7} {'vs full':>8} {'read MB/rank (max)':>19} "
          f"{'read / (share + replicated)':>28}")
    base = max(r["full+slice"]["seconds"] for r in rows)
    for mode in ("full+slice", "tp read", "tp exchange"):
        seconds = max(r[mode]["seconds"] for r in rows)
        read = max(r[mode]["bytes_read"] for r in rows)
        print(f"{mode:<12} {seconds:7.2f} {seconds / base:8.2f} {read / 1e6:19.0f} "
              f"{read / (share + replicated):28.3f}")
    return 0


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


if __name__ == "__main__":
    sys.exit(main())
