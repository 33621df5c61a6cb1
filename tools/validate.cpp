// `safetensors validate`: opens each file or checkpoint (which validates it) and reports per
// input.
#include <fmt/core.h>

#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "checkpoint_input.hpp"
#include "cli_common.hpp"
#include "safetensors/safetensors.hpp"

namespace safetensors::cli {
namespace {

struct ValidateOptions {
  std::vector<std::string> paths;
  bool quiet = false;
};

// True when `path` is a valid file or checkpoint; otherwise prints "FILE: <code>: <message>" on
// stderr.
bool validate_one(const std::string& path, bool quiet) {
  try {
    if (is_checkpoint_path(path)) {
      const Checkpoint checkpoint = Checkpoint::open(path);
      const std::size_t shards = checkpoint.files().size();
      if (!quiet && checkpoint.index_path().empty()) {
        fmt::print("{}: OK ({} tensors)\n", printable(path), checkpoint.tensors().size());
      } else if (!quiet) {
        fmt::print("{}: OK ({} tensors in {} shard{})\n", printable(path),
                   checkpoint.tensors().size(), shards, shards == 1 ? "" : "s");
      }
      return true;
    }
    const File file = File::open(path);
    if (!quiet) fmt::print("{}: OK ({} tensors)\n", printable(path), file.size());
    return true;
  } catch (const Error& e) {
    // Library messages already start with the file's name; say it once.
    std::string_view message = e.what();
    const std::string prefix = path + ": ";
    if (message.starts_with(prefix)) message.remove_prefix(prefix.size());
    fmt::print(stderr, "{}: {}: {}\n", printable(path), error_code_name(e.code()), message);
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: error: {}\n", printable(path), e.what());
  }
  return false;
}

}  // namespace

Command add_validate(CLI::App& parent) {
  auto options = std::make_shared<ValidateOptions>();
  CLI::App* app = parent.add_subcommand(
      "validate",
      "Check that each file follows the safetensors format exactly (header, offsets, sizes, no "
      "trailing bytes). A directory or an index (*.json) is checked as a sharded checkpoint: "
      "every shard, and that the index and the shards name the same tensors, each once, with "
      "the right total size. Prints 'FILE: OK (N tensors)' for a good file and 'FILE: <error>: "
      "<message>' on stderr for a bad one. Exit status 0 when every file is valid, 1 otherwise.");
  app->add_option("FILE", options->paths, "Files, checkpoint directories or indexes to check")
      ->required();
  app->add_flag("-q,--quiet", options->quiet, "Print nothing for valid files");
  return {app, [options] {
            bool all_valid = true;
            for (const std::string& path : options->paths) {
              all_valid = validate_one(path, options->quiet) && all_valid;
            }
            return all_valid ? 0 : 1;
          }};
}

}  // namespace safetensors::cli
