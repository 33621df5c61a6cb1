#include "io/dynamic_library.hpp"

#include <dlfcn.h>
#include <link.h>

#include <utility>

namespace safetensors::detail {

DynamicLibrary::DynamicLibrary(DynamicLibrary&& other) noexcept
    : handle_(std::exchange(other.handle_, nullptr)), name_(std::move(other.name_)) {}

DynamicLibrary& DynamicLibrary::operator=(DynamicLibrary&& other) noexcept {
  if (this != &other) {
    if (handle_ != nullptr) ::dlclose(handle_);
    handle_ = std::exchange(other.handle_, nullptr);
    name_ = std::move(other.name_);
  }
  return *this;
}

DynamicLibrary::~DynamicLibrary() {
  if (handle_ != nullptr) ::dlclose(handle_);
}

DynamicLibrary DynamicLibrary::open(const std::string& name, std::string& why) {
  DynamicLibrary library;
  ::dlerror();  // clears an earlier message
  library.handle_ = ::dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (library.handle_ == nullptr) {
    const char* message = ::dlerror();
    why = message != nullptr ? message : name + ": cannot be opened";
    return library;
  }
  library.name_ = name;
  link_map* map = nullptr;  // where the search found it
  if (::dlinfo(library.handle_, RTLD_DI_LINKMAP, &map) == 0 && map != nullptr &&
      map->l_name != nullptr && map->l_name[0] != '\0') {
    library.name_ = map->l_name;
  }
  return library;
}

void* DynamicLibrary::symbol(const char* symbol) const noexcept {
  return handle_ == nullptr ? nullptr : ::dlsym(handle_, symbol);
}

}  // namespace safetensors::detail
