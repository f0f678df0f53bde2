//! `berth`: the all-in-one binary. `berth server` runs a control-plane member (store, API
//! server); `berth store` runs a bare store member; `berth runtime` is the bundled container
//! runtime with runc's verbs; `berth agent`
//! runs the node agent.

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
    /// Run the node agent (Berth's kubelet) on this machine.
    Agent(berth_node_agent::cli::AgentArgs),
    /// The bundled OCI runtime, with runc's verbs and flags (`berth runtime --help`).
    Runtime {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

fn main() -> std::process::ExitCode {
    // The runtime clones container processes: it must run before any thread exists, so it
    // is dispatched before the async runtime starts.
    let mut argv = std::env::args_os();
    let program = argv.next().unwrap_or_default();
    let rest: Vec<std::ffi::OsString> = argv.collect();
    if rest.first().is_some_and(|a| a == "runtime") {
        return berth_runtime::cli::main(std::iter::once(program).chain(rest.into_iter().skip(1)));
    }
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(async_main()),
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("berth: start the async runtime: {e}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn async_main() -> std::process::ExitCode {
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
        Command::Agent(args) => agent(args).await,
        Command::Runtime { .. } => unreachable!("dispatched before the async runtime"),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn agent(args: berth_node_agent::cli::AgentArgs) -> anyhow::Result<()> {
    let shim = berth_node_agent::cli::default_shim();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = berth_node_agent::cli::run(args, shim) => r,
        // Containers keep running: a restarted agent takes them over.
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
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
