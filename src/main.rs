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

// Parsed once at start: the size of the flag structs does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run one member of the Raft-replicated store (etcd v3 API; etcd's flag names).
    Store(berth_store::config::StoreArgs),
    /// Run a control-plane member: a store member and the Kubernetes API over HTTPS. Writes
    /// an admin kubeconfig to DATA_DIR/kubeconfig.yaml.
    Server(ServerCmd),
    /// The reconcile loops (ReplicaSet, Deployment, garbage collector...) on their own.
    ControllerManager(berth_controller_manager::cli::Args),
    /// The scheduler on its own.
    Scheduler(SchedulerArgs),
    /// Run the node agent (Berth's kubelet) on this machine.
    Agent(berth_node_agent::cli::AgentArgs),
    /// Stop and remove every pod a node agent left on this machine, its cgroups, address
    /// reservations and pod network (like `kubeadm reset`).
    Reset(berth_node_agent::cli::ResetArgs),
    /// A one-node cluster on this machine in one command: `berth server` and `berth agent`,
    /// with DATA_DIR/kubeconfig.yaml for kubectl.
    Up(UpArgs),
    /// Make (or reuse) a cluster CA in DATA_DIR/pki and write DATA_DIR/kubeconfig.yaml, an
    /// admin kubeconfig for SERVER: copy pki/ca.crt and pki/ca.key into each control-plane
    /// member's DATA_DIR/pki before its first start, so that they share one CA.
    Pki(PkiArgs),
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
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "info,openraft=warn,sled=warn,h2=warn,hickory_server=warn".into()
            }),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal, not in log files, and not when NO_COLOR says so.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Server(_) | Command::Up(_)) {
        spawn_memory_return();
    }
    let result = match cli.command {
        Command::Store(args) => berth_store::config::run(args).await,
        Command::Server(args) => server(args).await,
        Command::ControllerManager(args) => berth_controller_manager::cli::run(args).await,
        Command::Scheduler(args) => scheduler(args).await,
        Command::Agent(args) => agent(args).await,
        Command::Up(args) => up(args).await,
        Command::Reset(args) => reset(args).await,
        Command::Pki(args) => pki(args),
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

/// glibc's allocator keeps what long-lived processes free (a watch cache window that shrinks,
/// pods deleted) inside its arenas, and only gives back what sits at the top of a heap. Every
/// 30 s, the free pages of every arena go back to the system, as Go's scavenger does.
fn spawn_memory_return() {
    #[cfg(target_env = "gnu")]
    tokio::spawn(async {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // SAFETY: malloc_trim takes no pointers; it only releases memory that is free.
            let trim = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) });
            if trim.await.is_err() {
                return;
            }
        }
    });
}

/// Flags of `berth up`.
#[derive(clap::Args)]
struct UpArgs {
    /// Everything lives here: `server/` (store, PKI), `agent/` (runtime, pods, logs, the
    /// pod network's configuration and addresses; `agent/images/` tarballs are imported at
    /// start), and `kubeconfig.yaml`.
    #[arg(long, default_value = "/var/lib/berth")]
    data_dir: std::path::PathBuf,
    /// Address of the HTTPS API.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: std::net::SocketAddr,
    /// Port of the agent's endpoint.
    #[arg(long, default_value_t = 10250)]
    agent_port: u16,
    /// CNI configurations; when it holds none, Berth runs its own pod network (the
    /// `berth-cni` plugin, the node's range from the controller-manager).
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: std::path::PathBuf,
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use clap::Parser;
    let server_dir = args.data_dir.join("server");
    let server_args = berth_apiserver::ServerArgs::try_parse_from([
        "server".to_string(),
        format!("--data-dir={}", server_dir.display()),
        format!("--listen={}", args.listen),
    ])
    .context("server flags")?;
    let cp = berth_apiserver::ControlPlane::start(server_args).await?;
    spawn_controllers(&cp.kubeconfig, true, true);
    let kubeconfig = args.data_dir.join("kubeconfig.yaml");
    std::fs::copy(&cp.kubeconfig, &kubeconfig)
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    let agent_args = berth_node_agent::cli::AgentArgs::try_parse_from([
        "agent".to_string(),
        format!("--data-dir={}", args.data_dir.join("agent").display()),
        format!(
            "--bootstrap-kubeconfig={}",
            server_dir.join("bootstrap-kubeconfig.yaml").display()
        ),
        format!("--port={}", args.agent_port),
        format!("--cni-conf-dir={}", args.cni_conf_dir.display()),
        "--node-ip=127.0.0.1".into(),
    ])
    .context("agent flags")?;
    #[allow(clippy::print_stdout)]
    {
        println!("{}", kubeconfig.display());
    }
    let shim = berth_node_agent::cli::default_shim();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let r = tokio::select! {
        r = berth_node_agent::cli::run(agent_args, shim) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
    };
    tracing::info!("shutting down (pods keep running; the next `berth up` takes them over)");
    cp.shutdown().await;
    r
}

