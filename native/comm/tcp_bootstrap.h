// The bootstrap communicator of a torchrun-style launch without MPI (tcp_bootstrap.cpp): rank 0 at
// MASTER_ADDR:port, the others connected to it; broadcast from rank 0 and barrier only, for NCCL's
// unique id. Its tensor collectives refuse: nothing home-made moves tensors.
#pragma once
#include <string>
#include <vector>

#include "comm/comm.h"

namespace sft::comm {

class TcpBootstrap final : public Communicator {
 public:
  // Connects the world (rank 0 accepts size - 1 connections; the others retry until rank 0 listens);
  // throws naming what is wrong after `timeout_s`.
  TcpBootstrap(int rank, int size, const std::string& addr, int port, double timeout_s = 300);
  ~TcpBootstrap() override;
  const char* backend() const override { return "tcp-bootstrap"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(float*, int64_t) override { refuse(); }
  void all_reduce_sum(double*, int64_t) override { refuse(); }
  void all_gather(float*, const int64_t*) override { refuse(); }
  void all_gather(double*, const int64_t*) override { refuse(); }
  void all_gather(uint8_t*, const int64_t*) override { refuse(); }
  void broadcast(void* buf, int64_t bytes, int root) override;
  void barrier() override;
  [[noreturn]] void abort(int code) override;

 private:
  [[noreturn]] void refuse() const;
  int rank_, size_;
  double timeout_s_;
  std::vector<int> peers_;  // rank 0: a socket per rank (index = rank); others: [rank 0's]
};

// The port the bootstrap uses: SFT_BOOTSTRAP_PORT, else MASTER_PORT, else (under torchrun's own agent,
// whose store holds MASTER_PORT) MASTER_PORT + 1.
int bootstrap_port(const LaunchEnv& e);

}  // namespace sft::comm
