//! `kctl exec POD -- COMMAND...`: the command runs in the container through the API server's
//! `pods/{name}/exec` websocket (`v5.channel.k8s.io`/`v4.channel.k8s.io`, implemented by
//! kube-rs). The node agent serves it; a cluster without one answers the upgrade with an
//! error, which kctl reports as not supported yet.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use tokio::io::AsyncReadExt;

use crate::commands::{container_of, pod_for};
use crate::error::{Error, Result};
use crate::output::Output;
use crate::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `POD`, `pod/POD`, or `TYPE/NAME` (its first pod).
    pub pod: String,
    /// The container (needed when the pod has several).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Pass standard input to the command.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// The error for a streaming subresource a cluster does not serve yet.
pub fn not_supported(what: &str, error: kube::Error) -> Error {
    use kube::client::UpgradeConnectionError;
    match error {
        kube::Error::UpgradeConnection(UpgradeConnectionError::ProtocolSwitch(code)) => {
            Error::Unsupported(format!(
                "{what} is not supported by this cluster yet: the API server answered {code} instead of switching protocols (it needs a node agent to forward to)"
            ))
        }
        kube::Error::Api(status) if status.code == 404 || status.code == 400 => {
            Error::Unsupported(format!(
                "{what} is not supported by this cluster yet: {}",
                status.message
            ))
        }
        other => Error::Failed(format!("{what}: {other}")),
    }
}

pub async fn run(args: Args, global: &GlobalArgs, out: &mut Output) -> Result<()> {
    let cluster = global.cluster().await?;
    let pod = pod_for(&cluster, &args.pod, out).await?;
    let container = container_of(&pod, args.container.as_deref())?;
    let name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pods: Api<Pod> = Api::namespaced(cluster.kube_client(), &cluster.namespace);
    let params = AttachParams::default()
        .container(container)
        .stdin(args.stdin)
        .stdout(true)
        .stderr(!args.tty)
        .tty(args.tty);
    let mut process = pods
        .exec(&name, args.command.clone(), &params)
        .await
        .map_err(|e| not_supported("exec", e))?;
    if args.stdin {
        if let Some(mut remote) = process.stdin() {
            tokio::spawn(async move {
                let mut local = tokio::io::stdin();
                let _ = tokio::io::copy(&mut local, &mut remote).await;
            });
        }
    }
    let status = process.take_status();
    let mut stdout = process.stdout();
    let mut stderr = process.stderr();
    let mut out_buf = vec![0u8; 16 * 1024];
    let mut err_buf = vec![0u8; 16 * 1024];
    while stdout.is_some() || stderr.is_some() {
        tokio::select! {
            read = async { stdout.as_mut().expect("checked").read(&mut out_buf).await }, if stdout.is_some() => {
                match read {
                    Ok(0) | Err(_) => stdout = None,
                    Ok(n) => out.raw(&out_buf[..n])?,
                }
            }
            read = async { stderr.as_mut().expect("checked").read(&mut err_buf).await }, if stderr.is_some() => {
                match read {
                    Ok(0) | Err(_) => stderr = None,
                    Ok(n) => out.note(String::from_utf8_lossy(&err_buf[..n]).trim_end())?,
                }
            }
        }
    }
    let status = match status {
        Some(status) => status.await,
        None => None,
    };
    let _ = process.join().await;
    match status {
        Some(status) if status.status.as_deref() == Some("Failure") => {
            let code = status
                .details
                .as_ref()
                .and_then(|d| d.causes.as_ref())
                .and_then(|causes| {
                    causes
                        .iter()
                        .find(|c| c.reason.as_deref() == Some("ExitCode"))
                })
                .and_then(|c| c.message.as_deref()?.parse().ok());
            match code {
                Some(code) => Err(Error::CommandExit { code }),
                None => Err(Error::Failed(status.message.unwrap_or_default())),
            }
        }
        _ => Ok(()),
    }
}
