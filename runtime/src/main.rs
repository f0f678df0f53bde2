//! `berth-runtime`: the runtime's command line on its own; `berth runtime` is the same.
fn main() -> std::process::ExitCode {
    berth_runtime::cli::main(std::env::args_os())
}
