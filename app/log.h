// Console logging through spdlog. spdlog lives in its own library (log.cpp is compiled without
// LibTorch's include path, which ships a newer {fmt} than the system spdlog is built against), so
// callers format with printf-style `format` and pass finished strings.
#pragma once
#include <string>

namespace elman::log {

void info(const std::string& msg);
void warn(const std::string& msg);
void error(const std::string& msg);

// printf-style formatting into a std::string.
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace elman::log
