//! The `agentq` binary: the command line over the built-in agents.

use std::process::ExitCode;

/// mimalloc rather than the system's malloc: measured by `scripts/bench-edges.sh` (3 passes
/// each, 2026-12-06), glibc's kept the memory of a burst of large bodies (a median of 709
/// MiB five seconds after 100 POSTs of 80,000 keys), mimalloc gave most of it back (a
/// median of 217 MiB, one pass 607).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    agentq::app::main_with(agentq::app::builtin_agents())
}
