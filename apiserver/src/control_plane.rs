//! `berth server`: one control-plane member. It runs a store member, the watch cache, the
//! HTTPS API, the namespace finalizer, and the approver and signer of node certificates
//! ([`crate::certificates`]), and writes two kubeconfigs with the cluster CA embedded:
//!
//! - `<data-dir>/kubeconfig.yaml`: the admin (a client certificate in `system:masters`);
//! - `<data-dir>/bootstrap-kubeconfig.yaml`: what node agents join with (`berth agent`, as
//!   kubelet's `--bootstrap-kubeconfig`): user `kubelet-bootstrap` with a
//!   [bootstrap token](crate::bootstrap_token) (no expiration, extra group
//!   `system:bootstrappers:berth:default-node-token`) created on the first start. The agent
//!   sends a CSR for `system:node:<name>` with it, which is approved and signed at once.
//!   The server URL is the first `--advertise-address` when given, else the admin's.
//!
//! A second start on the same directory keeps everything: the store's data, the CA, the
//! credentials and the bootstrap token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::task::JoinHandle;

use crate::auth::{Authorizer, Tokens};
use crate::cache::WatchCache;
use crate::server::ApiServer;
use crate::storage::{LocalStore, Storage};

/// Flags of `berth server`.
#[derive(Debug, Clone, Parser)]
pub struct ServerArgs {
    /// Directory for the store, the PKI and the kubeconfig.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Address the HTTPS API listens on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Extra host names or addresses the serving certificate must cover.
    #[arg(long = "advertise-address", value_delimiter = ',')]
    pub advertise: Vec<String>,
    /// This member's name in the store cluster.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// The store's etcd-compatible client URL.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    pub store_client_url: String,
    /// The store's peer URL (Raft between members).
    #[arg(long, default_value = "http://127.0.0.1:2380")]
    pub store_peer_url: String,
    /// Every store member as `name=peer-url,...`; defaults to this member alone.
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// `new` to form a cluster, `existing` to join one.
    #[arg(long, default_value = "new")]
    pub initial_cluster_state: String,
    /// Raft heartbeat interval of the store member, in milliseconds (etcd's flag). Raise it
    /// with --election-timeout on slow machines or networks, where heartbeats time out.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Raft election timeout of the store member, in milliseconds (etcd's flag); at least 5
    /// heartbeat intervals.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,
    /// Storage engine under the Raft state machine.
    #[arg(long, value_enum, default_value_t = berth_store::backend::Engine::Sled)]
    pub backend: berth_store::backend::Engine,
    /// The range Service cluster IPs are allocated from.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: String,
    /// The bootstrap token node agents join with (`[a-z0-9]{6}.[a-z0-9]{16}`, as
    /// `berth agent --token`); default one of this server's own, kept across restarts.
    #[arg(long, value_parser = parse_bootstrap_token)]
    pub bootstrap_token: Option<String>,
    /// Static bearer tokens: `token,user,uid,"group1,group2"` per line.
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
}

impl ServerArgs {
    /// The defaults of `berth server`, with `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            server: ServerArgs,
        }
        let mut args = Flags::try_parse_from(["server", "--data-dir", "."])
            .expect("the defaults parse")
            .server;
        args.data_dir = data_dir;
        args
    }
}

/// A running control-plane member.
pub struct ControlPlane {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    pub api: Arc<ApiServer>,
    store: berth_store::node::StoreHandle,
    tasks: Vec<JoinHandle<()>>,
    /// Closes every open connection.
    stop: tokio::sync::watch::Sender<bool>,
}

