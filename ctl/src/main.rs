//! The `kctl` binary: parses the command line, runs it, and maps the result to an exit code.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

fn main() -> ExitCode {
    let cli = kctl::Cli::parse();
    let mut out = kctl::Output::stdio();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = out.note(format!("error: {e:#}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(kctl::run(cli, &mut out));
    // Do not wait for a blocking read of standard input (`exec -i`) to end.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    let _ = out.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`kctl get pods | head`) is not worth a message.
        Err(kctl::Error::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = out.note(kctl::report(&e));
            ExitCode::from(kctl::exit_code(&e))
        }
    }
}
