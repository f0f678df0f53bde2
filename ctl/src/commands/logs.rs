//! `kctl logs`: a plain streaming GET of `pods/{name}/log`, copied to standard output as it
//! arrives. The node agent serves the logs; the API server forwards the request to it.

use crate::client;
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
    /// Keep streaming new lines.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines (-1 for all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,
    /// The previous (terminated) instance's logs.
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Prefix each line with its timestamp.
    #[arg(long)]
    pub timestamps: bool,
}

/// The log URL of a pod's container with kubectl's query parameters.
pub fn log_uri(namespace: &str, pod: &str, container: &str, args: &Args) -> String {
    let tail = (args.tail >= 0).then(|| args.tail.to_string());
    client::with_query(
        &format!("/api/v1/namespaces/{namespace}/pods/{pod}/log"),
        &[
            ("container", container),
            ("follow", if args.follow { "true" } else { "" }),
            ("tailLines", tail.as_deref().unwrap_or_default()),
            ("previous", if args.previous { "true" } else { "" }),
            ("timestamps", if args.timestamps { "true" } else { "" }),
        ],
    )
}

pub async fn run(args: Args, global: &GlobalArgs, out: &mut Output) -> Result<()> {
    let cluster = global.cluster().await?;
    let pod = pod_for(&cluster, &args.pod, out).await?;
    let container = container_of(&pod, args.container.as_deref())?;
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let uri = log_uri(&cluster.namespace, name, &container, &args);
    let mut stream = match cluster.stream(&uri, "application/json, */*").await {
        Ok(stream) => stream,
        Err(Error::Api(e)) if e.code == 405 => {
            return Err(Error::Unsupported(format!(
                "logs are not supported by this cluster yet: {}",
                e.message
            )))
        }
        Err(e) => return Err(e),
    };
    while let Some(chunk) = stream.chunk().await? {
        out.raw(&chunk)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn query_carries_container_follow_and_tail() {
        let cli =
            Cli::try_parse_from(["logs", "web", "-c", "nginx", "-f", "--tail", "20"]).unwrap();
        assert_eq!(
            log_uri("default", "web", "nginx", &cli.args),
            "/api/v1/namespaces/default/pods/web/log?container=nginx&follow=true&tailLines=20"
        );
        let cli = Cli::try_parse_from(["logs", "web"]).unwrap();
        assert_eq!(
            log_uri("default", "web", "c", &cli.args),
            "/api/v1/namespaces/default/pods/web/log?container=c"
        );
    }
}