impl ControlPlane {
    pub async fn start(args: ServerArgs) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("creating {}", args.data_dir.display()))?;
        let store_dir = args.data_dir.join("store");
        let initial_cluster = args
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={}", args.name, args.store_peer_url));
        #[derive(Parser)]
        struct StoreFlags {
            #[command(flatten)]
            store: berth_store::config::StoreArgs,
        }
        let store_args = StoreFlags::try_parse_from([
            "store".to_string(),
            format!("--name={}", args.name),
            format!("--data-dir={}", store_dir.display()),
            format!("--listen-client-urls={}", args.store_client_url),
            format!("--advertise-client-urls={}", args.store_client_url),
            format!("--listen-peer-urls={}", args.store_peer_url),
            format!("--initial-advertise-peer-urls={}", args.store_peer_url),
            format!("--initial-cluster={initial_cluster}"),
            format!("--initial-cluster-state={}", args.initial_cluster_state),
            format!("--backend={}", engine_name(args.backend)),
            format!("--heartbeat-interval={}", args.heartbeat_interval),
            format!("--election-timeout={}", args.election_timeout),
        ])
        .context("store flags")?
        .store;
        let mut hosts = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            args.listen.ip().to_string(),
        ];
        hosts.extend(args.advertise.iter().cloned());
        hosts.sort();
        hosts.dedup();
        hosts.retain(|h| h != "0.0.0.0");
        let service_cidr = crate::alloc::Cidr::parse(&args.service_cluster_ip_range)
            .map_err(|e| anyhow::anyhow!("--service-cluster-ip-range: {e}"))?;
        // The PKI comes first: the other members of a new cluster are started with a copy of
        // this CA (DATA_DIR/pki/ca.{crt,key}), before the store can elect a leader.
        let pki = crate::tls::Pki::bootstrap(&args.data_dir, &hosts)?;
        let store = berth_store::node::StoreNode::start(store_args.to_config()?)
            .await
            .context("starting the store member")?;
        let storage: Arc<dyn Storage> = Arc::new(LocalStore::new(store.node.clone()));
        // The first linearizable read succeeds once the cluster has a leader.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match storage.linearizable_revision().await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::info!(error = %e, "waiting for the store to elect a leader");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e).context("store has no leader"),
            }
        }
        let cache = WatchCache::start(storage.clone()).await?;
        let tokens = match &args.token_auth_file {
            Some(p) => Tokens::load(p)?,
            None => Tokens::default(),
        };
        let audit = crate::audit::Audit::open(&args.data_dir.join("audit.log"))
            .context("opening the audit log")?;
        let sa_tokens = crate::serviceaccount::TokenSigner::load(storage.as_ref())
            .await
            .context("loading the service account signing key")?;
        let api = Arc::new(ApiServer {
            storage,
            authz: Authorizer::new(cache.clone()),
            cache,
            tokens,
            audit: Some(audit),
            service_cidr,
            sa_tokens,
            kubelet: crate::kubelet::KubeletClient::new(pki.kubelet_client_config()?),
        });
        crate::bootstrap::ensure(&api)
            .await
            .map_err(|e| anyhow::anyhow!("bootstrap objects: {e}"))?;
        let bootstrap_token =
            ensure_bootstrap_token(&api, &args.data_dir, args.bootstrap_token.as_deref()).await?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = vec![tokio::spawn(crate::server::serve_tls(
            api.clone(),
            listener,
            pki.server_config()?,
            stopped,
        ))];
        tasks.push(tokio::spawn(namespace_finalizer(api.clone())));
        let pki = Arc::new(pki);
        tasks.push(tokio::spawn(crate::certificates::run(
            api.clone(),
            pki.clone(),
        )));
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        let kubeconfig = args.data_dir.join("kubeconfig.yaml");
        let text = pki.kubeconfig(
            &format!("https://{host}:{}", addr.port()),
            "admin",
            &pki.admin_cert_pem,
            &pki.admin_key_pem,
        );
        std::fs::write(&kubeconfig, text)
            .with_context(|| format!("writing {}", kubeconfig.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o600))?;
        }
        let join_host = args
            .advertise
            .first()
            .cloned()
            .unwrap_or_else(|| host.clone());
        let join_host = if join_host.contains(':') && !join_host.starts_with('[') {
            format!("[{join_host}]")
        } else {
            join_host
        };
        write_secret_file(
            &args.data_dir.join(BOOTSTRAP_KUBECONFIG),
            &pki.token_kubeconfig(
                &format!("https://{join_host}:{}", addr.port()),
                "kubelet-bootstrap",
                &bootstrap_token,
            ),
        )?;
        tracing::info!(%addr, kubeconfig = %kubeconfig.display(), "API server ready");
        Ok(Self {
            addr,
            kubeconfig,
            api,
            store,
            tasks,
            stop,
        })
    }

    /// Stops serving and shuts the store member down.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.api.cache.stop();
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        drop(self.api);
        self.store.shutdown().await;
    }
}

