//! One module per verb, each with its flags (`Args`) and its `run`. This module dispatches and
//! holds what several verbs share: how `TYPE NAME` / `TYPE/NAME` arguments name objects,
//! durations, and `--dry-run`.

use std::time::Duration;

use berth_api::ResourceInfo;
use clap::Subcommand;

use crate::client;
use crate::error::{Error, Result};
use crate::output::Output;
use crate::GlobalArgs;

pub mod api_resources;
pub mod apply;
pub mod cluster_info;
pub mod completion;
pub mod config;
pub mod create;
pub mod delete;
pub mod describe;
pub mod edit;
pub mod exec;
pub mod explain;
pub mod get;
pub mod image;
pub mod logs;
pub mod port_forward;
pub mod rollout;
pub mod scale;
pub mod top;
pub mod version;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply manifests from files, directories or stdin. kctl always applies server-side
    /// (field manager `kctl`); `--server-side` is accepted and means the same.
    Apply(apply::Args),
    /// Display one or many resources, as the server prints them (server-side Tables).
    Get(get::Args),
    /// Show the details of a resource and its events.
    Describe(describe::Args),
    /// Delete resources by name, by manifest, by label selector, or all of a type.
    Delete(delete::Args),
    /// Create a resource: `create namespace NAME`, or from manifests with `-f`.
    Create(create::Args),
    /// Edit a resource in $KUBE_EDITOR or $EDITOR and send it back as an update.
    Edit(edit::Args),
    /// Print the logs of a container in a pod.
    Logs(logs::Args),
    /// Run a command in a container.
    Exec(exec::Args),
    /// Forward local ports to a pod.
    PortForward(port_forward::Args),
    /// Set a new size for a deployment, replica set or stateful set.
    Scale(scale::Args),
    /// Manage the rollout of a deployment.
    Rollout(rollout::Args),
    /// Show CPU and memory usage (needs the metrics API).
    Top(top::Args),
    /// Images on nodes: `image load FILE [--node N]`, `image list [--node N]`.
    Image(image::Args),
    /// List the resource types the server serves.
    ApiResources(api_resources::Args),
    /// Describe the fields of a resource type, from the server's OpenAPI v3 documents.
    Explain(explain::Args),
    /// Show where the control plane runs.
    ClusterInfo(cluster_info::Args),
    /// Print the client and server versions.
    Version(version::Args),
    /// Change or show kubeconfig settings.
    Config(config::Args),
    /// Print a shell completion script: `kctl completion bash|zsh|fish`.
    Completion(completion::Args),
}

/// Runs one verb.
pub async fn run(command: Command, global: &GlobalArgs, out: &mut Output) -> Result<()> {
    match command {
        Command::Apply(args) => apply::run(args, global, out).await,
        Command::Get(args) => get::run(args, global, out).await,
        Command::Image(args) => image::run(args, global, out).await,
        Command::Describe(args) => describe::run(args, global, out).await,
        Command::Delete(args) => delete::run(args, global, out).await,
        Command::Create(args) => create::run(args, global, out).await,
        Command::Edit(args) => edit::run(args, global, out).await,
        Command::Logs(args) => logs::run(args, global, out).await,
        Command::Exec(args) => exec::run(args, global, out).await,
        Command::PortForward(args) => port_forward::run(args, global, out).await,
        Command::Scale(args) => scale::run(args, global, out).await,
        Command::Rollout(args) => rollout::run(args, global, out).await,
        Command::Top(args) => top::run(args, global, out).await,
        Command::ApiResources(args) => api_resources::run(args, global, out).await,
        Command::Explain(args) => explain::run(args, global, out).await,
        Command::ClusterInfo(args) => cluster_info::run(args, global, out).await,
        Command::Version(args) => version::run(args, global, out).await,
        Command::Config(args) => config::run(args, global, out),
        Command::Completion(args) => completion::run(args, out),
    }
}

/// Objects of one kind named on the command line (no names: all of them).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub info: &'static ResourceInfo,
    pub names: Vec<String>,
}

