"""Loads of many tensors pause Python's cyclic garbage collector while they make their objects,
and leave it as they found it (libsafetensors/_collector.py)."""

import gc
import threading

import pytest
import torch

import libsafetensors.numpy as st_numpy
from libsafetensors import SafetensorError, safe_open
from libsafetensors._collector import collector_paused
from libsafetensors.torch import load, load_checkpoint, load_file, save_file

TENSORS = 3000  # several thousand new objects: a few collections, were the collector running


@pytest.fixture
def many(tmp_path):
    path = tmp_path / "many.safetensors"
    save_file({f"layer.{i}.weight": torch.full((2,), float(i)) for i in range(TENSORS)}, path)
    return path


def collections_during(call):
    """(result of call(), generations of the collections that started while it ran)."""
    started = []
    inside = [False]

    def on_gc(phase, info):
        if phase == "start" and inside[0]:
            started.append(info["generation"])

    gc.collect()  # from an empty youngest generation, whatever the tests before left
    gc.callbacks.append(on_gc)
    try:
        inside[0] = True
        result = call()
        inside[0] = False
    finally:
        gc.callbacks.remove(on_gc)
    return result, started


LOADS = {
    "load_file": lambda path: load_file(path),
    "load_file(materialize)": lambda path: load_file(path, materialize=True),
    "load_checkpoint": lambda path: load_checkpoint(path),
    "load_checkpoint(copy)": lambda path: load_checkpoint(path, copy=True),
    "numpy load_checkpoint": lambda path: st_numpy.load_checkpoint(path),
    "numpy load_file": lambda path: st_numpy.load_file(path),
    "load(bytes)": lambda path: load(path.read_bytes()),
}


@pytest.mark.parametrize("how", sorted(LOADS))
def test_no_collection_runs_inside_a_load_of_many_tensors(many, how):
    assert gc.isenabled()
    loaded, started = collections_during(lambda: LOADS[how](many))
    assert len(loaded) == TENSORS
    assert float(loaded[f"layer.{TENSORS - 1}.weight"][1]) == TENSORS - 1
    # At most the one young collection the pause leaves for the first allocation after it,
    # which may still come before the call returns; running, the collector makes several.
    assert started in ([], [0]), f"{how}: collections of generations {started} ran in the load"
    assert gc.isenabled()


def test_safe_open_get_tensors_runs_no_collection(many):
    with safe_open(many, framework="pt") as f:
        loaded, started = collections_during(f.get_tensors)
    assert len(loaded) == TENSORS and started in ([], [0])


def test_the_collector_is_switched_back_on_after_a_load(many):
    load_checkpoint(many)
    assert gc.isenabled()
    # ... and collects again: the objects the load made are seen by the next collection.
    _, started = collections_during(lambda: [[] for _ in range(5000)])
    assert started, "no collection ran after the load"


def test_a_collector_switched_off_by_the_program_stays_off(many):
    gc.disable()
    try:
        load_file(many)
        load_checkpoint(many)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_failing_load_switches_the_collector_back_on(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(SafetensorError):
        load_checkpoint(bad)
    with pytest.raises(SafetensorError):
        load_file(bad)
    assert gc.isenabled()


def test_pauses_in_several_threads_end_with_the_last(many):
    # One thread holds a pause while another loads: the load's end must not restart the
    # collector under the first; the first's end does.
    holding, release = threading.Event(), threading.Event()

    def hold():
        with collector_paused():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    try:
        load_checkpoint(many)
        assert not gc.isenabled(), "a load ending in one thread restarted a pause of another"
    finally:
        release.set()
        holder.join(10)
    assert gc.isenabled()


def test_concurrent_loads_leave_the_collector_on(many):
    errors = []

    def run():
        try:
            for _ in range(3):
                assert len(load_file(many)) == TENSORS
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert gc.isenabled()