/// The file node agents join with, in the data directory.
pub const BOOTSTRAP_KUBECONFIG: &str = "bootstrap-kubeconfig.yaml";

fn write_secret_file(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// The token of an existing bootstrap kubeconfig, if there is one.
fn existing_bootstrap_token(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let doc: serde_json::Value = serde_yaml_ng::from_str(&text).ok()?;
    let token = doc.pointer("/users/0/user/token")?.as_str()?;
    crate::bootstrap_token::parse(token).map(|_| token.to_string())
}

fn parse_bootstrap_token(s: &str) -> Result<String, String> {
    crate::bootstrap_token::parse(s)
        .map(|_| s.to_string())
        .ok_or_else(|| "a bootstrap token is [a-z0-9]{6}.[a-z0-9]{16}".to_string())
}

/// The bootstrap token this server hands out: the one it was given (its Secret made if
/// missing), else the one of an earlier start, else a new one stored as its Secret. An
/// earlier token whose Secret was deleted stays revoked.
async fn ensure_bootstrap_token(
    api: &ApiServer,
    data_dir: &std::path::Path,
    given: Option<&str>,
) -> anyhow::Result<String> {
    let token = match given {
        Some(t) => t.to_string(),
        None => {
            if let Some(token) = existing_bootstrap_token(&data_dir.join(BOOTSTRAP_KUBECONFIG)) {
                return Ok(token);
            }
            crate::bootstrap_token::generate()
        }
    };
    let secret =
        crate::bootstrap_token::secret(&token, &[crate::bootstrap_token::DEFAULT_NODE_GROUP], None);
    let target = crate::request::Target {
        info: berth_api::registry::by_kind("Secret").expect("secrets are registered"),
        namespace: Some("kube-system".into()),
        name: None,
        subresource: None,
    };
    let opts = crate::objects::WriteOptions {
        dry_run: false,
        field_manager: "berth-bootstrap".into(),
        validation: crate::objects::FieldValidation::Strict,
        apply: false,
        requester: None,
    };
    match api.create(&target, secret, &opts).await {
        Ok(_) => Ok(token),
        // Another member given the same token, or an earlier start, made it.
        Err(e) if given.is_some() && e.code == 409 => Ok(token),
        Err(e) => Err(anyhow::anyhow!("creating the bootstrap token: {e}")),
    }
}

fn engine_name(e: berth_store::backend::Engine) -> &'static str {
    match e {
        berth_store::backend::Engine::Sled => "sled",
        berth_store::backend::Engine::Fjall => "fjall",
    }
}

/// Drives terminating namespaces to deletion: their content is deleted, then the namespace.
async fn namespace_finalizer(api: Arc<ApiServer>) {
    let prefix = "/registry/core/namespaces/";
    loop {
        let (namespaces, _, mut live) = api.cache.snapshot_and_watch(prefix);
        let terminating: Vec<String> = namespaces
            .iter()
            .filter(|c| crate::objects::meta_str(&c.object, "deletionTimestamp").is_some())
            .filter_map(|c| crate::objects::meta_str(&c.object, "name").map(str::to_string))
            .collect();
        for ns in &terminating {
            if let Err(e) = api.finalize_namespace(ns).await {
                tracing::warn!(namespace = %ns, error = %e, "finalizing namespace");
            }
        }
        // Wake on a namespace change, or retry the ones still emptying.
        let wait = if terminating.is_empty() {
            Duration::from_secs(30)
        } else {
            Duration::from_millis(500)
        };
        let _ = tokio::time::timeout(wait, async {
            while let Ok(ev) = live.recv().await {
                if ev.key.starts_with(prefix) {
                    return;
                }
            }
        })
        .await;
    }
}