/// Parses `TYPE[,TYPE...] [NAME...]` or `TYPE/NAME...` as kubectl does. `all` stands for every
/// kind in the `all` category.
pub fn parse_targets(args: &[String]) -> Result<Vec<Target>> {
    let Some(first) = args.first() else {
        return Err(Error::Usage(
            "you must specify the type of resource, e.g. `pods` or `deploy/web`".into(),
        ));
    };
    if first.contains('/') {
        let mut targets: Vec<Target> = Vec::new();
        for arg in args {
            let (kind, name) = arg.split_once('/').ok_or_else(|| {
                Error::Usage(format!(
                    "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'kctl get resource/<resource_name>' instead of 'kctl get resource resource/<resource_name>'): {arg:?}"
                ))
            })?;
            if name.is_empty() {
                return Err(Error::Usage(format!("{arg:?} names no object")));
            }
            let info = client::resolve(kind)?;
            match targets.iter_mut().find(|t| std::ptr::eq(t.info, info)) {
                Some(t) => t.names.push(name.to_string()),
                None => targets.push(Target {
                    info,
                    names: vec![name.to_string()],
                }),
            }
        }
        return Ok(targets);
    }
    let names: Vec<String> = args[1..].to_vec();
    if let Some(bad) = names.iter().find(|n| n.contains('/')) {
        return Err(Error::Usage(format!(
            "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form: {bad:?}"
        )));
    }
    let mut targets: Vec<Target> = Vec::new();
    for kind in first.split(',').filter(|k| !k.is_empty()) {
        let infos: Vec<&'static ResourceInfo> = if kind == "all" {
            berth_api::registry::all()
                .iter()
                .filter(|r| r.categories.contains(&"all"))
                .collect()
        } else {
            vec![client::resolve(kind)?]
        };
        for info in infos {
            if !targets.iter().any(|t| std::ptr::eq(t.info, info)) {
                targets.push(Target {
                    info,
                    names: names.clone(),
                });
            }
        }
    }
    Ok(targets)
}

/// Whether the arguments list more than one kind (names then carry a `kind.group/` prefix).
pub fn several_kinds(args: &[String], targets: &[Target]) -> bool {
    targets.len() > 1
        || args
            .first()
            .is_some_and(|a| a.contains(',') || a.split(',').any(|k| k == "all"))
}

/// Exactly one object: `TYPE NAME` or `TYPE/NAME`.
pub fn parse_one(args: &[String]) -> Result<(&'static ResourceInfo, String)> {
    let targets = parse_targets(args)?;
    match targets.as_slice() {
        [Target { info, names }] if names.len() == 1 => Ok((info, names[0].clone())),
        _ => Err(Error::Usage(format!(
            "expected one object as TYPE NAME or TYPE/NAME, got {:?}",
            args.join(" ")
        ))),
    }
}

/// The pod a `logs`, `exec` or `port-forward` argument names: `NAME` or `pod/NAME`, or
/// `TYPE/NAME` of a workload or service, whose first pod (by its selector) is used.
pub async fn pod_for(
    cluster: &client::Cluster,
    arg: &str,
    out: &mut Output,
) -> Result<serde_json::Value> {
    let pods = client::resolve("pods")?;
    let (info, name) = match arg.split_once('/') {
        Some((kind, name)) => (client::resolve(kind)?, name),
        None => (pods, arg),
    };
    if std::ptr::eq(info, pods) {
        return cluster
            .get(&client::object_path(pods, Some(&cluster.namespace), name))
            .await;
    }
    let owner = cluster
        .get(&client::object_path(info, Some(&cluster.namespace), name))
        .await?;
    let selector = if info.kind == "Service" {
        &owner["spec"]["selector"]
    } else {
        &owner["spec"]["selector"]["matchLabels"]
    };
    let selector = crate::printer::labels_text(selector);
    if selector == "<none>" {
        return Err(Error::Failed(format!("{arg} has no pod selector")));
    }
    let list = cluster
        .get(&client::with_query(
            &client::collection_path(pods, Some(&cluster.namespace)),
            &[("labelSelector", &selector)],
        ))
        .await?;
    let mut items = list["items"].as_array().cloned().unwrap_or_default();
    items.sort_by(|a, b| {
        a["metadata"]["name"]
            .as_str()
            .cmp(&b["metadata"]["name"].as_str())
    });
    let first = items
        .first()
        .cloned()
        .ok_or_else(|| Error::Failed(format!("no pods found for {arg}")))?;
    if items.len() > 1 {
        out.note(format!(
            "Found {} pods, using pod/{}",
            items.len(),
            first["metadata"]["name"].as_str().unwrap_or_default()
        ))?;
    }
    Ok(first)
}

