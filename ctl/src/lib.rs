//! `kctl`: Berth's command line. It speaks to a cluster only through the API server, with
//! kubectl's verbs and flags so that habits carry over.
//!
//! Start reading at [`run`]: [`Cli`] is the whole command line (global flags in
//! [`GlobalArgs`], one module per verb under [`commands`], each with its flags and its `run`).
//! Around the verbs: [`client`] (the kube-rs client, raw requests, the server's `Status`
//! errors), [`kubeconfig`] (which file, which context), [`manifest`] (`-f` files, directories
//! and stdin), [`printer`] and [`jsonpath`] (server-side Tables and `-o` formats), [`output`]
//! (the only place that writes to the terminal) and [`error`].
#![forbid(unsafe_code)]

pub mod client;
pub mod commands;
pub mod error;
pub mod jsonpath;
pub mod kubeconfig;
pub mod manifest;
pub mod output;
pub mod printer;

use std::path::PathBuf;

use clap::Parser;

pub use commands::Command;
pub use error::{Error, Result};
pub use output::Output;

/// kctl's command line.
#[derive(Debug, Parser)]
#[command(
    name = "kctl",
    version,
    about = "kctl controls a Berth cluster (or any Kubernetes API server) with kubectl's verbs",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every verb accepts.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (else KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use instead of the current one.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace for this request (else the context's, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAME")]
    pub namespace: Option<String>,
}

impl GlobalArgs {
    /// Connects to the cluster these flags name.
    pub async fn cluster(&self) -> Result<client::Cluster> {
        client::Cluster::connect(
            self.kubeconfig.as_deref(),
            self.context.as_deref(),
            self.namespace.as_deref(),
        )
        .await
    }
}

/// Runs one command line.
pub async fn run(cli: Cli, out: &mut Output) -> Result<()> {
    commands::run(cli.command, &cli.global, out).await
}

/// The message for a failed command, as kubectl words it: the server's errors as they are,
/// kctl's own after `error: `.
pub fn report(error: &Error) -> String {
    if error.is_api() {
        error.to_string()
    } else {
        format!("error: {error}")
    }
}

/// The exit code for a failed command: the remote command's own for `exec`, else 1.
pub fn exit_code(error: &Error) -> u8 {
    match error {
        Error::CommandExit { code } => u8::try_from(*code).unwrap_or(1).max(1),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "kctl",
            "get",
            "pods",
            "-n",
            "prod",
            "-o",
            "wide",
            "--context",
            "c",
        ])
        .unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("prod"));
        assert_eq!(cli.global.context.as_deref(), Some("c"));
        let Command::Get(get) = cli.command else {
            panic!("not get")
        };
        assert_eq!(get.output, "wide");
        let cli = Cli::try_parse_from([
            "kctl",
            "--kubeconfig",
            "/k",
            "delete",
            "deploy",
            "web",
            "--wait=false",
        ])
        .unwrap();
        let Command::Delete(delete) = cli.command else {
            panic!("not delete")
        };
        assert!(!delete.wait);
        assert!(Cli::try_parse_from(["kctl", "exec", "p", "--", "ls", "-l"]).is_ok());
        assert!(
            Cli::try_parse_from(["kctl", "rollout", "status", "deploy/web", "--watch=false"])
                .is_ok()
        );
        assert!(Cli::try_parse_from(["kctl", "port-forward", "p", "8080:80"]).is_ok());
        assert!(Cli::try_parse_from(["kctl", "create", "ns", "demo"]).is_ok());
    }
}
