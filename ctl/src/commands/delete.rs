//! `kctl delete`: by name, by manifest (`-f`), by label selector (`-l`) or `--all`; like
//! kubectl it then waits (`--wait`, on by default) until each object is gone.

use std::time::Duration;

use berth_api::ResourceInfo;

use crate::client::{self, Cluster};
use crate::commands::{apply::target_namespace, parse_duration, parse_targets, DryRun};
use crate::error::{Error, Result};
use crate::manifest;
use crate::output::Output;
use crate::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `TYPE NAME...`, `TYPE/NAME...`, or `TYPE` with `-l` or `--all`.
    #[arg(value_name = "RESOURCE")]
    pub resources: Vec<String>,
    /// Delete the objects in these manifests (files, directories, `-` for stdin).
    #[arg(short = 'f', long = "filename")]
    pub filename: Vec<String>,
    /// Read directories recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Delete the objects of the type that match this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Delete every object of the type in the namespace.
    #[arg(long)]
    pub all: bool,
    /// Wait until the objects are gone (`--wait=false` to return at once).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub wait: bool,
    /// How long to wait, e.g. `60s`; `0` waits as long as it takes.
    #[arg(long, default_value = "0")]
    pub timeout: String,
    /// Treat a missing object as deleted.
    #[arg(long)]
    pub ignore_not_found: bool,
    /// `server`: ask the server what would happen without deleting.
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "client", require_equals = true)]
    pub dry_run: DryRun,
}

/// One object to delete.
struct Victim {
    info: &'static ResourceInfo,
    namespace: Option<String>,
    name: String,
    /// `"web.yaml" document 2`, when it came from a manifest.
    origin: Option<String>,
}

pub async fn run(args: Args, global: &GlobalArgs, out: &mut Output) -> Result<()> {
    let timeout = parse_duration(&args.timeout)?;
    let cluster = global.cluster().await?;
    let victims = victims(&args, &cluster).await?;
    let mut deleted = Vec::new();
    for victim in victims {
        let path = client::object_path(victim.info, victim.namespace.as_deref(), &victim.name);
        if args.dry_run != DryRun::Client {
            let uri = client::with_query(&path, &[("dryRun", args.dry_run.query())]);
            match cluster.delete(&uri).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() && args.ignore_not_found => continue,
                Err(e) => {
                    return Err(match &victim.origin {
                        Some(origin) => e.context(format!("error when deleting {origin}")),
                        None => e,
                    })
                }
            }
        }
        out.line(format!(
            "{} {:?} deleted{}",
            client::kind_group(victim.info),
            victim.name,
            args.dry_run.suffix()
        ))?;
        deleted.push((path, victim));
    }
    if args.wait && args.dry_run == DryRun::None {
        out.flush()?;
        let waiting = async {
            for (path, _) in &deleted {
                wait_gone(&cluster, path).await?;
            }
            Ok::<_, Error>(())
        };
        match timeout {
            Some(limit) => tokio::time::timeout(limit, waiting)
                .await
                .map_err(|_| Error::Timeout(format!("deletion after {}", args.timeout)))??,
            None => waiting.await?,
        }
    }
    Ok(())
}

async fn victims(args: &Args, cluster: &Cluster) -> Result<Vec<Victim>> {
    if !args.filename.is_empty() {
        if !args.resources.is_empty() {
            return Err(Error::Usage(
                "name objects either with -f or as arguments, not both".into(),
            ));
        }
        let items = manifest::read_items(&args.filename, args.recursive, &mut std::io::stdin())?;
        return Ok(items
            .iter()
            .map(|item| Victim {
                info: item.info,
                namespace: target_namespace(item, cluster),
                name: item.name().to_string(),
                origin: Some(item.origin()),
            })
            .collect());
    }
    let targets = parse_targets(&args.resources)?;
    let mut victims = Vec::new();
    for target in targets {
        let namespace = client::scoped(target.info, &cluster.namespace).map(str::to_string);
        if !target.names.is_empty() {
            if args.all || args.selector.is_some() {
                return Err(Error::Usage(
                    "name objects or select them with -l/--all, not both".into(),
                ));
            }
            for name in target.names {
                victims.push(Victim {
                    info: target.info,
                    namespace: namespace.clone(),
                    name,
                    origin: None,
                });
            }
            continue;
        }
        if !args.all && args.selector.is_none() {
            return Err(Error::Usage(format!(
                "resource(s) were provided, but no name was specified: name the {} to delete, or use -l or --all",
                target.info.plural
            )));
        }
        let uri = client::with_query(
            &client::collection_path(target.info, namespace.as_deref()),
            &[(
                "labelSelector",
                args.selector.as_deref().unwrap_or_default(),
            )],
        );
        let list = cluster.get(&uri).await?;
        for item in list["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            victims.push(Victim {
                info: target.info,
                namespace: namespace.clone(),
                name: item["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                origin: None,
            });
        }
    }
    Ok(victims)
}

/// Polls until the object answers 404, as kubectl's wait ends on it.
async fn wait_gone(cluster: &Cluster, path: &str) -> Result<()> {
    loop {
        match cluster.get(path).await {
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
            Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}
