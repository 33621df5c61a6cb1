"""`install_as_safetensors`: makes code that imports `safetensors` (transformers, diffusers,
accelerate, peft, ...) use libsafetensors instead, without editing that code.

Two things are done, in this order:

1. `sys.modules` gets our modules under the reference's names: `safetensors` (and its native
   module's names `safetensors._safetensors_rust`, `safetensors.safetensors_rust`),
   `safetensors.torch` (when torch imports) and `safetensors.numpy`, and, when first imported,
   `safetensors.flax`, `.tensorflow`, `.paddle` and `.mlx` (_LazyAliases). Every later
   `import safetensors...` or `from safetensors... import name`, including those made inside
   functions at call time, gets ours.
2. Unless `rebind=False`, names that already-imported modules took from the reference before
   the call (`from safetensors import safe_open` in transformers.modeling_utils, or
   `import safetensors` kept as a module attribute in diffusers) are rebound to our objects of
   the same name. Only module-level names that are the reference's very objects (its modules,
   functions and classes) are touched; copies kept anywhere else (in a class, a closure, a
   `functools.partial`) keep the reference's.

So the opt-in works whether it runs before or after transformers/diffusers are imported;
calling it first, before anything imports `safetensors`, is the simplest and needs no
rebinding. The reference's distribution may stay installed (transformers and diffusers
depend on it, and its version is what `importlib.metadata` reports): it is simply not used.
"""

import builtins
import importlib
import importlib.abc
import importlib.machinery
import sys
import types

# The reference's module names, each onto the attribute path of ours ("" for the package).
_ALIASES = {
    "safetensors": "",
    "safetensors._safetensors_rust": "",
    "safetensors.safetensors_rust": "",
    "safetensors.numpy": "numpy",
    "safetensors.torch": "torch",
}

# The reference's modules for frameworks whose import is slow or heavy (tensorflow takes
# seconds): made ours when first imported, by _LazyAliases, not at install time.
_LAZY_ALIASES = {
    "safetensors.flax": "libsafetensors.flax",
    "safetensors.mlx": "libsafetensors.mlx",
    "safetensors.paddle": "libsafetensors.paddle",
    "safetensors.tensorflow": "libsafetensors.tensorflow",
}


class _LazyAliases(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers `import safetensors.flax` (and the others of _LAZY_ALIASES) with our module
    object itself, imported then; without it the import system would find our file through
    the package path and run a second copy of it under the reference's name."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _LAZY_ALIASES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        # ImportError when the framework is missing, as the reference's module gives.
        return importlib.import_module(_LAZY_ALIASES[spec.name])

    def exec_module(self, module):
        pass  # imported, and so run, by create_module


_lazy_aliases = _LazyAliases()

# What the last install replaced, so that `uninstall_as_safetensors` can put it back:
# ({module name: previous sys.modules entry or None}, [(module, name, previous value, ours)]).
_installed = None


def _our_modules():
    import libsafetensors
    import libsafetensors.numpy

    ours = {}
    for name, attribute in _ALIASES.items():
        if attribute == "torch":
            try:
                import libsafetensors.torch
            except ImportError:
                continue  # no torch: `import safetensors.torch` fails as it would with the reference
        ours[name] = getattr(libsafetensors, attribute) if attribute else libsafetensors
    return ours


def _is_reference_own(value):
    """True for the reference's own definitions, not what it imported (`os`, `torch`, ...)."""
    if isinstance(value, types.ModuleType):
        return value.__name__.split(".")[0] == "safetensors"
    module = getattr(value, "__module__", None) or ""
    if module.split(".")[0] == "safetensors":
        return True
    # The native module's classes (safe_open) report "builtins", as true builtins do.
    return module == "builtins" and getattr(builtins, getattr(value, "__name__", ""), None) \
        is not value


def _replacements(previous, ours):
    """{id(reference object): (reference object, our object)} for every module, function and
    class of the reference modules in `previous` that ours also has by that name."""
    table = {}
    for name, old in previous.items():
        new = ours.get(name)
        if old is None or new is None or old is new:
            continue
        table[id(old)] = (old, new)
        for attribute, value in vars(old).items():
            if attribute.startswith("__") or not isinstance(value, (types.FunctionType,
                                                                    types.BuiltinFunctionType,
                                                                    type, types.ModuleType)):
                continue
            replacement = getattr(new, attribute, None)
            if replacement is None or replacement is value:
                continue
            if _is_reference_own(value):
                table[id(value)] = (value, replacement)
    return table


def install_as_safetensors(*, rebind=True):
    """Makes `import safetensors` (and `safetensors.torch`, `.numpy`, `.flax`, ...) give
    libsafetensors, for this process, whether or not the reference is installed or imported.

    Args:
        rebind (`bool`, defaults to `True`): also rebind the names already-imported modules
            took from the reference (see the module's documentation); with `False` only later
            imports are affected.

    Returns:
        The names rebound, as "module.name" strings (empty when nothing had imported the
        reference yet).

    Calling it again is harmless; `uninstall_as_safetensors()` undoes it.
    """
    global _installed
    ours = _our_modules()
    for name, ours_name in _LAZY_ALIASES.items():
        if sys.modules.get(name) is not None:  # the reference's, already imported
            try:
                ours[name] = importlib.import_module(ours_name)
            except ImportError:
                pass
    if _installed is None:
        previous = {name: sys.modules.get(name) for name in (*_ALIASES, *_LAZY_ALIASES)}
        _installed = (previous, [])
    if _lazy_aliases not in sys.meta_path:
        sys.meta_path.insert(0, _lazy_aliases)
    previous, rebound = _installed
    ours_ids = {id(module) for module in ours.values()}
    sys.modules.update(ours)
    if not rebind:
        return []
    table = _replacements({k: v for k, v in previous.items() if id(v) not in ours_ids}, ours)
    if not table:
        return []
    skipped = {id(module) for module in previous.values() if module is not None} | ours_ids
    names = []
    for module in list(sys.modules.values()):
        if not isinstance(module, types.ModuleType) or id(module) in skipped:
            continue
        try:
            namespace = vars(module)
        except TypeError:
            continue
        for attribute, value in list(namespace.items()):
            entry = table.get(id(value))
            if entry is not None and entry[0] is value:
                namespace[attribute] = entry[1]
                rebound.append((module, attribute, value, entry[1]))
                names.append(f"{module.__name__}.{attribute}")
    return names


def uninstall_as_safetensors():
    """Undoes `install_as_safetensors`: the previous `sys.modules` entries come back (removed
    where there were none) and rebound names get the reference's objects again, where they
    still hold ours. Does nothing when not installed."""
    global _installed
    if _installed is None:
        return
    previous, rebound = _installed
    if _lazy_aliases in sys.meta_path:
        sys.meta_path.remove(_lazy_aliases)
    for name, module in previous.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module
    for module, attribute, old, new in reversed(rebound):
        namespace = vars(module)
        if namespace.get(attribute) is new:
            namespace[attribute] = old
    _installed = None
