//! `kctl port-forward POD [LOCAL:]REMOTE...`: listens locally and carries each connection over
//! the API server's `pods/{name}/portforward` websocket (implemented by kube-rs). The node
//! agent serves it; a cluster without one answers the upgrade with an error, which kctl
//! reports as not supported yet.

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use tokio::net::TcpListener;

use crate::commands::exec::not_supported;
use crate::commands::pod_for;
use crate::error::{Error, Result};
use crate::output::Output;
use crate::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `POD`, `pod/POD`, or `TYPE/NAME` (its first pod).
    pub pod: String,
    /// `LOCAL:REMOTE`, `PORT` (the same both sides) or `:REMOTE` (any free local port).
    #[arg(required = true)]
    pub ports: Vec<String>,
    /// The local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: String,
}

/// Parses `8080:80`, `80` or `:80` into (local, remote); local 0 means any free port.
pub fn parse_port(spec: &str) -> Result<(u16, u16)> {
    let bad = || Error::Usage(format!("invalid port specification {spec:?}"));
    let port = |s: &str| s.parse::<u16>().map_err(|_| bad());
    match spec.split_once(':') {
        Some((local, remote)) => {
            let local = if local.is_empty() { 0 } else { port(local)? };
            let remote = port(remote)?;
            if remote == 0 {
                return Err(bad());
            }
            Ok((local, remote))
        }
        None => {
            let p = port(spec)?;
            if p == 0 {
                return Err(bad());
            }
            Ok((p, p))
        }
    }
}

pub async fn run(args: Args, global: &GlobalArgs, out: &mut Output) -> Result<()> {
    let ports = args
        .ports
        .iter()
        .map(|p| parse_port(p))
        .collect::<Result<Vec<_>>>()?;
    let cluster = global.cluster().await?;
    let pod = pod_for(&cluster, &args.pod, out).await?;
    let name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pods: Api<Pod> = Api::namespaced(cluster.kube_client(), &cluster.namespace);
    // One forward first, so that a cluster that cannot forward says so before we listen.
    let probe = pods
        .portforward(&name, &[ports[0].1])
        .await
        .map_err(|e| not_supported("port-forward", e))?;
    probe.abort();
    let mut tasks = Vec::new();
    for (local, remote) in ports {
        let listener = TcpListener::bind((args.address.as_str(), local))
            .await
            .map_err(|e| {
                Error::Failed(format!("cannot listen on {}:{local}: {e}", args.address))
            })?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::Failed(e.to_string()))?;
        out.line(format!("Forwarding from {bound} -> {remote}"))?;
        let pods = pods.clone();
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let pods = pods.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let Ok(mut forwarder) = pods.portforward(&name, &[remote]).await else {
                        return;
                    };
                    if let Some(mut upstream) = forwarder.take_stream(remote) {
                        let _ = tokio::io::copy_bidirectional(&mut socket, &mut upstream).await;
                    }
                    forwarder.abort();
                });
            }
        }));
    }
    out.flush()?;
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specifications() {
        assert_eq!(parse_port("8080:80").unwrap(), (8080, 80));
        assert_eq!(parse_port("80").unwrap(), (80, 80));
        assert_eq!(parse_port(":80").unwrap(), (0, 80));
        assert!(parse_port("80:").is_err());
        assert!(parse_port("x").is_err());
    }
}
