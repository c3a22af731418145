// vitq-client admin, ab-report and feedback: run-time control of a vitq server and its A/B
// figures.
//
//   vitq-client admin --address A --token-file F list
//   vitq-client admin ... get-routing --model M
//   vitq-client admin ... set-routing --model M --weights w8a8=90,w4a4=10
//                         [--shadow-variant fp32 --shadow-fraction 0.05] [--expected-generation G]
//   vitq-client admin ... load-variant --model M --variant V --path P [--precision bf16]
//                         [--weight W] [--replace]
//   vitq-client admin ... unload-variant --model M --variant V
//   vitq-client admin ... reload
//   vitq-client admin ... stats --model M
//   vitq-client ab-report --address A --token-file F --model M
//   vitq-client feedback --address MAIN --request-id ID --label L
//
// Admin calls go to the server's admin address (default localhost:8002) with the bearer token
// from --token-file or $VITQ_ADMIN_TOKEN. Every admin command takes --json to print the
// response in protobuf's JSON mapping instead of text for people.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "tools/client/connection.h"
#include "vitq/v1/classifier.pb.h"

namespace vitq::client {

struct AdminFlags {
  ConnectionFlags connection = [] {
    ConnectionFlags c;
    c.address = "localhost:8002";
    return c;
  }();
  std::string token_file;  // else $VITQ_ADMIN_TOKEN
  bool json = false;
  int64_t timeout_ms = 0;
  // Subcommand arguments.
  std::string model, variant, path, precision = "fp32", weights, shadow_variant;
  double shadow_fraction = 0, weight = 0;
  int64_t expected_generation = 0;
  bool replace = false;
  bool shadow_given = false;  // --shadow-variant was on the command line (else: keep the current)
};

struct FeedbackFlags {
  ConnectionFlags connection;
  std::string model;  // not sent: FeedbackRequest has no model field
  std::string request_id, label;
  int64_t timeout_ms = 0;
};

// `admin` with its subcommands, and `ab-report`; the returned commands are the ones to test
// with `*command` after parsing.
CLI::App* AddAdminCommand(CLI::App& app, AdminFlags& flags);
CLI::App* AddAbReportCommand(CLI::App& app, AdminFlags& flags);
CLI::App* AddFeedbackCommand(CLI::App& app, FeedbackFlags& flags);

// Return the process exit code.
int RunAdmin(const CLI::App& admin, const AdminFlags& flags);
int RunAbReport(const AdminFlags& flags);
int RunFeedback(const FeedbackFlags& flags);

// "w8a8=90,w4a4=10" → {w8a8: 90, w4a4: 10}. INVALID_ARGUMENT naming the bad entry: no '=',
// empty name, not a number, negative, a name twice.
absl::StatusOr<std::map<std::string, double>> ParseWeights(const std::string& text);

// The A/B report of one model from its Stats, for people: per variant its figures with 95%
// intervals, then a verdict per comparison.
std::string FormatAbReport(const vitq::v1::StatsResponse& stats);

}  // namespace vitq::client
