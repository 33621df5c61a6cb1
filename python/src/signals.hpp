// Ctrl-C during work that runs without the GIL (saving, loading a checkpoint): Python only
// runs its signal handlers when it gets control, so the library's callbacks take the GIL back
// now and then, run them, and unwind the work with PythonSignal when one raised; the
// translator registered here then lets the handler's exception (KeyboardInterrupt) through.
#pragma once

#include <pybind11/pybind11.h>

#include <exception>

namespace safetensors::python {

/// Unwinds library work, whose destructors clean up (a save deletes its temporary file),
/// while the Python exception a signal handler raised stays set.
struct PythonSignal {};

/// Takes the GIL, runs pending signal handlers and throws PythonSignal if one raised. Python
/// runs handlers on the main thread only; anywhere else this just returns.
inline void check_signals() {
  pybind11::gil_scoped_acquire acquire;
  if (PyErr_CheckSignals() != 0) throw PythonSignal{};
}

/// Once per module: a PythonSignal leaving a binding raises the exception already set.
inline void register_signal_translator() {
  pybind11::register_exception_translator([](std::exception_ptr raised) {
    try {
      if (raised) std::rethrow_exception(raised);
    } catch (const PythonSignal&) {
      // The handler's exception is the one to raise; it is already set.
    }
  });
}

}  // namespace safetensors::python
