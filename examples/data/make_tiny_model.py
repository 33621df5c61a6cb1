#!/usr/bin/env python3
"""Writes examples/data/tiny_model.bin: a tiny GPT-2-shaped PyTorch checkpoint (zip format)
for the demo of `safetensors convert`. Deterministic weights; the output head is tied to the
token embedding, as in GPT-2, so the converter has a shared tensor to deduplicate.

Usage: make_tiny_model.py [OUT]   (default: tiny_model.bin beside this script)
"""
import collections
import os
import sys

import torch

VOCAB, CONTEXT, DIM, HIDDEN, LAYERS = 64, 32, 16, 32, 2


def state_dict():
    g = torch.Generator().manual_seed(1234)

    def randn(*shape):
        return torch.randn(*shape, generator=g) * 0.02

    sd = collections.OrderedDict()
    sd["transformer.wte.weight"] = randn(VOCAB, DIM)
    sd["transformer.wpe.weight"] = randn(CONTEXT, DIM)
    for i in range(LAYERS):
        p = "transformer.h.%d." % i
        sd[p + "ln_1.weight"] = torch.ones(DIM)
        sd[p + "ln_1.bias"] = torch.zeros(DIM)
        sd[p + "attn.c_attn.weight"] = randn(DIM, 3 * DIM)
        sd[p + "attn.c_attn.bias"] = torch.zeros(3 * DIM)
        sd[p + "attn.c_proj.weight"] = randn(DIM, DIM)
        sd[p + "attn.c_proj.bias"] = torch.zeros(DIM)
        sd[p + "ln_2.weight"] = torch.ones(DIM)
        sd[p + "ln_2.bias"] = torch.zeros(DIM)
        sd[p + "mlp.c_fc.weight"] = randn(DIM, HIDDEN)
        sd[p + "mlp.c_fc.bias"] = torch.zeros(HIDDEN)
        sd[p + "mlp.c_proj.weight"] = randn(HIDDEN, DIM)
        sd[p + "mlp.c_proj.bias"] = torch.zeros(DIM)
    sd["transformer.ln_f.weight"] = torch.ones(DIM)
    sd["transformer.ln_f.bias"] = torch.zeros(DIM)
    sd["lm_head.weight"] = sd["transformer.wte.weight"]  # tied, as in GPT-2
    return sd


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__),
                                                              "tiny_model.bin")
    torch.save(state_dict(), out)


if __name__ == "__main__":
    main()
