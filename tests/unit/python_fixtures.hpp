// Fixtures written during the tests by the Python scripts in tests/fixtures/pickles/, run
// with the interpreter CMake was configured with (the one with numpy and torch). The scripts
// only write files; nothing they make is ever loaded by Python.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "test_files.hpp"

namespace safetensors::test {

/// The interpreter the fixture scripts run with: $SAFETENSORS_PYTHON, which ctest sets to the
/// configured Python_EXECUTABLE, or the first `python3` on PATH when run by hand.
inline const std::string& python_interpreter() {
  static const std::string chosen = [] {
    const char* configured = std::getenv("SAFETENSORS_PYTHON");
    return std::string(configured != nullptr && *configured != '\0' ? configured : "python3");
  }();
  return chosen;
}

/// `s` as one word of a shell command line.
inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

/// `python_interpreter()` ready for a shell command line.
inline std::string python_command() {
  return shell_quote(python_interpreter());
}

/// True when the interpreter runs at all (tests that need it skip otherwise).
inline bool have_python() {
  static const bool ok = std::system((python_command() + " -c '' >/dev/null 2>&1").c_str()) == 0;
  return ok;
}

/// Exit status a fixture script uses when a module it needs (torch, numpy) is missing.
inline constexpr int missing_module_status = 3;

struct Generated {
  int status = -1;  // the script's exit status; -1 when it could not run
  std::filesystem::path dir;
};

/// Runs tests/fixtures/pickles/<script> with a fresh scratch directory as its argument.
inline Generated run_fixture_script(std::string_view script) {
  static std::atomic<unsigned> counter{0};
  Generated out;
  out.dir = scratch_dir() / ("pickles-" + std::string(script) + "-" + std::to_string(::getpid()) +
                             "-" + std::to_string(counter++));
  if (!have_python()) return out;
  const auto path =
      std::filesystem::path(__FILE__).parent_path().parent_path() / "fixtures" / "pickles" / script;
  const std::string command =
      python_command() + " '" + path.string() + "' '" + out.dir.string() + "'";
  const int raw = std::system(command.c_str());
  if (raw != -1 && WIFEXITED(raw)) out.status = WEXITSTATUS(raw);
  return out;
}

inline std::vector<std::byte> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(chars.size());
  for (std::size_t i = 0; i < chars.size(); ++i) out[i] = static_cast<std::byte>(chars[i]);
  return out;
}

/// The whitespace-separated words of each line of `dir/name`.
inline std::vector<std::vector<std::string>> read_manifest(const std::filesystem::path& dir,
                                                           std::string_view name = "manifest.txt") {
  std::ifstream in(dir / name);
  std::vector<std::vector<std::string>> lines;
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::vector<std::string> row{std::istream_iterator<std::string>(words), {}};
    if (!row.empty()) lines.push_back(std::move(row));
  }
  return lines;
}

}  // namespace safetensors::test
