// A shared assertion for refusals: the call throws safetensors::Error with the expected code
// and a message that names every expected part.
#pragma once

#include <gtest/gtest.h>

#include <initializer_list>
#include <string_view>

#include "safetensors/error.hpp"

namespace safetensors::test {

/// Runs `f`, expecting an Error with `code` whose message contains every one of `parts`.
template <class F>
void expect_error(F&& f, ErrorCode code, std::initializer_list<std::string_view> parts) {
  try {
    f();
    ADD_FAILURE() << "expected " << error_code_name(code);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (std::string_view part : parts) {
      EXPECT_NE(std::string_view(e.what()).find(part), std::string_view::npos)
          << "'" << e.what() << "' lacks '" << part << "'";
    }
  }
}

}  // namespace safetensors::test
