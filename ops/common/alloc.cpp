#include "ops/common/alloc.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace elman::ops {
namespace {
std::atomic<bool>& poison_flag() {
  static std::atomic<bool> flag{[] {
    const char* env = std::getenv("ELMAN_POISON");
    return env != nullptr && std::strcmp(env, "1") == 0;
  }()};
  return flag;
}
}  // namespace

void set_poison(bool on) { poison_flag() = on; }
bool poison_enabled() { return poison_flag(); }

}  // namespace elman::ops
