//! `kctl completion bash|zsh|fish`: a completion script generated from the command line's
//! definition (clap_complete).

use clap::CommandFactory;
use clap_complete::Shell;

use crate::error::Result;
use crate::output::Output;
use crate::Cli;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete in.
    #[arg(value_parser = ["bash", "zsh", "fish"])]
    pub shell: String,
}

pub fn run(args: Args, out: &mut Output) -> Result<()> {
    let shell = match args.shell.as_str() {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        _ => Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "kctl", &mut script);
    out.raw(&script)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_name_the_verbs() {
        for shell in ["bash", "zsh", "fish"] {
            let (mut out, captured) = Output::capture();
            run(
                Args {
                    shell: shell.into(),
                },
                &mut out,
            )
            .unwrap();
            let script = captured.stdout();
            assert!(script.contains("kctl"), "{shell}");
            assert!(script.contains("rollout"), "{shell}");
        }
    }
}
