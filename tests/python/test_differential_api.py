"""The API surface, against the reference 0.8: every public name of `safetensors`,
`safetensors.torch` and `safetensors.numpy` exists in `libsafetensors`, `libsafetensors.torch`
and `libsafetensors.numpy`, and every callable takes every call the reference's takes
(parameter names, kinds and defaults compared with inspect.signature), as do the methods of
`safe_open` and of what `get_slice` returns.

Compatible means: each of the reference's parameters exists in ours under the same name, at the
same position when it can be passed by position, passable the same ways, with the same default
(a default the reference only shows as `...` must exist); parameters of ours that the reference
lacks have defaults. The reference's parameters named with a leading `_` are positional in
practice (`__exit__`), so only their positions count.
"""

import inspect
import re

import pytest

import reference_oracle

REF, REF_TORCH, REF_NUMPY = reference_oracle.require()

import numpy as np  # noqa: E402

import libsafetensors  # noqa: E402
import libsafetensors.numpy  # noqa: E402

P = inspect.Parameter
POSITIONAL = (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)


def public_names(module):
    """The names a user of `module` may use: not private, not modules, not typing's or the
    standard library's helpers that the module happens to import."""
    names = []
    for name in dir(module):
        value = getattr(module, name)
        if name.startswith("_") or inspect.ismodule(value):
            continue
        origin = getattr(value, "__module__", "") or ""
        if origin in ("typing", "collections") or origin.startswith("typing"):
            continue
        names.append(name)
    return names


def signature(value):
    """inspect.signature, or for a pybind11 function one made from its documented signature."""
    try:
        return inspect.signature(value)
    except (TypeError, ValueError):
        pass
    doc = (getattr(value, "__doc__", "") or "").splitlines()
    match = re.match(r"\w+\((.*)\)( -> .*)?$", doc[0]) if doc else None
    if match is None:
        return None
    params = []
    for part in filter(None, (p.strip() for p in match.group(1).split(","))):
        name, _, default = part.partition("=")
        name = name.split(":")[0].strip()
        kwargs = {"default": eval(default.strip())} if default else {}  # noqa: S307 - literals
        params.append(P(name, P.POSITIONAL_OR_KEYWORD, **kwargs))
    return inspect.Signature(params)


def check_compatible(ours, ref, where):
    ref_sig, our_sig = signature(ref), signature(ours)
    if ref_sig is None:
        return
    assert our_sig is not None, f"{where}: ours has no signature, the reference's is {ref_sig}"
    ref_params = [p for p in ref_sig.parameters.values() if p.name != "self"]
    our_params = [p for p in our_sig.parameters.values() if p.name != "self"]
    ours_by_name = {p.name: p for p in our_params}
    our_positional = [p for p in our_params if p.kind in POSITIONAL]
    problems = []
    for index, ref_p in enumerate(ref_params):
        if ref_p.kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD):
            if not any(p.kind == ref_p.kind for p in our_params):
                problems.append(f"no {ref_p}")
            continue
        if ref_p.name.startswith("_") and ref_p.kind in POSITIONAL:
            # Positional in practice: the position and the default count, not the name.
            mine = our_positional[index] if index < len(our_positional) else None
        else:
            mine = ours_by_name.get(ref_p.name)
        if mine is None:
            problems.append(f"parameter {ref_p.name} is missing")
            continue
        if ref_p.kind in POSITIONAL:
            if mine.kind not in POSITIONAL or our_positional.index(mine) != index:
                problems.append(f"{ref_p.name} is not positional at {index} ({mine.kind})")
            if ref_p.kind == P.POSITIONAL_OR_KEYWORD and mine.kind == P.POSITIONAL_ONLY \
                    and not ref_p.name.startswith("_"):
                problems.append(f"{ref_p.name} cannot be passed by name")
        elif ref_p.kind == P.KEYWORD_ONLY and mine.kind not in (P.KEYWORD_ONLY,
                                                                 P.POSITIONAL_OR_KEYWORD):
            problems.append(f"{ref_p.name} cannot be passed by name ({mine.kind})")
        if ref_p.default is Ellipsis:
            if mine.default is P.empty:
                problems.append(f"{ref_p.name} has no default")
        elif ref_p.default is not P.empty and mine.default != ref_p.default:
            problems.append(f"{ref_p.name} defaults to {mine.default!r}, not "
                            f"{ref_p.default!r}")
    ref_names = {p.name for p in ref_params}
    for mine in our_params:
        if mine.name not in ref_names and mine.default is P.empty and mine.kind not in (
                P.VAR_POSITIONAL, P.VAR_KEYWORD) and not any(
                    r.name.startswith("_") for r in ref_params):
            problems.append(f"our extra parameter {mine.name} has no default")
    assert not problems, f"{where}: ours {our_sig}, the reference's {ref_sig}: {problems}"


MODULES = [("safetensors", REF, libsafetensors),
           ("safetensors.numpy", REF_NUMPY, libsafetensors.numpy)]
if REF_TORCH is not None:
    import libsafetensors.torch

    MODULES.append(("safetensors.torch", REF_TORCH, libsafetensors.torch))


@pytest.mark.parametrize("label,ref,ours", MODULES, ids=[m[0] for m in MODULES])
def test_every_public_name_exists_with_a_compatible_signature(label, ref, ours):
    names = public_names(ref)
    assert names  # the enumeration works
    missing = [name for name in names if not hasattr(ours, name)]
    assert not missing, f"{label}: ours lacks {missing}"
    for name in names:
        ref_value, our_value = getattr(ref, name), getattr(ours, name)
        if isinstance(ref_value, type) and issubclass(ref_value, BaseException):
            assert isinstance(our_value, type) and issubclass(our_value, Exception), name
            continue
        assert callable(our_value) == callable(ref_value), name
        if callable(ref_value):
            check_compatible(our_value, ref_value, f"{label}.{name}")


def test_versions():
    assert REF.__version__ == reference_oracle.VERSION
    assert isinstance(libsafetensors.__version__, str)


def test_safe_open_and_slice_methods_are_compatible(tmp_path):
    path = str(tmp_path / "a.safetensors")
    libsafetensors.numpy.save_file({"t": np.zeros((2, 3), dtype=np.float32)}, path)
    with REF.safe_open(path, "np") as theirs, libsafetensors.safe_open(path, "np") as ours:
        pairs = [("safe_open", theirs, ours),
                 ("get_slice", theirs.get_slice("t"), ours.get_slice("t"))]
        for label, ref_obj, our_obj in pairs:
            names = [n for n in dir(ref_obj) if not n.startswith("_")] + [
                n for n in ("__enter__", "__exit__", "__getitem__", "__len__")
                if hasattr(type(ref_obj), n)]
            assert names
            for name in names:
                assert hasattr(our_obj, name), f"{label}.{name} is missing"
                check_compatible(getattr(our_obj, name), getattr(ref_obj, name),
                                 f"{label}.{name}")
