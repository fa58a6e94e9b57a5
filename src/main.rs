use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    upgrade_guard::cli::run(upgrade_guard::cli::Cli::parse())
}
