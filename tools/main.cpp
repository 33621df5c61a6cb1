// The `safetensors` command: parses the command line and runs one subcommand.
#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "safetensors/safetensors.hpp"

namespace {

constexpr int usage_status = 2;
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
  app.set_version_flag("--version", std::string("safetensors ") + SAFETENSORS_VERSION_STRING,
                       "Print the version and exit");
  app.require_subcommand(1);
  app.footer("Exit status: 0 success, 1 invalid or unreadable data, 2 usage error.");

  const std::vector<cli::Command> commands = {
      cli::add_inspect(app), cli::add_validate(app), cli::add_merge(app),
      cli::add_get(app),     cli::add_shard(app),    cli::add_scan(app),
      cli::add_convert(app), cli::add_cast(app),     cli::add_bench(app)};
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
