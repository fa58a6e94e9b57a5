use std::process::ExitCode;

// glibc's malloc was a sixth of the server's time under load (perf).
// Built without transparent huge pages (Cargo.toml: `no_thp`): mimalloc's
// madvise(MADV_HUGEPAGE) on its arenas made a 2 MiB page of every region it
// touched, 10 MiB of resident memory at rest for nothing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // From the program's name too: as `kubectl-upgrade_guard` it is the
    // kubectl plugin.
    upgrade_guard::cli::run(upgrade_guard::cli::Cli::from_env())
}
