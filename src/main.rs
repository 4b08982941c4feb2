//! The `agentq` binary: the command line over the built-in agents.

use std::process::ExitCode;

fn main() -> ExitCode {
    agentq::app::main_with(agentq::app::builtin_agents())
}
