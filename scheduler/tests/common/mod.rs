//! A Berth control plane in this process (one store member and the HTTPS API on free loopback
//! ports, in a temporary directory), shared by the integration test and the benchmark.

#![allow(dead_code)]

use berth_apiserver::{ControlPlane, ServerArgs};
pub use berth_testkit::free_port;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub struct Cluster {
    pub cp: ControlPlane,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start() -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let args = ServerArgs {
            listen: format!("127.0.0.1:{}", free_port()).parse()?,
            store_client_url: format!("http://127.0.0.1:{}", free_port()),
            store_peer_url: format!("http://127.0.0.1:{}", free_port()),
            ..ServerArgs::new(dir.path().join("data"))
        };
        let cp = ControlPlane::start(args).await?;
        Ok(Cluster { cp, dir })
    }

    /// A client with the admin kubeconfig.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kc = Kubeconfig::read_from(&self.cp.kubeconfig)?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(cfg)?)
    }

    pub async fn stop(self) {
        self.cp.shutdown().await;
    }
}