#[derive(clap::Args)]
struct PkiArgs {
    #[arg(long)]
    data_dir: std::path::PathBuf,
    /// The API URL the admin kubeconfig names.
    #[arg(long)]
    server: String,
}

fn pki(args: PkiArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let pki = berth_apiserver::tls::Pki::bootstrap(&args.data_dir, &["127.0.0.1".to_string()])?;
    let path = args.data_dir.join("kubeconfig.yaml");
    let text = pki.kubeconfig(
        &args.server,
        "admin",
        &pki.admin_cert_pem,
        &pki.admin_key_pem,
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[allow(clippy::print_stdout)]
    {
        println!("{}", path.display());
    }
    Ok(())
}

async fn reset(args: berth_node_agent::cli::ResetArgs) -> anyhow::Result<()> {
    let shim = berth_node_agent::cli::default_shim();
    let done =
        tokio::task::spawn_blocking(move || berth_node_agent::cli::reset(&args, shim)).await??;
    tracing::info!(
        sandboxes = done.sandboxes,
        links = done.links,
        routes = done.routes,
        "reset"
    );
    Ok(())
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

#[derive(clap::Args)]
struct ServerCmd {
    #[command(flatten)]
    server: berth_apiserver::ServerArgs,
    /// Do not run the controller-manager in this process (run `berth controller-manager`).
    #[arg(long)]
    disable_controller_manager: bool,
    /// Do not run the scheduler in this process (run `berth scheduler`).
    #[arg(long)]
    disable_scheduler: bool,
}

#[derive(clap::Args)]
struct SchedulerArgs {
    /// Credentials and address of the API server.
    #[arg(long)]
    kubeconfig: std::path::PathBuf,
    /// Run only while holding the `kube-system/kube-scheduler` Lease.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// `percentageOfNodesToScore`; adaptive when absent.
    #[arg(long)]
    percentage_of_nodes_to_score: Option<u32>,
}

/// Runs the scheduler until the process stops, under leader election unless told not to.
async fn scheduler(args: SchedulerArgs) -> anyhow::Result<()> {
    let client = berth_controller_manager::cli::client_from(&args.kubeconfig).await?;
    let cfg = berth_scheduler::Config {
        percentage_of_nodes_to_score: args.percentage_of_nodes_to_score,
        ..Default::default()
    };
    if !args.leader_elect {
        berth_scheduler::run(client, cfg).await?;
        return Ok(());
    }
    let lease = berth_controller_manager::leader::LeaseConfig::new(
        "kube-scheduler",
        berth_controller_manager::leader::LeaseConfig::identity(),
    );
    berth_controller_manager::leader::run(client.clone(), lease, || {
        berth_scheduler::run(client.clone(), cfg.clone())
    })
    .await?;
    Ok(())
}

/// The scheduler and the control loops that run beside an API server in `berth server` and
/// `berth up`, each
/// under leader election, so every control-plane member runs them and one acts.
fn spawn_controllers(kubeconfig: &std::path::Path, controller_manager: bool, scheduler: bool) {
    if scheduler {
        let args = SchedulerArgs {
            kubeconfig: kubeconfig.to_path_buf(),
            leader_elect: true,
            percentage_of_nodes_to_score: None,
        };
        tokio::spawn(async move {
            if let Err(e) = crate::scheduler(args).await {
                tracing::error!("scheduler: {e:#}");
            }
        });
    }
    if controller_manager {
        let args = berth_controller_manager::cli::Args::new(kubeconfig.to_path_buf());
        tokio::spawn(async move {
            if let Err(e) = berth_controller_manager::cli::run(args).await {
                tracing::error!("controller-manager: {e:#}");
            }
        });
    }
}

async fn server(args: ServerCmd) -> anyhow::Result<()> {
    let cp = berth_apiserver::ControlPlane::start(args.server).await?;
    #[allow(clippy::print_stdout)]
    {
        println!("{}", cp.kubeconfig.display());
    }
    spawn_controllers(
        &cp.kubeconfig,
        !args.disable_controller_manager,
        !args.disable_scheduler,
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    cp.shutdown().await;
    Ok(())
}