/// The container to use in a pod: the one named, else its only one, else the one the
/// `kubectl.kubernetes.io/default-container` annotation names.
pub fn container_of(pod: &serde_json::Value, wanted: Option<&str>) -> Result<String> {
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let names: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    if let Some(wanted) = wanted {
        return Ok(wanted.to_string());
    }
    if let Some(default) =
        pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"].as_str()
    {
        return Ok(default.to_string());
    }
    match names.as_slice() {
        [only] => Ok(only.to_string()),
        [] => Err(Error::Failed(format!("pod {pod_name} has no containers"))),
        many => Err(Error::Usage(format!(
            "a container name must be specified for pod {pod_name}, choose one of: [{}]",
            many.join(" ")
        ))),
    }
}

/// Parses kubectl's durations: `30s`, `5m`, `1h`, `1h30m`, `250ms`, or bare seconds; `0`
/// means no limit (`None`).
pub fn parse_duration(text: &str) -> Result<Option<Duration>> {
    let bad = || Error::Usage(format!("invalid duration {text:?}: use e.g. 30s, 5m or 1h"));
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok((seconds > 0).then(|| Duration::from_secs(seconds)));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => number / 1000.0,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(seconds);
        rest = &rest[unit_len..];
    }
    Ok((!total.is_zero()).then_some(total))
}

/// `--dry-run`: `none`, `server` (the server validates and answers without storing) or
/// `client` (nothing is sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DryRun {
    #[default]
    None,
    Server,
    Client,
}

impl DryRun {
    /// The `dryRun` query value.
    pub fn query(self) -> &'static str {
        match self {
            DryRun::Server => "All",
            _ => "",
        }
    }

    /// What kubectl appends to its messages.
    pub fn suffix(self) -> &'static str {
        match self {
            DryRun::None => "",
            DryRun::Server => " (server dry run)",
            DryRun::Client => " (dry run)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn type_and_names() {
        let t = parse_targets(&args("deploy web api")).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].info.kind, "Deployment");
        assert_eq!(t[0].names, ["web", "api"]);
        let t = parse_targets(&args("deploy,svc")).unwrap();
        assert_eq!(
            t.iter().map(|t| t.info.kind).collect::<Vec<_>>(),
            ["Deployment", "Service"]
        );
        assert!(several_kinds(&args("deploy,svc"), &t));
        assert!(!several_kinds(
            &args("pods"),
            &parse_targets(&args("pods")).unwrap()
        ));
    }

    #[test]
    fn slash_form_groups_by_kind() {
        let t = parse_targets(&args("deploy/web svc/web deployments.apps/api")).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].names, ["web", "api"]);
        assert_eq!(t[1].info.kind, "Service");
        assert!(parse_targets(&args("deploy/web api")).is_err());
        assert!(parse_targets(&args("deploy deploy/web")).is_err());
        assert_eq!(parse_one(&args("deploy/web")).unwrap().1, "web".to_string());
        assert!(parse_one(&args("deploy")).is_err());
    }

    #[test]
    fn all_expands_to_the_all_category() {
        let t = parse_targets(&args("all")).unwrap();
        let kinds: Vec<_> = t.iter().map(|t| t.info.kind).collect();
        assert!(kinds.contains(&"Pod") && kinds.contains(&"Deployment"));
        assert!(!kinds.contains(&"ConfigMap"));
        assert!(matches!(
            parse_targets(&args("widgets")),
            Err(Error::UnknownResource(_))
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0").unwrap(), None);
        assert_eq!(parse_duration("30").unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_duration("2m").unwrap(),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_duration("1h30m").unwrap(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            parse_duration("250ms").unwrap(),
            Some(Duration::from_millis(250))
        );
        assert!(parse_duration("soon").is_err());
    }
}
