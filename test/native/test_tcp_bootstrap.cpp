// The torchrun bootstrap (comm/tcp_bootstrap.h) across real processes: this test forks ranks 1..3
// and is rank 0 itself, on a free loopback port. Rank 0's 128 bytes (NCCL's id size) reach every rank
// unchanged, in each of several rounds, with barriers between; ranks that start before rank 0 listens
// still join; tensor collectives refuse; a rank with no rank 0 fails within its timeout, naming the
// address; a bad rank or port is refused.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>

#include "check.h"
#include "comm/tcp_bootstrap.h"

namespace {

void ok(bool pass, const std::string& what) {
  if (!pass) failures++;
  std::printf("%s tcp bootstrap: %s\n", pass ? "ok  " : "FAIL", what.c_str());
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  socklen_t len = sizeof sa;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  ::close(fd);
  return ntohs(sa.sin_port);
}

// Round r's payload: what rank 0 sends and every rank expects.
void payload(int round, unsigned char* out) {
  std::mt19937 g(1000 + round);
  for (int i = 0; i < 128; i++) out[i] = static_cast<unsigned char>(g());
}

constexpr int kSize = 4, kRounds = 3;

// A forked rank: exit status 0 when every round's bytes arrived intact.
int run_rank(int rank, int port) {
  try {
    // Ranks start before rank 0 listens (it sleeps first): they must retry.
    sft::comm::TcpBootstrap b(rank, kSize, "localhost", port, 20);
    for (int round = 0; round < kRounds; round++) {
      unsigned char got[128] = {0}, want[128];
      b.broadcast(got, sizeof got, 0);
      payload(round, want);
      if (std::memcmp(got, want, sizeof got) != 0) return 3;
      b.barrier();
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    return 2;
  }
}

}  // namespace

void check_tcp_bootstrap() {
  const int port = free_port();
  pid_t kids[kSize] = {0};
  for (int r = 1; r < kSize; r++) {
    kids[r] = ::fork();
    if (kids[r] == 0) ::_exit(run_rank(r, port));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  bool sent = true, refused = false;
  try {
    sft::comm::TcpBootstrap b(0, kSize, "localhost", port, 20);
    for (int round = 0; round < kRounds; round++) {
      unsigned char buf[128];
      payload(round, buf);
      b.broadcast(buf, sizeof buf, 0);
      b.barrier();
    }
    float x = 1;
    try {
      b.all_reduce_sum(&x, 1);
    } catch (const std::runtime_error& e) {
      refused = std::string(e.what()).find("NCCL's id only") != std::string::npos;
    }
  } catch (const std::exception& e) {
    std::printf("rank 0: %s\n", e.what());
    sent = false;
  }
  bool all = true;
  for (int r = 1; r < kSize; r++) {
    int status = 0;
    ::waitpid(kids[r], &status, 0);
    all = all && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  ok(sent && all, std::to_string(kSize) + " processes: rank 0's 128 bytes reach every rank intact, " + std::to_string(kRounds) + " rounds with barriers");
  ok(refused, "all_reduce refuses: tensors go through NCCL or MPI only");

  // Nobody listens: a rank gives up within its timeout and names where it looked.
  const auto t0 = std::chrono::steady_clock::now();
  std::string msg;
  try {
    sft::comm::TcpBootstrap b(1, 2, "127.0.0.1", free_port(), 0.5);
  } catch (const std::runtime_error& e) {
    msg = e.what();
  }
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ok(msg.find("could not reach rank 0 at 127.0.0.1:") != std::string::npos && waited < 5, "no rank 0: '" + msg + "'");
  msg.clear();
  try {
    sft::comm::TcpBootstrap b(4, 4, "127.0.0.1", 1234, 1);
  } catch (const std::runtime_error& e) {
    msg = e.what();
  }
  ok(msg.find("RANK 4 is not in 0..3") != std::string::npos, "a rank outside the world is refused");
  msg.clear();
  try {
    sft::comm::TcpBootstrap b(0, 2, "127.0.0.1", 0, 1);
  } catch (const std::runtime_error& e) {
    msg = e.what();
  }
  ok(msg.find("set MASTER_PORT") != std::string::npos, "a missing port is refused");
}
