// apps/commands.hpp -- the subcommands of `vecnorm` (main.cpp dispatches).
// Each parses argv[first..argc), returns the exit code, and reports errors by
// throwing (cli.hpp: UsageError, InputError, Interrupted, vecnorm::Error).
#pragma once

namespace vncli {

int run_replay(int argc, char** argv, int first);
int run_inspect(int argc, char** argv, int first);
int run_demo(int argc, char** argv, int first);

}  // namespace vncli
