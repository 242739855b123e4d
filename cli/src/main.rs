//! `cosell`: wiring only. Errors are printed for people (what went wrong, what to do), with the
//! cause chain under `-v`, and exit non-zero.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cosell_cli::Cli::parse();
    let verbose = cli.verbose;
    cosell_cli::serve::init_logs(verbose, cli.command.is_long_running());
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(cosell_cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if verbose {
                eprintln!("error: {e:?}");
            } else {
                // The contexts and their causes on one line ("what failed: why"), no backtrace.
                eprintln!("error: {e:#}");
                eprintln!("(run again with -v for details)");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
