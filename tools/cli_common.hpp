// Helpers shared by the subcommands of the `safetensors` command.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "safetensors/dtype.hpp"

namespace safetensors::cli {

/// A registered subcommand: its parser and the action to run once it parsed. `run` returns
/// the process exit status and may throw; main turns exceptions into messages.
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

Command add_inspect(CLI::App& parent);
Command add_validate(CLI::App& parent);
Command add_merge(CLI::App& parent);
Command add_get(CLI::App& parent);
Command add_shard(CLI::App& parent);
Command add_scan(CLI::App& parent);
Command add_convert(CLI::App& parent);
Command add_cast(CLI::App& parent);
Command add_bench(CLI::App& parent);
Command add_plan(CLI::App& parent);

/// A `cast` target from the command line: f32, f16 or bf16 in any case (also float32,
/// float16, half, bfloat16). Throws invalid_argument for anything else.
Dtype parse_cast_dtype(std::string_view text);

/// "512 B", "1.5 KiB", "250.0 MiB": binary units, one decimal above bytes.
std::string human_size(std::uint64_t bytes);

/// "6.74 B" style count with decimal suffixes (K, M, B, T) for parameter totals.
std::string human_count(std::uint64_t count);

/// "[32000, 4096]"; "[]" for a scalar.
std::string shape_text(const std::vector<std::uint64_t>& shape);

/// A JSON string literal, quotes included. Invalid UTF-8 bytes become U+FFFD so the output
/// always parses; file names are not guaranteed to be UTF-8.
std::string json_string(std::string_view text);

/// A JSON array of numbers: "[32000,4096]".
std::string json_numbers(const std::vector<std::uint64_t>& values);

/// A JSON array of values already encoded (json_string, numbers, objects).
std::string json_array(const std::vector<std::string>& encoded);

/// A number as JSON: shortest text that round-trips; null when not finite (JSON has no NaN).
std::string json_number(double value);

/// A value printed by format_element as JSON: numbers and true/false as they are, what JSON
/// cannot hold as a number (nan, inf, complex pairs) as a string.
std::string json_element(const std::string& text);

/// One JSON object, built field by field in the order given. Strings are escaped with
/// json_string; `raw` takes a value already encoded.
class JsonObject {
 public:
  JsonObject& raw(std::string_view key, std::string_view encoded);
  JsonObject& text(std::string_view key, std::string_view value) {
    return raw(key, json_string(value));
  }
  JsonObject& number(std::string_view key, std::uint64_t value) {
    return raw(key, std::to_string(value));
  }
  JsonObject& number(std::string_view key, double value) { return raw(key, json_number(value)); }
  JsonObject& boolean(std::string_view key, bool value) {
    return raw(key, value ? "true" : "false");
  }
  std::string str() const { return out_ + "}"; }

 private:
  std::string out_ = "{";
};

/// Text safe to print on a terminal: control bytes shown as \xNN so a crafted tensor name
/// cannot move the cursor or inject escape sequences.
std::string printable(std::string_view text);

/// Prints "safetensors: <message>" on stderr.
void print_error(std::string_view message);

}  // namespace safetensors::cli
