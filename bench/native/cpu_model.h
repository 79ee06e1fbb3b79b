// The CPU's model name as /proc/cpuinfo gives it: every benchmark row names the machine it ran on.
#pragma once
#include <fstream>
#include <string>

inline std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}
