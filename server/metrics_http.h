// MetricsHttpServer: serves a prometheus-cpp registry as text at GET /metrics over HTTP/1.1,
// on its own thread, one connection at a time (Prometheus scrapes every few seconds). Each
// connection gets 5 s to send its request and 5 s per write, so a stalled scraper cannot hold
// the thread or delay shutdown for longer.
//
// Why not prometheus-cpp's Exposer: its civetweb workers run on ~100 KB stacks, and this process
// carries ~64 KB of static TLS per thread (OpenBLAS, pulled in by OpenCV), so the first scrape
// overflowed a worker's stack. This server's thread has a normal stack.
#pragma once

#include <prometheus/registry.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace vitq::server {

class MetricsHttpServer {
 public:
  // Binds `address` ("host:port"; port 0 picks a free one) and starts serving `registry`.
  // UNAVAILABLE naming the address when it cannot bind.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& address, std::shared_ptr<prometheus::Registry> registry);
  // Stops accepting and joins the thread.
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }

 private:
  MetricsHttpServer(int listen_fd, int port, const int wake_pipe[2],
                    std::shared_ptr<prometheus::Registry> registry);
  void Loop();
  void Serve(int connection_fd);

  const int listen_fd_;
  const int port_;
  std::shared_ptr<prometheus::Registry> registry_;
  int wake_pipe_[2] = {-1, -1};  // written by the destructor to end Loop's poll
  std::thread thread_;
};

}  // namespace vitq::server
