// apps/main.cpp -- the `vecnorm` command: dispatch to a subcommand, and turn
// every error into one line on stderr and an exit code (docs/cli.md).
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include <vecnorm/vecnorm.hpp>

#include "cli.hpp"
#include "commands.hpp"

namespace {

constexpr const char* kUsage =
    "usage: vecnorm <command> [options]\n"
    "\n"
    "commands:\n"
    "  replay    replay recorded .npy data through vecnorm, write normalized outputs,\n"
    "            statistics (--json) and states (--save-state)\n"
    "  inspect   print what a saved state file holds\n"
    "  demo      the synthetic-environment demo\n"
    "\n"
    "'vecnorm <command> --help' describes a command; 'vecnorm --version' prints the version.\n"
    "Exit codes: 0 success, 1 bad input or failure, 2 bad command line, 128+N killed by signal N.\n";

/// The message on one line (a newline in it would split it).
void report(const std::string& message) {
  std::string m = message;
  for (char& c : m)
    if (c == '\n' || c == '\r') c = ' ';
  std::fflush(stdout);
  std::fprintf(stderr, "vecnorm: %s\n", m.c_str());
}

int dispatch(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return vncli::kExitUsage;
  }
  const std::string cmd = argv[1];
  if (cmd == "replay") return vncli::run_replay(argc, argv, 2);
  if (cmd == "inspect") return vncli::run_inspect(argc, argv, 2);
  if (cmd == "demo") return vncli::run_demo(argc, argv, 2);
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    if (argc > 2 && cmd == "help") {
      char help[] = "--help";
      char* args[] = {argv[0], argv[2], help};
      const std::string sub = argv[2];
      if (sub == "replay" || sub == "inspect" || sub == "demo") return dispatch(3, args);
      throw vncli::UsageError("help: unknown command '" + sub + "'; expected replay, inspect or demo");
    }
    std::fputs(kUsage, stdout);
    return vncli::kExitOk;
  }
  if (cmd == "--version") {
    std::printf("vecnorm %s (CUDA backend %s%s)\n", vecnorm::version(), vecnorm::cuda_built() ? "built" : "not built",
                vecnorm::cuda_built() ? (vecnorm::cuda_available() ? ", device usable" : ", no usable device") : "");
    return vncli::kExitOk;
  }
  throw vncli::UsageError("unknown command '" + cmd + "'; expected replay, inspect or demo (see 'vecnorm --help')");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return dispatch(argc, argv);
  } catch (const vncli::UsageError& e) {
    report(e.what());
    return vncli::kExitUsage;
  } catch (const vncli::Interrupted& e) {
    report(e.what());
    return 128 + e.signal();
  } catch (const vncli::InputError& e) {
    report(e.what());
    return vncli::kExitInput;
  } catch (const vecnorm::Error& e) {
    report(vncli::library_message(e));
    return e.code() == vecnorm::ErrorCode::invalid_option ? vncli::kExitUsage : vncli::kExitInput;
  } catch (const std::bad_alloc&) {
    report("out of memory");
    return vncli::kExitInput;
  } catch (const std::exception& e) {
    report(e.what());
    return vncli::kExitInput;
  }
}
