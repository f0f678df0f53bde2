//! `kctl create namespace NAME`, and `kctl create -f` (POST each object of the manifests).

use serde_json::json;

use crate::client::{self, Cluster};
use crate::commands::{apply::target_namespace, DryRun};
use crate::error::{Error, Result};
use crate::manifest;
use crate::output::Output;
use crate::GlobalArgs;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub what: Option<What>,
    /// Create the objects in these manifests (files, directories, `-` for stdin).
    #[arg(short = 'f', long = "filename")]
    pub filename: Vec<String>,
    /// Read directories recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// `server`: validate without storing; `client`: send nothing.
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "client", require_equals = true, global = true)]
    pub dry_run: DryRun,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Create a namespace.
    #[command(visible_alias = "ns")]
    Namespace {
        /// The namespace's name.
        name: String,
    },
}

pub async fn run(args: Args, global: &GlobalArgs, out: &mut Output) -> Result<()> {
    let cluster = global.cluster().await?;
    match &args.what {
        Some(What::Namespace { name }) => {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            let info = client::resolve("namespaces")?;
            create(&cluster, info, None, &body, args.dry_run).await?;
            out.line(format!("namespace/{name} created{}", args.dry_run.suffix()))
        }
        None if !args.filename.is_empty() => {
            let items =
                manifest::read_items(&args.filename, args.recursive, &mut std::io::stdin())?;
            for item in &items {
                let namespace = target_namespace(item, &cluster);
                let mut body = item.manifest.object.clone();
                if let Some(ns) = &namespace {
                    body["metadata"]["namespace"] = json!(ns);
                }
                create(
                    &cluster,
                    item.info,
                    namespace.as_deref(),
                    &body,
                    args.dry_run,
                )
                .await
                .map_err(|e| e.context(format!("error when creating {}", item.origin())))?;
                out.line(format!(
                    "{}/{} created{}",
                    client::kind_group(item.info),
                    item.name(),
                    args.dry_run.suffix()
                ))?;
            }
            Ok(())
        }
        None => Err(Error::Usage(
            "say what to create: `kctl create namespace NAME` or `kctl create -f FILE`".into(),
        )),
    }
}

async fn create(
    cluster: &Cluster,
    info: &berth_api::ResourceInfo,
    namespace: Option<&str>,
    body: &serde_json::Value,
    dry_run: DryRun,
) -> Result<()> {
    if dry_run == DryRun::Client {
        return Ok(());
    }
    let uri = client::with_query(
        &client::collection_path(info, namespace),
        &[
            ("fieldManager", "kctl-create"),
            ("fieldValidation", "Strict"),
            ("dryRun", dry_run.query()),
        ],
    );
    cluster.post(&uri, body).await.map(|_| ())
}
