#!/usr/bin/env python3
"""Runs the reference `safetensors` package's own Python tests against libsafetensors, through
`libsafetensors.install_as_safetensors()`.

The reference's tests are not part of this repository: they are fetched at run time from PyPI
(the reference's source distribution, which ships `bindings/python/tests/`), checked against a
pinned SHA-256, unpacked into build/reference-suite/ (a scratch folder, git-ignored), and run
with pytest under the interpreter running this script. A conftest.py written next to them
installs our package as `safetensors` before any test module imports it, marks the tests we
fail on purpose (EXPECTED_FAILURES below) as strict expected failures, skips visibly the test
files of frameworks that are not installed, and at the end of the session fails the run unless
every `safetensors` name the tests used was ours.

    PYTHONPATH=build/python .venv/bin/python scripts/reference_suite.py [pytest arguments...]

(pytest runs in build/reference-suite/safetensors-0.8.0/bindings/python/: name tests as
tests/test_simple.py::ReadmeTestCase, say.)

Only the test folder and the pytest settings (setup.cfg) are unpacked, never the reference's
own Python sources. The sdist is downloaded once and kept in build/reference-suite/; set
SAFETENSORS_REFERENCE_SDIST to a local copy of it to run offline, PIP_INDEX_URL for another
index (`pip download` itself cannot fetch it: pip builds the package's metadata, which needs
Rust crates from crates.io). The exit status is pytest's.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

VERSION = "0.8.0"
SDIST = f"safetensors-{VERSION}.tar.gz"
SDIST_SHA256 = "fabaf3e0f18a6618d9b36560682562157f77c2b71fcffc7b432be2baed9d753d"
ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / "build" / "reference-suite"

# Test ids (relative to the reference's bindings/python/) that fail against libsafetensors on
# purpose, each with the deliberate difference behind it (docs/FORMAT.md, "The reference's own
# test suite"). They run as strict expected failures: one that starts passing fails the run.
EXPECTED_FAILURES = {
    "tests/test_pt_model.py::TorchModelTestCase::test_remove_duplicate_names":
        "a tensor alone in its storage but not covering all of it (one part of a packed buffer, "
        "as cuDNN RNNs keep their weights) has nothing to deduplicate: save_model writes its own "
        "bytes where the reference raises RuntimeError",
}

# Test files (whose module-level imports need a framework) and tests that need modules the
# reference's CI installs, and what they need: skipped, with the reason, when any is missing.
REQUIREMENTS = {
    "tests/test_flax_comparison.py": ("jax", "flax"),
    "tests/test_tf_comparison.py": ("tensorflow", "h5py"),
    "tests/test_handle.py::ReadmeTestCase::test_fsspec": ("fsspec",),
}

CONFTEST = '''\
"""Written by libsafetensors' scripts/reference_suite.py: these tests run against it."""

import importlib.util
import json
import os
import sys

import pytest

# SETTINGS

import libsafetensors

libsafetensors.install_as_safetensors()

import safetensors  # noqa: E402

assert safetensors is libsafetensors, safetensors

EXPECTED_FAILURES = json.loads(EXPECTED_FAILURES_JSON)
REQUIREMENTS = json.loads(REQUIREMENTS_JSON)


def _missing(test):
    missing = [name for name in REQUIREMENTS.get(test, ())
               if importlib.util.find_spec(name) is None]
    return " and ".join(missing) + " not installed" if missing else None


class _MissingFramework(pytest.Module):
    reason = ""

    def collect(self):
        pytest.skip(self.reason, allow_module_level=True)


def pytest_pycollect_makemodule(module_path, parent):
    missing = _missing(f"tests/{module_path.name}")
    if missing:
        module = _MissingFramework.from_parent(parent, path=module_path)
        module.reason = f"{module_path.name}: {missing}"
        return module
    return None


def pytest_collection_modifyitems(config, items):
    files = {item.nodeid.split("::")[0] for item in items}
    # Only ids of the files collected: a run of some files or tests (-k) may leave others out.
    unknown = {test for test in EXPECTED_FAILURES if test.split("::")[0] in files}
    for item in items:
        missing = _missing(item.nodeid)
        if missing:
            item.add_marker(pytest.mark.skip(reason=missing))
        reason = EXPECTED_FAILURES.get(item.nodeid)
        if reason is not None:
            unknown.discard(item.nodeid)
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
    if unknown:
        raise pytest.UsageError(f"EXPECTED_FAILURES names unknown tests: {sorted(unknown)}")


def _foreign(value):
    """True for an object of the reference's own modules (not ours under its name)."""
    module = getattr(value, "__module__", None)
    if not isinstance(module, str) and hasattr(value, "__name__"):
        module = value.__name__  # a module
    return isinstance(module, str) and module.split(".")[0] == "safetensors" and \\
        not (isinstance(value, type(sys)) and value.__name__.startswith("libsafetensors"))


