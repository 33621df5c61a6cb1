"""Tensor-parallel plans for the loaders: transformers' `tp_plan` dicts in the form `_core`
takes, and the rank and world size to load for (docs/PARALLEL.md has the semantics).
Framework-free; libsafetensors.torch.load_checkpoint does the loading and the exchange.
"""

from typing import Any, List, Optional, Tuple

# What `replicated=` accepts: every rank reads replicated tensors itself ("read"), or each
# reads 1/world_size of them and the ranks all-gather ("exchange"); "auto" picks per load.
REPLICATED = ("read", "exchange", "auto")


def tp_rules(tp_plan: Any) -> List[Tuple[str, str, int, List[int]]]:
    """[(pattern, style, dim, sizes)] from a tp_plan: a dict (or pairs) of module or parameter
    name patterns to a transformers style ("colwise", "rowwise", "replicate", ...), or to an
    explicit split: an int dimension, {"dim": d} or {"dim": d, "sizes": [per rank]}, or
    ("split", d) / ("split", d, sizes)."""
    items = tp_plan.items() if isinstance(tp_plan, dict) else tp_plan
    rules = []
    for entry in items:
        try:
            pattern, style = entry
        except (TypeError, ValueError):
            raise TypeError(f"tp_plan entries are (pattern, style) pairs, not {entry!r}") from None
        if not isinstance(pattern, str):
            raise TypeError(f"tp_plan pattern {pattern!r} is not a string")
        if isinstance(style, str):
            rules.append((pattern, style, 0, []))
            continue
        dim, sizes = None, []
        if isinstance(style, int) and not isinstance(style, bool):
            dim = style
        elif isinstance(style, dict) and set(style) <= {"dim", "sizes"} and "dim" in style:
            dim, sizes = style["dim"], style.get("sizes") or []
        elif isinstance(style, (tuple, list)) and 2 <= len(style) <= 3 and style[0] == "split":
            dim = style[1]
            sizes = style[2] if len(style) == 3 else []
        if not isinstance(dim, int) or isinstance(dim, bool) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in sizes):
            raise TypeError(
                f"tp_plan rule {pattern!r}: {style!r} is neither a style name nor a split "
                "(a dimension, {'dim': d, 'sizes': [...]} or ('split', d[, sizes]))")
        rules.append((pattern, "split", dim, list(sizes)))
    return rules


def resolve_rank(rank: Optional[int], world_size: Optional[int], group=None) -> Tuple[int, int]:
    """(rank, world_size): as given, else from an initialized torch.distributed (`group`)."""
    if rank is None or world_size is None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("tensor-parallel loading needs rank and world_size: pass them, or "
                             "initialize torch.distributed first")
        rank = dist.get_rank(group) if rank is None else rank
        world_size = dist.get_world_size(group) if world_size is None else world_size
    for name, value in (("rank", rank), ("world_size", world_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
        if value >= 1 << 32:
            raise ValueError(f"{name} {value} is too large (at most {(1 << 32) - 1})")
    return rank, world_size
