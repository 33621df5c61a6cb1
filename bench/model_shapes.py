"""Tensor names and shapes of real models, for benchmarks that make checkpoints."""


# GPT-2 small (124M parameters), the names and shapes transformers uses.
def gpt2_shapes(layers=12, d=768, vocab=50257, positions=1024):
    shapes = {"wte.weight": [vocab, d], "wpe.weight": [positions, d],
              "ln_f.weight": [d], "ln_f.bias": [d]}
    for i in range(layers):
        p = f"h.{i}."
        shapes.update({
            p + "ln_1.weight": [d], p + "ln_1.bias": [d],
            p + "attn.c_attn.weight": [d, 3 * d], p + "attn.c_attn.bias": [3 * d],
            p + "attn.c_proj.weight": [d, d], p + "attn.c_proj.bias": [d],
            p + "ln_2.weight": [d], p + "ln_2.bias": [d],
            p + "mlp.c_fc.weight": [d, 4 * d], p + "mlp.c_fc.bias": [4 * d],
            p + "mlp.c_proj.weight": [4 * d, d], p + "mlp.c_proj.bias": [d],
        })
    return shapes