def pytest_sessionfinish(session, exitstatus):
    problems = []
    for name in ("safetensors", "safetensors.numpy", "safetensors.torch"):
        module = sys.modules.get(name)
        if module is not None and not module.__name__.startswith("libsafetensors"):
            problems.append(f"sys.modules[{name!r}] is {module!r}")
    if safetensors.safe_open.__module__.split(".")[0] != "libsafetensors":
        problems.append(f"safetensors.safe_open comes from {safetensors.safe_open.__module__}")
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        if "site-packages" in path and os.sep + "safetensors" + os.sep in path:
            problems.append(f"the reference's {name} was imported from {path}")
    checked = 0
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None) or ""
        if not path.startswith(HERE) or not module.__name__.split(".")[-1].startswith("test_"):
            continue
        for attribute, value in vars(module).items():
            if isinstance(value, type(sys)) and value.__name__.split(".")[0] in (
                    "safetensors", "libsafetensors"):
                checked += 1
                if not value.__name__.startswith("libsafetensors"):
                    problems.append(f"{module.__name__}.{attribute} is {value!r}")
            elif getattr(value, "__module__", None) and \\
                    str(value.__module__).split(".")[0] in ("safetensors", "libsafetensors"):
                checked += 1
                if _foreign(value):
                    problems.append(f"{module.__name__}.{attribute} comes from {value.__module__}")
    if problems:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        _REPORT.append("the tests did not all run against libsafetensors:\\n  " +
                       "\\n  ".join(problems))
    else:
        _REPORT.append(f"checked: the {checked} safetensors names bound in the test modules are "
                       f"libsafetensors' ({libsafetensors.__file__})")


_REPORT = []


def pytest_terminal_summary(terminalreporter):
    for line in _REPORT:
        terminalreporter.write_line(line, bold=True, red=line.startswith("the tests did not"))
'''


def _fetch_sdist():
    local = os.environ.get("SAFETENSORS_REFERENCE_SDIST")
    if local:
        return Path(local)
    cached = SCRATCH / SDIST
    if cached.exists():
        return cached
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    request = urllib.request.Request(f"{index}/safetensors/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:  # the index's JSON page (PEP 691) names the file's URL
        with urllib.request.urlopen(request, timeout=60) as response:
            files = json.load(response)["files"]
        url = next(entry["url"] for entry in files if entry["filename"] == SDIST)
        print(f"downloading {url}", flush=True)
        with urllib.request.urlopen(url, timeout=300) as response:
            data = response.read()
    except (OSError, ValueError, KeyError, StopIteration) as error:
        sys.exit(f"cannot fetch {SDIST} from {index}: {error!r}; set SAFETENSORS_REFERENCE_SDIST "
                 "to a local copy")
    SCRATCH.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(cached)
    return cached


def _unpack(sdist):
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        if sdist == SCRATCH / SDIST:
            sdist.unlink()  # a damaged download: fetched again next time
        sys.exit(f"{sdist}: SHA-256 {digest}, expected {SDIST_SHA256}")
    base = f"safetensors-{VERSION}/bindings/python/"
    target = SCRATCH / f"safetensors-{VERSION}"
    shutil.rmtree(target, ignore_errors=True)  # a fresh copy: the tests write into tests/data
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.isfile() and (
            m.name.startswith(base + "tests/") or m.name == base + "setup.cfg")]
        try:
            archive.extractall(SCRATCH, members=members, filter="data")
        except TypeError:  # Python without extraction filters (before 3.10.12 / 3.11.4)
            archive.extractall(SCRATCH, members=members)
    tests = target / "bindings" / "python" / "tests"
    settings = (f"HERE = {str(tests) + os.sep!r}\n"
                f"EXPECTED_FAILURES_JSON = {json.dumps(EXPECTED_FAILURES)!r}\n"
                f"REQUIREMENTS_JSON = {json.dumps(REQUIREMENTS)!r}")
    (tests / "conftest.py").write_text(CONFTEST.replace("# SETTINGS", settings))
    return tests.parent


def main():
    where = _unpack(_fetch_sdist())
    arguments = sys.argv[1:]
    if not any(a == "tests" or a.startswith("tests/") for a in arguments):
        arguments.insert(0, "tests")  # the whole suite unless some of it is named
    command = [sys.executable, "-m", "pytest", "-ra", "-p", "no:cacheprovider", *arguments]
    print(f"running the reference {VERSION}'s tests in {where}: {' '.join(command)}", flush=True)
    env = dict(os.environ)
    if env.get("PYTHONPATH"):  # the tests run in another folder: relative entries made absolute
        env["PYTHONPATH"] = os.pathsep.join(
            os.path.abspath(entry) if entry else entry
            for entry in env["PYTHONPATH"].split(os.pathsep))
    return subprocess.call(command, cwd=where, env=env)


if __name__ == "__main__":
    sys.exit(main())
