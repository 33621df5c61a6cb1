// The `safetensors` command: parses the command line and runs one subcommand.
#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "safetensors/safetensors.hpp"

namespace {

constexpr int usage_status = 2;

// Help fits an 80-column terminal: CLI11 itself never wraps.
constexpr std::size_t help_width = 79;
// Room for the longest subcommand name ("validate") in the list.
constexpr std::size_t subcommand_column = 12;

// Greedy word wrap of each line of `text` to `width` columns; a longer word stays whole.
std::string wrap(const std::string& text, std::size_t width) {
  std::string out;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::size_t column = 0;
    for (std::string word; words >> word;) {
      if (column != 0 && column + 1 + word.size() > width) {
        out += '\n';
        column = 0;
      }
      out += (column == 0 ? "" : " ") + word;
      column += (column == 0 ? 0 : 1) + word.size();
    }
    out += '\n';
  }
  if (!text.ends_with('\n') && !out.empty()) out.pop_back();
  return out;
}

// Git-style help: `safetensors --help` lists each subcommand with the first line of its
// description, so the list stays one line a command; `safetensors SUB --help` shows the
// whole description. Descriptions and option texts are wrapped to the terminal.
class HelpFormatter : public CLI::Formatter {
 public:
  std::string make_subcommand(const CLI::App* sub) const override {
    const std::string& description = sub->get_description();
    std::ostringstream out;
    CLI::detail::format_help(out, sub->get_name(), description.substr(0, description.find('\n')),
                             subcommand_column);
    return out.str();
  }
  std::string make_description(const CLI::App* app) const override {
    return wrap(CLI::Formatter::make_description(app), help_width) + "\n";
  }
  std::string make_option_desc(const CLI::Option* option) const override {
    return wrap(option->get_description(), help_width - get_column_width());
  }
};
constexpr int data_error_status = 1;

// CLI11 reports help and --version as "errors" with status 0; everything else it throws is
// a mistake on the command line.
int report_parse_error(const CLI::App& app, const CLI::ParseError& e) {
  if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
  safetensors::cli::print_error(e.what());
  fmt::print(stderr, "Run 'safetensors --help' (or 'safetensors COMMAND --help') for usage.\n");
  return usage_status;
}

}  // namespace

int main(int argc, char** argv) {
  namespace cli = safetensors::cli;
  CLI::App app{
      "Inspect, validate, merge and read safetensors files.\n"
      "Every file is fully validated when it is opened (see FORMAT.md).",
      "safetensors"};
  app.formatter(std::make_shared<HelpFormatter>());
  app.set_version_flag("--version", std::string("safetensors ") + SAFETENSORS_VERSION_STRING,
                       "Print the version and exit");
  app.require_subcommand(1);
  app.footer("Exit status: 0 success, 1 invalid or unreadable data, 2 usage error.");

  const std::vector<cli::Command> commands = {
      cli::add_inspect(app), cli::add_validate(app), cli::add_merge(app),   cli::add_get(app),
      cli::add_shard(app),   cli::add_scan(app),     cli::add_convert(app), cli::add_cast(app),
      cli::add_bench(app),   cli::add_plan(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return report_parse_error(app, e);
  }

  for (const cli::Command& command : commands) {
    if (!command.app->parsed()) continue;
    try {
      return command.run();
    } catch (const safetensors::Error& e) {
      cli::print_error(e.what());
    } catch (const std::exception& e) {
      cli::print_error(e.what());
    }
    return data_error_status;
  }
  return usage_status;
}
