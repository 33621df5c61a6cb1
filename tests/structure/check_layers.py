#!/usr/bin/env python3
"""Checks that the library's layers only include the layers below them, and that every
source file is listed in its CMakeLists.txt (sources are listed, never globbed, so a file left
out would silently not be built).

Every folder of src/ is a layer, and every public header belongs to the layer that implements
it. LAYERS below is the one statement of which layer may use which (docs/ARCHITECTURE.md
draws it); a layer may use what its allowed layers may use, transitively.

Usage: check_layers.py REPO_ROOT    (exit 1 and one line per violation when a layer reaches up)
       check_layers.py --self-test   (shows that a violation is caught)
"""
import pathlib
import re
import sys
import tempfile

# Each layer and the layers it builds on directly, lowest first.
LAYERS = {
    "encoding": [],
    "error": ["encoding"],
    "io": ["error"],
    "format": ["io"],
    "checkpoint": ["format"],
    "loader": ["checkpoint"],
    "device": ["loader"],
    "zip": ["io"],
    "pickle": ["error"],
    "torch": ["zip", "pickle", "format"],
    "npy": ["format"],
    "convert": ["loader", "torch", "npy"],
}

# The layer of each public header (include/safetensors/<name>.hpp); None: usable by all.
PUBLIC_HEADERS = {
    "export": None,
    "version": None,
    "error": "error",
    "source": "io",
    "atomic_file": "io",
    "dtype": "format",
    "header": "format",
    "file": "format",
    "slice": "format",
    "values": "format",
    "writer": "format",
    "checkpoint": "checkpoint",
    "cast": "loader",
    "loader": "loader",
    "parallel": "loader",
    "device_map": "loader",
    "device": "device",
    "convert": "convert",
    "scan": "convert",
    "safetensors": "umbrella",  # the whole API: never included by the library itself
}

INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)


def reachable(layer):
    """The layers `layer` may include, itself among them."""
    seen, todo = set(), [layer]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(LAYERS[current])
    return seen


def layer_of_include(path, including_file):
    """The layer an #include "path" names, or None when any layer may include it."""
    if path.startswith("safetensors/"):
        name = pathlib.PurePosixPath(path).stem
        if name not in PUBLIC_HEADERS:
            raise SystemExit(f"{including_file}: public header {path} has no layer in "
                             "PUBLIC_HEADERS of tests/structure/check_layers.py")
        return PUBLIC_HEADERS[name]
    folder = path.split("/", 1)[0]
    if "/" not in path or folder not in LAYERS:
        raise SystemExit(f'{including_file}: #include "{path}" names no layer: library '
                         "headers are included as \"<layer>/<name>.hpp\" or \"safetensors/...\"")
    return folder


def violations(root):
    """Lines "file: includes X (layer L) from layer M" for every upward include."""
    root = pathlib.Path(root)
    found = []
    files = [(p, p.relative_to(root / "src").parts[0]) for p in (root / "src").rglob("*")
             if p.suffix in (".cpp", ".hpp")]
    for p in (root / "include" / "safetensors").glob("*.hpp"):
        files.append((p, PUBLIC_HEADERS.get(p.stem, "unknown")))
    for path, layer in files:
        if layer in ("umbrella", None):
            continue
        if layer not in LAYERS:
            found.append(f"{path.relative_to(root)}: folder or header {layer!r} is not a "
                         "layer in tests/structure/check_layers.py")
            continue
        allowed = reachable(layer)
        for included in INCLUDE.findall(path.read_text()):
            target = layer_of_include(included, path.relative_to(root))
            if target is not None and target not in allowed:
                found.append(f"{path.relative_to(root)}: layer {layer} includes "
                             f'"{included}" of layer {target}')
    return found


# Folders whose .cpp files a CMakeLists.txt lists by name: (folder, CMakeLists.txt, how a
# file appears in the list).
LISTED_SOURCES = [
    ("src", "src/CMakeLists.txt", lambda rel: rel),
    ("tools", "tools/CMakeLists.txt", lambda rel: rel),
    ("tests/unit", "tests/CMakeLists.txt", lambda rel: rel[:-len(".cpp")]),
]


def unlisted_sources(root):
    """Lines "file: not listed in CMakeLists.txt" for every source the build would miss."""
    root = pathlib.Path(root)
    found = []
    for folder, cmake, entry in LISTED_SOURCES:
        if not (root / cmake).exists():
            continue
        words = set(re.findall(r"[\w./]+", (root / cmake).read_text()))
        pattern = "*_test.cpp" if folder == "tests/unit" else "*.cpp"
        for path in sorted((root / folder).rglob(pattern)):
            rel = path.relative_to(root / folder).as_posix()
            if entry(rel) not in words:
                found.append(f"{folder}/{rel}: not listed in {cmake}")
    return found


def self_test():
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        (root / "include" / "safetensors").mkdir(parents=True)
        (root / "src" / "io").mkdir(parents=True)
        (root / "src" / "convert").mkdir(parents=True)
        (root / "src" / "convert" / "ok.cpp").write_text('#include "io/posix.hpp"\n')
        (root / "src" / "io" / "bad.cpp").write_text(
            '#include "safetensors/error.hpp"\n#include "convert/plan.hpp"\n')
        (root / "include" / "safetensors" / "source.hpp").write_text(
            '#include "safetensors/loader.hpp"\n')
        (root / "src" / "CMakeLists.txt").write_text("set(SOURCES\n    io/bad.cpp)\n")
        if unlisted_sources(root) != ["src/convert/ok.cpp: not listed in src/CMakeLists.txt"]:
            print("self-test failed; unlisted sources:", *unlisted_sources(root), sep="\n  ")
            return 1
        found = violations(root)
        expected = ['src/io/bad.cpp: layer io includes "convert/plan.hpp" of layer convert',
                    'include/safetensors/source.hpp: layer io includes '
                    '"safetensors/loader.hpp" of layer loader']
        if sorted(found) != sorted(expected):
            print("self-test failed; found:", *found, sep="\n  ")
            return 1
    print("self-test passed: upward includes and unlisted sources are reported")
    return 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    found = violations(sys.argv[1])
    unlisted = unlisted_sources(sys.argv[1])
    for line in found + unlisted:
        print(line)
    if found:
        print(f"{len(found)} include(s) reach up a layer")
    if unlisted:
        print(f"{len(unlisted)} source file(s) missing from the build")
    if found or unlisted:
        return 1
    print("every include stays within its layer or below; every source is in the build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
