//! `berth`: the all-in-one binary. `berth server` runs a control-plane member (store, API
//! server); `berth store` runs a bare store member. The agent and `berth up` join as their
//! issues land.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Berth: a Kubernetes-style container orchestrator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one member of the Raft-replicated store (etcd v3 API; etcd's flag names).
    Store(berth_store::config::StoreArgs),
    /// Run a control-plane member: a store member and the Kubernetes API over HTTPS. Writes
    /// an admin kubeconfig to DATA_DIR/kubeconfig.yaml.
    Server(berth_apiserver::ServerArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn,sled=warn,h2=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Store(args) => berth_store::config::run(args).await,
        Command::Server(args) => server(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn server(args: berth_apiserver::ServerArgs) -> anyhow::Result<()> {
    let cp = berth_apiserver::ControlPlane::start(args).await?;
    #[allow(clippy::print_stdout)]
    {
        println!("{}", cp.kubeconfig.display());
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    cp.shutdown().await;
    Ok(())
}
