//! `kctl image`: images on nodes, since there may be no registry: `load` sends an OCI
//! layout or `docker save` tarball to the node agents' image stores (through the API
//! server's node proxy), `list` shows what a node holds.

use http::Method;
use serde_json::Value;

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
    /// Load an image tarball (OCI layout or `docker save`) into nodes' image stores.
    Load {
        /// The tarball.
        file: std::path::PathBuf,
        /// The node to load it on; every node when omitted.
        #[arg(long)]
        node: Option<String>,
    },
    /// List the images a node holds.
    #[command(visible_alias = "ls")]
    List {
        /// The node; every node when omitted.
        #[arg(long)]
        node: Option<String>,
    },
}

async fn nodes(cluster: &crate::client::Cluster, node: &Option<String>) -> Result<Vec<String>> {
    if let Some(n) = node {
        return Ok(vec![n.clone()]);
    }
    let list = cluster.get("/api/v1/nodes").await?;
    let names: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.pointer("/metadata/name").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(Error::Usage("the cluster has no nodes".into()));
    }
    Ok(names)
}

fn rows(node: &str, answer: &Value) -> Vec<Vec<String>> {
    answer["images"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let names: Vec<&str> = i["names"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let id = i["id"].as_str().unwrap_or_default();
            vec![
                node.to_string(),
                if names.is_empty() {
                    "<none>".into()
                } else {
                    names.join(",")
                },
                id.trim_start_matches("sha256:").chars().take(12).collect(),
                format!("{:.1}MB", i["size"].as_f64().unwrap_or(0.0) / 1e6),
            ]
        })
        .collect()
}

pub async fn run(args: Args, global: &GlobalArgs, out: &mut Output) -> Result<()> {
    let cluster = global.cluster().await?;
    let mut table = Vec::new();
    match args.what {
        What::Load { file, node } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| Error::Usage(format!("{}: {e}", file.display())))?;
            for n in nodes(&cluster, &node).await? {
                let body = cluster
                    .call(
                        Method::POST,
                        &format!("/api/v1/nodes/{n}/proxy/images/load"),
                        "application/json",
                        Some(("application/x-tar", bytes.clone())),
                    )
                    .await?;
                let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                table.extend(rows(&n, &answer));
            }
        }
        What::List { node } => {
            for n in nodes(&cluster, &node).await? {
                let answer = cluster
                    .get(&format!("/api/v1/nodes/{n}/proxy/images"))
                    .await?;
                table.extend(rows(&n, &answer));
            }
        }
    }
    let headers: Vec<String> = ["NODE", "IMAGE", "ID", "SIZE"].map(String::from).to_vec();
    out.text(&render_table(&headers, &table))
}
