// `safetensors validate`: opens each file or checkpoint (which validates it) and reports per
// input.
#include <fmt/core.h>

#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "checkpoint_input.hpp"
#include "cli_common.hpp"
#include "progress.hpp"
#include "safetensors/safetensors.hpp"

namespace safetensors::cli {
namespace {

struct ValidateOptions {
  std::vector<std::string> paths;
  bool quiet = false;
  bool json = false;
};

// The verdict on one input. `shards` is 0 for a single file (no index).
struct Verdict {
  std::string path;
  bool valid = false;
  std::size_t tensors = 0;
  std::size_t shards = 0;
  std::string error;  // the error code's name when invalid
  std::string message;
  // An index's `total_size` other than the tensors' bytes: reported, not an error
  // (Checkpoint::declared_total_size says why).
  std::optional<std::uint64_t> declared_total_size;
  std::uint64_t tensor_bytes = 0;
};

// The last checkpoint opened, never freed: the process ends right after it. Freeing the
// headers of 200,000 tensors entry by entry (400,000 heap blocks, which malloc then
// consolidates) took 8% of a `validate` run on the development VM (perf); exit returns the
// memory at once. Each checkpoint replaces the one before, so a batch holds one. Reachable from
// here, so leak checkers do not count it. (A single file is checked without keeping anything:
// File::validate.)
template <class Opened>
const Opened& keep_until_exit(Opened&& opened) {
  static Opened* kept = nullptr;
  delete kept;
  kept = new Opened(std::move(opened));
  return *kept;
}

Verdict validate_one(const std::string& path) {
  Verdict verdict;
  verdict.path = path;
  try {
    if (is_checkpoint_path(path)) {
      const Checkpoint& checkpoint = keep_until_exit(Checkpoint::open(path));
      verdict.tensors = checkpoint.tensors().size();
      if (!checkpoint.index_path().empty()) verdict.shards = checkpoint.files().size();
      const std::optional<std::uint64_t> declared = checkpoint.declared_total_size();
      if (declared && *declared != checkpoint.total_bytes()) {
        verdict.declared_total_size = declared;
        verdict.tensor_bytes = checkpoint.total_bytes();
      }
    } else {
      verdict.tensors = File::validate(path);
    }
    verdict.valid = true;
  } catch (const Error& e) {
    // Library messages already start with the file's name; say it once.
    std::string_view message = e.what();
    const std::string prefix = path + ": ";
    if (message.starts_with(prefix)) message.remove_prefix(prefix.size());
    verdict.error = error_code_name(e.code());
    verdict.message = message;
  } catch (const std::exception& e) {
    verdict.error = "error";
    verdict.message = e.what();
  }
  return verdict;
}

// "FILE: OK (N tensors)" on stdout, or "FILE: <code>: <message>" on stderr.
void print_text(const Verdict& v, bool quiet) {
  if (!v.valid) {
    fmt::print(stderr, "{}: {}: {}\n", printable(v.path), v.error, printable(v.message));
    return;
  }
  if (quiet) return;
  if (v.shards == 0) {
    fmt::print("{}: OK ({} tensors)\n", printable(v.path), v.tensors);
  } else {
    std::string total_size_note;
    if (v.declared_total_size) {
      total_size_note = fmt::format("; the index's total_size is {}, the tensors hold {} bytes",
                                    *v.declared_total_size, v.tensor_bytes);
    }
    fmt::print("{}: OK ({} tensors in {} shard{}{})\n", printable(v.path), v.tensors, v.shards,
               v.shards == 1 ? "" : "s", total_size_note);
  }
}

std::string json_verdict(const Verdict& v) {
  JsonObject out;
  out.text("file", v.path).boolean("valid", v.valid);
  if (v.valid) {
    out.number("tensors", std::uint64_t{v.tensors});
    if (v.shards != 0) out.number("shards", std::uint64_t{v.shards});
    if (v.declared_total_size) {
      out.number("declared_total_size", *v.declared_total_size)
          .number("tensor_bytes", v.tensor_bytes);
    }
  } else {
    out.text("error", v.error).text("message", v.message);
  }
  return out.str();
}

int run_validate(const ValidateOptions& options) {
  // One file opens in an instant; a progress line is worth it for a batch.
  Progress progress("validating", options.paths.size(), Progress::Unit::items);
  const bool batch = options.paths.size() > 1;
  bool all_valid = true;
  std::vector<std::string> json;
  for (std::size_t i = 0; i < options.paths.size(); ++i) {
    if (batch) progress.update(i);
    const Verdict verdict = validate_one(options.paths[i]);
    all_valid = all_valid && verdict.valid;
    progress.clear();
    if (options.json) {
      json.push_back(json_verdict(verdict));
    } else {
      print_text(verdict, options.quiet);
    }
  }
  progress.clear();
  if (options.json) fmt::print("{}\n", json_array(json));
  return all_valid ? 0 : 1;
}

}  // namespace

Command add_validate(CLI::App& parent) {
  auto options = std::make_shared<ValidateOptions>();
  CLI::App* app = parent.add_subcommand(
      "validate",
      "Check that files follow the safetensors format exactly\n\n"
      "Checks the header, offsets, sizes and that no bytes trail. A directory or an index "
      "(*.json) is checked as a sharded checkpoint: every shard, and that the index and the "
      "shards name the same tensors, each once. An index's total_size other than the tensors' "
      "bytes is reported, not refused (mlx-lm writes the shards' file sizes there). Prints "
      "'FILE: OK (N tensors)' for a good file and 'FILE: <error>: <message>' on stderr for a "
      "bad one; with --json, one array on stdout with an object per input: file, valid, "
      "tensors, shards and, where they differ, declared_total_size and tensor_bytes, or error "
      "and message. Exit status 0 when every file is valid, 1 otherwise.");
  app->add_option("FILE", options->paths, "Files, checkpoint directories or indexes to check")
      ->required();
  app->add_flag("-q,--quiet", options->quiet, "Print nothing for valid files");
  app->add_flag("--json", options->json, "Print the verdicts as a JSON array");
  return {app, [options] { return run_validate(*options); }};
}

}  // namespace safetensors::cli
