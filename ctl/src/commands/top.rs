//! `kctl top`: usage from the metrics API (`metrics.k8s.io`), which the API server serves from
//! the node agents' summaries; a cluster without it gets a clear error instead of made-up
//! figures.

use crate::error::{Error, Result};
use crate::output::Output;
use crate::printer::render_table;
use crate::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// CPU and memory of nodes.
    #[command(visible_alias = "nodes", visible_alias = "no")]
    Node,
    /// CPU and memory of pods.
    #[command(visible_alias = "pods", visible_alias = "po")]
    Pod {
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
}

pub async fn run(args: Args, global: &GlobalArgs, out: &mut Output) -> Result<()> {
    let cluster = global.cluster().await?;
    let uri = match &args.what {
        What::Node => "/apis/metrics.k8s.io/v1beta1/nodes".to_string(),
        What::Pod {
            all_namespaces: true,
        } => "/apis/metrics.k8s.io/v1beta1/pods".to_string(),
        What::Pod { .. } => format!(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{}/pods",
            cluster.namespace
        ),
    };
    let list = match cluster.get(&uri).await {
        Ok(list) => list,
        Err(e) if e.is_not_found() => {
            return Err(Error::Unsupported(
                "Metrics API not available: this cluster does not serve metrics.k8s.io, so there is no usage to show".into(),
            ))
        }
        Err(e) => return Err(e),
    };
    let headers = ["NAME", "CPU", "MEMORY"].map(str::to_string);
    let mut rows = Vec::new();
    for item in list["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = item["metadata"]["name"].as_str().unwrap_or_default();
        let usage = |which: &str| -> String {
            match item["usage"][which].as_str() {
                Some(u) => u.to_string(),
                None => item["containers"]
                    .as_array()
                    .map(|cs| {
                        cs.iter()
                            .filter_map(|c| c["usage"][which].as_str())
                            .collect::<Vec<_>>()
                            .join("+")
                    })
                    .unwrap_or_default(),
            }
        };
        rows.push(vec![name.to_string(), usage("cpu"), usage("memory")]);
    }
    out.text(&render_table(&headers, &rows))
}
