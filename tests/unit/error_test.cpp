// Every ErrorCode has its own stable name: the CLI prints it and Python's `code` carries it.
#include "safetensors/error.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace safetensors {
namespace {

// The enumerators run from header_too_small = 1 to the last one, device.
constexpr int first_code = static_cast<int>(ErrorCode::header_too_small);
constexpr int last_code = static_cast<int>(ErrorCode::device);

TEST(ErrorCodeName, EveryCodeHasItsOwnName) {
  std::set<std::string> names;
  for (int value = first_code; value <= last_code; ++value) {
    const std::string name(error_code_name(static_cast<ErrorCode>(value)));
    EXPECT_NE(name, "unknown") << "code " << value;
    EXPECT_TRUE(names.insert(name).second) << name << " names two codes";
  }
  EXPECT_EQ(error_code_name(static_cast<ErrorCode>(last_code + 1)), "unknown");
}

// invalid_index came last, so that the values stored by existing programs keep their meaning.
TEST(ErrorCodeName, InvalidIndexIsAppendedWithoutRenumbering) {
  EXPECT_EQ(error_code_name(ErrorCode::invalid_index), "invalid_index");
  EXPECT_EQ(error_code_name(ErrorCode::invalid_checkpoint), "invalid_checkpoint");
  EXPECT_EQ(static_cast<int>(ErrorCode::too_many_dimensions), 23);
  EXPECT_EQ(static_cast<int>(ErrorCode::invalid_index), 24);
  EXPECT_EQ(static_cast<int>(ErrorCode::device), 25);
}

}  // namespace
}  // namespace safetensors
