// Loading a shared library at run time (dlopen/dlsym), so that optional runtimes such as
// CUDA's are found when present and nothing links to them.
#pragma once

#include <string>

namespace safetensors::detail {

/// An open shared library; closed (dlclose) on destruction.
class DynamicLibrary {
 public:
  DynamicLibrary() = default;
  DynamicLibrary(DynamicLibrary&& other) noexcept;
  DynamicLibrary& operator=(DynamicLibrary&& other) noexcept;
  DynamicLibrary(const DynamicLibrary&) = delete;
  DynamicLibrary& operator=(const DynamicLibrary&) = delete;
  ~DynamicLibrary();

  /// Opens `name` (a path, or a file name the dynamic loader searches for) with local symbol
  /// binding. On failure returns an empty library and sets `why` to the loader's message.
  static DynamicLibrary open(const std::string& name, std::string& why);

  explicit operator bool() const noexcept { return handle_ != nullptr; }
  /// The address of `symbol`, or nullptr when the library does not define it.
  void* symbol(const char* symbol) const noexcept;
  /// The file the loader actually opened (dlinfo), or the name asked for.
  const std::string& name() const noexcept { return name_; }

 private:
  void* handle_ = nullptr;
  std::string name_;
};

}  // namespace safetensors::detail
