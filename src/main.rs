//! The `agentq` binary: the command line over the built-in agents.

use std::process::ExitCode;

/// mimalloc rather than the system's malloc: measured by `scripts/bench-edges.sh`, glibc's
/// kept the memory of a burst of large bodies (743 MiB five seconds after 100 POSTs of
/// 80,000 keys), mimalloc gave most of it back (196 MiB).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    agentq::app::main_with(agentq::app::builtin_agents())
}
