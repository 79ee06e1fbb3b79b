// The bootstrap of a torchrun-style launch (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) without MPI:
// rank 0 listens, every other rank connects to it, and the one thing that crosses is NCCL's unique
// id (128 bytes) plus barriers — what torch's TCPStore does for its process groups. Tensors never go
// this way: its all-reduce and all-gather refuse, so NCCL (GPU) or MPI (CPU) stay the only engines.
#include "comm/tcp_bootstrap.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace sft::comm {
namespace {

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error("torchrun bootstrap: " + what); }

std::string secs(double s) {
  char b[32];
  std::snprintf(b, sizeof b, "%g s", s);
  return b;
}

void send_all(int fd, const void* p, size_t n, const char* what) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t k = ::send(fd, c, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) fail(std::string("sending ") + what + " failed: " + std::strerror(errno));
    c += k, n -= size_t(k);
  }
}

// Reads exactly n bytes, waiting at most `timeout_s` for each part (a rank that died closes its socket).
void recv_all(int fd, void* p, size_t n, double timeout_s, const char* what) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    pollfd pf{fd, POLLIN, 0};
    const int r = ::poll(&pf, 1, int(timeout_s * 1000));
    if (r == 0) fail(std::string("no ") + what + " within " + secs(timeout_s));
    if (r < 0 && errno == EINTR) continue;
    const ssize_t k = ::recv(fd, c, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k == 0) fail(std::string("the peer closed the connection before sending ") + what + " (did a rank exit?)");
    if (k < 0) fail(std::string("receiving ") + what + " failed: " + std::strerror(errno));
    c += k, n -= size_t(k);
  }
}

}  // namespace

TcpBootstrap::TcpBootstrap(int rank, int size, const std::string& addr, int port, double timeout_s)
    : rank_(rank), size_(size), timeout_s_(timeout_s) {
  if (size < 1 || rank < 0 || rank >= size) fail("RANK " + std::to_string(rank) + " is not in 0.." + std::to_string(size - 1) + " (WORLD_SIZE " + std::to_string(size) + ")");
  if (port <= 0 || port > 65535) fail("MASTER_PORT " + std::to_string(port) + " is not a port (1..65535): set MASTER_PORT");
  if (size == 1) return;
  const std::string where = addr + ":" + std::to_string(port);
  if (rank == 0) {
    // Rank 0 listens on every interface at the port: MASTER_ADDR names this machine for the others.
    const int lfd = ::socket(AF_INET6, SOCK_STREAM, 0);
    if (lfd < 0) fail(std::string("socket: ") + std::strerror(errno));
    const int one = 1, zero = 0;
    ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ::setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    sa.sin6_addr = in6addr_any;
    sa.sin6_port = htons(uint16_t(port));
    if (::bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(lfd, size) != 0) {
      const std::string e = std::strerror(errno);
      ::close(lfd);
      fail("rank 0 cannot listen on port " + std::to_string(port) + " (" + e + "): pick a free MASTER_PORT (or SFT_BOOTSTRAP_PORT)");
    }
    peers_.assign(size_t(size), -1);
    for (int got = 1; got < size; got++) {
      pollfd pf{lfd, POLLIN, 0};
      if (::poll(&pf, 1, int(timeout_s * 1000)) <= 0) {
        ::close(lfd);
        fail("rank 0 waited " + secs(timeout_s) + " at port " + std::to_string(port) + " and " +
             std::to_string(size - got) + " of " + std::to_string(size - 1) + " ranks never connected: are they running, with MASTER_ADDR naming this machine?");
      }
      const int fd = ::accept(lfd, nullptr, nullptr);
      if (fd < 0) continue;
      int32_t r = -1;
      recv_all(fd, &r, sizeof r, timeout_s, "a rank number");
      if (r <= 0 || r >= size || peers_[size_t(r)] >= 0) {
        ::close(fd);
        ::close(lfd);
        fail("a connection announced rank " + std::to_string(r) + ", which is not a free rank of 1.." + std::to_string(size - 1) + " (two jobs on one MASTER_PORT?)");
      }
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      peers_[size_t(r)] = fd;
    }
    ::close(lfd);
  } else {
    addrinfo hints{}, *res = nullptr;
    hints.ai_socktype = SOCK_STREAM;
    const int g = ::getaddrinfo(addr.c_str(), std::to_string(port).c_str(), &hints, &res);
    if (g != 0) fail("MASTER_ADDR " + addr + " does not resolve (" + gai_strerror(g) + ")");
    // Rank 0 may not listen yet: retry until the timeout, as torch's store clients do.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    int fd = -1;
    while (fd < 0) {
      for (addrinfo* a = res; a && fd < 0; a = a->ai_next) {
        const int s = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (s < 0) continue;
        if (::connect(s, a->ai_addr, a->ai_addrlen) == 0) fd = s;
        else ::close(s);
      }
      if (fd >= 0) break;
      if (std::chrono::steady_clock::now() > deadline) {
        ::freeaddrinfo(res);
        fail("rank " + std::to_string(rank) + " could not reach rank 0 at " + where + " within " + secs(timeout_s));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::freeaddrinfo(res);
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const int32_t r = rank;
    send_all(fd, &r, sizeof r, "the rank number");
    peers_.assign(1, fd);
  }
}

TcpBootstrap::~TcpBootstrap() {
  for (int fd : peers_)
    if (fd >= 0) ::close(fd);
}

void TcpBootstrap::broadcast(void* buf, int64_t bytes, int root) {
  if (size_ == 1) return;
  if (root != 0) fail("only rank 0 broadcasts (NCCL's id)");
  if (rank_ == 0) {
    for (int r = 1; r < size_; r++) send_all(peers_[size_t(r)], buf, size_t(bytes), "a broadcast");
  } else {
    recv_all(peers_[0], buf, size_t(bytes), timeout_s_, "rank 0's broadcast");
  }
}

void TcpBootstrap::barrier() {
  if (size_ == 1) return;
  char b = 1;
  if (rank_ == 0) {
    for (int r = 1; r < size_; r++) recv_all(peers_[size_t(r)], &b, 1, timeout_s_, "a barrier from every rank");
    for (int r = 1; r < size_; r++) send_all(peers_[size_t(r)], &b, 1, "the barrier's release");
  } else {
    send_all(peers_[0], &b, 1, "the barrier");
    recv_all(peers_[0], &b, 1, timeout_s_, "the barrier's release");
  }
}

void TcpBootstrap::refuse() const {
  throw std::runtime_error(
      "the torchrun bootstrap carries NCCL's id only: tensors move through NCCL (GPU) or MPI (CPU; launch with mpirun -np N or "
      "sft train --nproc-per-node N)");
}

void TcpBootstrap::abort(int code) {
  // Closing the sockets wakes every rank waiting on this one; torchrun then stops the rest of the job.
  for (int fd : peers_)
    if (fd >= 0) ::close(fd);
  std::_Exit(code);
}

int bootstrap_port(const LaunchEnv& e) {
  if (const char* p = std::getenv("SFT_BOOTSTRAP_PORT"); p && *p) return std::atoi(p);
  // Under torchrun itself the agent's TCPStore already listens on MASTER_PORT (its workers then get
  // TORCHELASTIC_USE_AGENT_STORE=True): the bootstrap takes the next port.
  const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  return agent && std::string(agent) == "True" ? e.master_port + 1 : e.master_port;
}

}  // namespace sft::comm
