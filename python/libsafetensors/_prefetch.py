"""Reading ahead: `safe_open(..., prefetch=True)` (a worker moving every tensor to the device
in file order) and `safe_open.prefetch(names)` (a small thread pool reading what is asked)."""

import collections
import concurrent.futures
import threading

from libsafetensors._core import SafetensorError

# Device types that `safe_open(..., prefetch=True)` loads onto (the reference's restriction).
_PREFETCH_DEVICE_TYPES = ("cuda",)


def _check_prefetch(framework, backend):
    if backend != "pread":
        raise SafetensorError(f'prefetch=True needs backend="pread", not backend="{backend}"')
    if framework != "pt":
        raise SafetensorError(f'prefetch=True needs framework="pt", not framework="{framework}"')


def _check_prefetch_device(convert, device):
    target = convert.device
    kind = "dict" if isinstance(target, dict) else "cpu" if target is None else target.type
    if kind not in _PREFETCH_DEVICE_TYPES:
        raise SafetensorError(f"prefetch=True needs one cuda device, not device={device!r}")


class _DeviceLoader:
    """The background loading of `safe_open(..., prefetch=True)`.

    A worker thread reads the tensors in file order and moves each to the device; the library
    releases the GIL while reading, torch while copying. Every tensor is delivered once: a
    `take` of one the worker has not reached yet loads it at once on the caller's thread.
    """

    _PENDING, _LOADING, _READY, _TAKEN = range(4)

    def __init__(self, file, convert):
        self._file = file
        self._convert = convert
        self._lock = threading.Condition()
        self._state = {name: self._PENDING for name in file.offset_keys()}
        self._order = collections.deque(self._state)  # what the worker has still to look at
        self._ready = {}  # name -> tensor, or the exception loading it raised
        self._ready_order = collections.deque()  # names as the worker finished them
        self._worker_done = False
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="libsafetensors-prefetch",
                                        daemon=True)
        self._worker.start()

    def _load(self, name):
        try:
            dtype, shape = self._file.info(name)
            return self._convert.tensor(self._file.tensor(name), dtype, shape, name)
        except Exception as error:  # raised to whoever takes the tensor
            return error

    def _run(self):
        try:
            while True:
                with self._lock:
                    while self._order and self._state[self._order[0]] != self._PENDING:
                        self._order.popleft()  # taken before the worker reached it
                    if self._closed or not self._order:
                        return
                    name = self._order.popleft()
                    self._state[name] = self._LOADING
                result = self._load(name)
                with self._lock:
                    if self._closed:
                        return
                    self._ready[name] = result
                    if self._state[name] == self._LOADING:
                        self._state[name] = self._READY
                        self._ready_order.append(name)
                    self._lock.notify_all()
        finally:
            with self._lock:
                self._worker_done = True
                self._lock.notify_all()

    @staticmethod
    def _deliver(result):
        if isinstance(result, Exception):
            raise result
        return result

    def _wait(self):
        if self._closed:
            raise SafetensorError("File is closed")
        self._lock.wait()

    def take(self, name):
        with self._lock:
            state = self._state.get(name)
            if state is None:
                self._file.info(name)  # raises: the file has no such tensor
            if state == self._TAKEN:
                raise SafetensorError(f"tensor {name} was already delivered: with prefetch=True "
                                      "each tensor is handed out once")
            self._state[name] = self._TAKEN
            if state != self._PENDING:  # loading or loaded by the worker
                # A worker that ended without a result (it died) leaves the load to us.
                while name not in self._ready and not self._worker_done:
                    self._wait()
                if name in self._ready:
                    return self._deliver(self._ready.pop(name))
        return self._deliver(self._load(name))

    def stream(self):
        while True:
            with self._lock:
                while True:
                    if self._closed:
                        raise SafetensorError("File is closed")
                    while self._ready_order and (
                            self._state[self._ready_order[0]] != self._READY):
                        self._ready_order.popleft()  # taken by get_tensor meanwhile
                    if self._ready_order:
                        break
                    if self._worker_done:
                        return
                    self._wait()
                name = self._ready_order.popleft()
                self._state[name] = self._TAKEN
                result = self._ready.pop(name)
            yield name, self._deliver(result)

    def close(self, join=True):
        """Stops the worker; `join=False` does not wait for it (it ends at its next step),
        for garbage collection, which may run on a thread that holds our lock."""
        with self._lock:
            self._closed = True
            self._ready.clear()
            self._lock.notify_all()
        if join and self._worker is not threading.current_thread():
            self._worker.join()


class _PrefetchHandle:
    """What `safe_open.prefetch` returns: a single-use iterator of (name, tensor).

    Reads run on a small thread pool (the library releases the GIL while reading), at most
    `max_inflight` ahead of the consumer. They hold the file open, so the handle outlives a
    `with safe_open(...)` block.
    """

    def __init__(self, read, names, max_inflight):
        self._read = read
        self._waiting = collections.deque(names)
        self._inflight = collections.deque()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(max_inflight, max(len(names), 1)),
            thread_name_prefix="libsafetensors-prefetch")
        self._max_inflight = max_inflight
        self._fill()

    def _fill(self):
        while self._waiting and len(self._inflight) < self._max_inflight:
            name = self._waiting.popleft()
            self._inflight.append((name, self._pool.submit(self._read, name)))
        if not self._waiting and not self._inflight:
            self._pool.shutdown(wait=False)

    def __len__(self):
        return len(self._waiting) + len(self._inflight)

    def __iter__(self):
        return self

    def __next__(self):
        if not self._inflight:
            raise StopIteration
        name, future = self._inflight.popleft()
        try:
            tensor = future.result()
        finally:
            self._fill()
        return name, tensor

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
