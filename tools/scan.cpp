// `safetensors scan`: what each pickle-based file would import if it were loaded.
#include <fmt/core.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "safetensors/safetensors.hpp"
#include "safetensors/scan.hpp"

namespace safetensors::cli {
namespace {

struct ScanOptions {
  std::vector<std::string> paths;
  bool json = false;
};

// "archive/data.pkl @ 123" or "@ 123" for a raw pickle.
std::string where(const std::string& location, std::uint64_t offset) {
  return (location.empty() ? "" : printable(location) + " ") + "@ " + std::to_string(offset);
}

void print_text(const ScanReport& report) {
  fmt::print("{}: {} ({})\n", printable(report.path.string()), verdict_name(report.verdict),
             report.format);
  std::size_t width = 0;
  for (const ScanGlobal& g : report.globals)
    width = std::max(width, where(g.location, g.offset).size());
  for (const ScanFinding& f : report.findings)
    width = std::max(width, where(f.location, f.offset).size());
  for (const ScanGlobal& g : report.globals) {
    fmt::print("  global   {:<{}}  {:<11}  {}.{}\n", where(g.location, g.offset), width,
               g.allowed ? "allowed" : "NOT ALLOWED", printable(g.module), printable(g.name));
  }
  for (const ScanFinding& f : report.findings) {
    fmt::print("  finding  {:<{}}  {:<11}  {}\n", where(f.location, f.offset), width,
               f.dangerous ? "DANGEROUS" : "note", printable(f.message));
  }
}

std::string json_report(const ScanReport& report) {
  std::string out = "{\"file\":" + json_string(report.path.string());
  out += ",\"format\":" + json_string(report.format);
  out += ",\"verdict\":" + json_string(verdict_name(report.verdict));
  out += ",\"globals\":[";
  for (std::size_t i = 0; i < report.globals.size(); ++i) {
    const ScanGlobal& g = report.globals[i];
    out += i == 0 ? "{" : ",{";
    out += "\"location\":" + json_string(g.location);
    out += ",\"offset\":" + std::to_string(g.offset);
    out += ",\"module\":" + json_string(g.module);
    out += ",\"name\":" + json_string(g.name);
    out += std::string(",\"allowed\":") + (g.allowed ? "true" : "false") + "}";
  }
  out += "],\"findings\":[";
  for (std::size_t i = 0; i < report.findings.size(); ++i) {
    const ScanFinding& f = report.findings[i];
    out += i == 0 ? "{" : ",{";
    out += "\"location\":" + json_string(f.location);
    out += ",\"offset\":" + std::to_string(f.offset);
    out += ",\"message\":" + json_string(f.message);
    out += std::string(",\"dangerous\":") + (f.dangerous ? "true" : "false") + "}";
  }
  return out + "]}";
}

}  // namespace

Command add_scan(CLI::App& parent) {
  auto options = std::make_shared<ScanOptions>();
  CLI::App* app = parent.add_subcommand(
      "scan",
      "Report what loading a pickle would import, safely\n\n"
      "Reports what loading each pickle-based file (raw pickle, PyTorch .bin/.pt/.pth/.ckpt in "
      "the zip or legacy format, .npy, .npz) would import, without running anything: every "
      "global with whether it is on the tensor-data allowlist, and every structural finding. "
      "Verdict per file: clean, dangerous or unreadable. Exit status 0 when all files are "
      "clean, 1 when any is dangerous, 2 when any is unreadable and none is dangerous.");
  app->add_option("FILE", options->paths, "Files to scan")->required();
  app->add_flag("--json", options->json,
                "Print a JSON array with one object per file (file, format, verdict, globals, "
                "findings)");
  return {app, [options] {
            bool dangerous = false, unreadable = false;
            std::string json = "[";
            for (const std::string& path : options->paths) {
              const ScanReport report = scan_file(path);
              dangerous = dangerous || report.verdict == ScanVerdict::dangerous;
              unreadable = unreadable || report.verdict == ScanVerdict::unreadable;
              if (options->json) {
                json += (json.size() == 1 ? "" : ",") + json_report(report);
              } else {
                print_text(report);
              }
            }
            if (options->json) fmt::print("{}]\n", json);
            return dangerous ? 1 : unreadable ? 2 : 0;
          }};
}

}  // namespace safetensors::cli
