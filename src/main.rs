//! The `mailpushd` binary: parse arguments, run, map the result to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = mailpushd::cli::Cli::parse();
    match mailpushd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mailpushd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
