//! `kctl apply -f`: server-side apply of every object in the manifests (field manager `kctl`),
//! then, with `--prune -l`, deletion of the objects of the applied kinds in the applied
//! namespaces that carry the selector but were not in the manifests.
//!
//! kubectl's default client-side apply (a three-way merge through the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation) is not implemented: kctl
//! always applies server-side, so `--server-side` changes nothing.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::client::{self, Cluster, APPLY_PATCH};
use crate::commands::DryRun;
use crate::error::{Error, Result};
use crate::manifest::{self, Item};
use crate::output::Output;
use crate::GlobalArgs;

/// The field manager kctl applies with.
pub const FIELD_MANAGER: &str = "kctl";

#[derive(Debug, clap::Args)]
#[command(
    long_about = "Apply manifests from files, directories (-R to recurse) or stdin (-f -).\n\n\
kctl always uses server-side apply with field manager \"kctl\": the server merges the manifest \
into the live object and records which fields kctl owns. `--server-side` is accepted for \
kubectl habits and means the same; `--force-conflicts` takes fields other managers own."
)]
pub struct Args {
    /// Files, directories or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub filename: Vec<String>,
    /// Read directories recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Accepted for kubectl habits: kctl always applies server-side.
    #[arg(long)]
    pub server_side: bool,
    /// Take ownership of fields another manager owns instead of failing on the conflict.
    #[arg(long)]
    pub force_conflicts: bool,
    /// `server`: validate and show the result without storing it; `client`: send nothing.
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "client", require_equals = true)]
    pub dry_run: DryRun,
    /// Delete objects of the applied kinds that match `-l` but are not in the manifests.
    #[arg(long, requires = "selector")]
    pub prune: bool,
    /// Label selector for `--prune`.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Output format: `name` prints only `kind/name`.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
}

pub async fn run(args: Args, global: &GlobalArgs, out: &mut Output) -> Result<()> {
    let items = manifest::read_items(&args.filename, args.recursive, &mut std::io::stdin())?;
    if items.is_empty() {
        return Err(Error::Usage("no objects passed to apply".into()));
    }
    let cluster = global.cluster().await?;
    let mut applied: BTreeSet<(String, Option<String>, String)> = BTreeSet::new();
    for item in &items {
        let namespace = apply_one(&cluster, item, &args, out).await?;
        applied.insert((
            item.info.kind.to_string(),
            namespace,
            item.name().to_string(),
        ));
    }
    if args.prune {
        prune(&cluster, &args, &items, &applied, out).await?;
    }
    Ok(())
}

/// The namespace an object goes to: its own, else `-n`, else the context's (none when
/// cluster-scoped).
pub fn target_namespace(item: &Item, cluster: &Cluster) -> Option<String> {
    item.info.namespaced().then(|| {
        item.manifest
            .namespace()
            .map(str::to_string)
            .unwrap_or_else(|| cluster.namespace.clone())
    })
}

async fn apply_one(
    cluster: &Cluster,
    item: &Item,
    args: &Args,
    out: &mut Output,
) -> Result<Option<String>> {
    let namespace = target_namespace(item, cluster);
    let mut body = item.manifest.object.clone();
    if let Some(ns) = &namespace {
        body["metadata"]["namespace"] = Value::String(ns.clone());
    }
    let name = format!("{}/{}", client::kind_group(item.info), item.name());
    if args.dry_run != DryRun::Client {
        let uri = client::with_query(
            &client::object_path(item.info, namespace.as_deref(), item.name()),
            &[
                ("fieldManager", FIELD_MANAGER),
                ("fieldValidation", "Strict"),
                (
                    "force",
                    if args.force_conflicts {
                        "true"
                    } else {
                        "false"
                    },
                ),
                ("dryRun", args.dry_run.query()),
            ],
        );
        cluster
            .patch(&uri, APPLY_PATCH, &body)
            .await
            .map_err(|e| e.context(format!("error when applying {name} from {}", item.origin())))?;
    }
    if args.output.as_deref() == Some("name") {
        out.line(&name)?;
    } else {
        out.line(format!(
            "{name} serverside-applied{}",
            args.dry_run.suffix()
        ))?;
    }
    Ok(namespace)
}

async fn prune(
    cluster: &Cluster,
    args: &Args,
    items: &[Item],
    applied: &BTreeSet<(String, Option<String>, String)>,
    out: &mut Output,
) -> Result<()> {
    let selector = args.selector.as_deref().unwrap_or_default();
    let mut scopes: BTreeSet<(&'static str, Option<String>)> = BTreeSet::new();
    for item in items {
        scopes.insert((item.info.kind, target_namespace(item, cluster)));
    }
    for (kind, namespace) in scopes {
        let info = berth_api::registry::by_kind(kind).expect("kinds come from the registry");
        let uri = client::with_query(
            &client::collection_path(info, namespace.as_deref()),
            &[("labelSelector", selector)],
        );
        let list = cluster.get(&uri).await?;
        for object in list["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let key = (kind.to_string(), namespace.clone(), name.to_string());
            if applied.contains(&key) {
                continue;
            }
            if args.dry_run != DryRun::Client {
                let uri = client::with_query(
                    &client::object_path(info, namespace.as_deref(), name),
                    &[("dryRun", args.dry_run.query())],
                );
                match cluster.delete(&uri).await {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e),
                }
            }
            out.line(format!(
                "{}/{name} pruned{}",
                client::kind_group(info),
                args.dry_run.suffix()
            ))?;
        }
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
    fn flags_parse_as_kubectl_spells_them() {
        let cli = Cli::try_parse_from([
            "apply",
            "-f",
            "a.yaml",
            "-f",
            "-",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "--prune",
            "-l",
            "app=web",
        ])
        .unwrap();
        assert_eq!(cli.args.filename, ["a.yaml", "-"]);
        assert!(cli.args.force_conflicts && cli.args.prune);
        assert_eq!(cli.args.dry_run, DryRun::Server);
        assert_eq!(cli.args.selector.as_deref(), Some("app=web"));
        assert!(Cli::try_parse_from(["apply", "-f", "a.yaml", "--prune"]).is_err());
        assert!(Cli::try_parse_from(["apply"]).is_err());
    }
}
