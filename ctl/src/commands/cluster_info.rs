//! `kctl cluster-info`: where the control plane answers.

use crate::error::Result;
use crate::output::Output;
use crate::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args, global: &GlobalArgs, out: &mut Output) -> Result<()> {
    let cluster = global.cluster().await?;
    let version = cluster.get("/version").await?;
    let server = cluster.server.trim_end_matches('/');
    out.line(format!("Kubernetes control plane is running at {server}"))?;
    out.line(format!(
        "Server version {}",
        version["gitVersion"].as_str().unwrap_or("unknown")
    ))
}
