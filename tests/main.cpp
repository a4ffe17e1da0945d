// Test runner: poisons every kernel output allocation (NaN-filled) so unwritten elements fail.
#if __has_include(<catch2/catch_session.hpp>)
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#endif

#include "ops/common/alloc.h"

int main(int argc, char* argv[]) {
  elman::ops::set_poison(true);
  return Catch::Session().run(argc, argv);
}
