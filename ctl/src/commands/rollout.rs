//! `kctl rollout status | history | undo | restart` for deployments.
//!
//! `status` follows kubectl's rule (generation against observedGeneration, then updated,
//! old and available replicas) while watching the deployment; `history` and `undo` read the
//! ReplicaSets the deployment owns and their `deployment.kubernetes.io/revision` annotations;
//! `restart` stamps `kubectl.kubernetes.io/restartedAt` on the pod template.

use serde_json::{json, Value};

use crate::client::{self, Cluster, JSON_PATCH, STRATEGIC_MERGE_PATCH};
use crate::commands::{parse_duration, parse_one, parse_targets};
use crate::error::{ApiError, Error, Result};
use crate::output::Output;
use crate::printer::{self, render_table};
use crate::GlobalArgs;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Wait for a rollout to finish (`--watch=false` to print the state once).
    Status {
        #[arg(required = true, value_name = "RESOURCE")]
        resource: Vec<String>,
        #[arg(short = 'w', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
        watch: bool,
        /// Give up after this long (e.g. `5m`); `0` waits as long as it takes.
        #[arg(long, default_value = "0")]
        timeout: String,
    },
    /// List the revisions, or show one with `--revision`.
    History {
        #[arg(required = true, value_name = "RESOURCE")]
        resource: Vec<String>,
        #[arg(long, default_value_t = 0)]
        revision: i64,
    },
    /// Roll back to the previous revision, or to `--to-revision`.
    Undo {
        #[arg(required = true, value_name = "RESOURCE")]
        resource: Vec<String>,
        #[arg(long, default_value_t = 0)]
        to_revision: i64,
    },
    /// Restart the pods by changing the pod template's `restartedAt` annotation.
    Restart {
        #[arg(required = true, value_name = "RESOURCE")]
        resource: Vec<String>,
    },
}

pub async fn run(args: Args, global: &GlobalArgs, out: &mut Output) -> Result<()> {
    let cluster = global.cluster().await?;
    match args.what {
        What::Status {
            resource,
            watch,
            timeout,
        } => {
            let (info, name) = deployment(&resource)?;
            let limit = parse_duration(&timeout)?;
            let waiting = status(&cluster, info, &name, watch, out);
            match limit {
                Some(limit) => tokio::time::timeout(limit, waiting)
                    .await
                    .map_err(|_| Error::Timeout(format!("deployment {name:?} to roll out")))?,
                None => waiting.await,
            }
        }
        What::History { resource, revision } => {
            let (info, name) = deployment(&resource)?;
            let (_, history) = history(&cluster, info, &name).await?;
            let label = format!("{}/{name}", client::kind_group(info));
            if revision > 0 {
                let (_, rs) = history
                    .iter()
                    .find(|(r, _)| *r == revision)
                    .ok_or_else(|| {
                        Error::Failed(format!("unable to find the specified revision {revision}"))
                    })?;
                out.line(format!("{label} with revision #{revision}"))?;
                out.line("Pod Template:")?;
                let template = printer::to_yaml(&pod_template(rs))?;
                for line in template.lines() {
                    out.line(format!("  {line}"))?;
                }
                return Ok(());
            }
            out.line(label)?;
            let headers = ["REVISION", "CHANGE-CAUSE"].map(str::to_string);
            let rows: Vec<Vec<String>> = history
                .iter()
                .map(|(r, rs)| {
                    let cause = rs["metadata"]["annotations"][CHANGE_CAUSE]
                        .as_str()
                        .unwrap_or("<none>");
                    vec![r.to_string(), cause.to_string()]
                })
                .collect();
            out.text(&render_table(&headers, &rows))
        }
        What::Undo {
            resource,
            to_revision,
        } => {
            let (info, name) = deployment(&resource)?;
            let (deploy, history) = history(&cluster, info, &name).await?;
            let label = format!("{}/{name}", client::kind_group(info));
            let (revision, template) = undo_target(&name, &history, to_revision)?;
            if strip_hash(&deploy["spec"]["template"]) == template {
                return out.line(format!(
                    "{label} skipped rollback (current template already matches revision {revision})"
                ));
            }
            let uri = client::with_query(
                &client::object_path(info, Some(&cluster.namespace), &name),
                &[("fieldManager", "kctl-rollout")],
            );
            let patch = json!([{"op": "replace", "path": "/spec/template", "value": template}]);
            cluster.patch(&uri, JSON_PATCH, &patch).await?;
            out.line(format!("{label} rolled back"))
        }
        What::Restart { resource } => {
            for target in parse_targets(&resource)? {
                if !matches!(target.info.kind, "Deployment" | "DaemonSet" | "StatefulSet") {
                    return Err(Error::Unsupported(format!(
                        "restarting is not supported for {}",
                        target.info.plural
                    )));
                }
                let now = jiff::Timestamp::now()
                    .round(jiff::Unit::Second)
                    .unwrap_or(jiff::Timestamp::now());
                let patch = json!({"spec": {"template": {"metadata": {"annotations": {
                    RESTARTED_AT: now.to_string()}}}}});
                for name in &target.names {
                    let uri = client::with_query(
                        &client::object_path(target.info, Some(&cluster.namespace), name),
                        &[("fieldManager", "kctl-rollout")],
                    );
                    cluster.patch(&uri, STRATEGIC_MERGE_PATCH, &patch).await?;
                    out.line(format!(
                        "{}/{name} restarted",
                        client::kind_group(target.info)
                    ))?;
                }
            }
            Ok(())
        }
    }
}

fn deployment(args: &[String]) -> Result<(&'static berth_api::ResourceInfo, String)> {
    let (info, name) = parse_one(args)?;
    if info.kind != "Deployment" {
        return Err(Error::Unsupported(format!(
            "kctl rollout supports deployments, not {}",
            info.plural
        )));
    }
    Ok((info, name))
}

/// Where a deployment's rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    Waiting(String),
    Done(String),
}

/// kubectl's `DeploymentStatusViewer`: the message for a deployment's current state.
pub fn deployment_status(deploy: &Value) -> Result<Rollout> {
    let name = deploy["metadata"]["name"].as_str().unwrap_or_default();
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    let generation = int(&deploy["metadata"]["generation"]);
    let status = &deploy["status"];
    if generation > int(&status["observedGeneration"]) {
        return Ok(Rollout::Waiting(
            "Waiting for deployment spec update to be observed...".into(),
        ));
    }
    let deadline_exceeded = status["conditions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .any(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded");
    if deadline_exceeded {
        return Err(Error::Failed(format!(
            "deployment {name:?} exceeded its progress deadline"
        )));
    }
    let updated = int(&status["updatedReplicas"]);
    let replicas = int(&status["replicas"]);
    let available = int(&status["availableReplicas"]);
    if let Some(wanted) = deploy["spec"]["replicas"].as_i64() {
        if updated < wanted {
            return Ok(Rollout::Waiting(format!(
                "Waiting for deployment {name:?} rollout to finish: {updated} out of {wanted} new replicas have been updated..."
            )));
        }
    }
    if replicas > updated {
        return Ok(Rollout::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
            replicas - updated
        )));
    }
    if available < updated {
        return Ok(Rollout::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
        )));
    }
    Ok(Rollout::Done(format!(
        "deployment {name:?} successfully rolled out"
    )))
}

async fn status(
    cluster: &Cluster,
    info: &berth_api::ResourceInfo,
    name: &str,
    watch: bool,
    out: &mut Output,
) -> Result<()> {
    let collection = client::collection_path(info, Some(&cluster.namespace));
    let selector = format!("metadata.name={name}");
    let mut last = String::new();
    loop {
        let list = cluster
            .get(&client::with_query(
                &collection,
                &[("fieldSelector", &selector)],
            ))
            .await?;
        let Some(deploy) = list["items"].get(0).cloned() else {
            return Err(Error::from(ApiError::from_response(
                404,
                json!({"kind": "Status", "reason": "NotFound", "code": 404,
                       "message": format!("deployments.apps {name:?} not found")})
                .to_string()
                .as_bytes(),
            )));
        };
        let state = deployment_status(&deploy)?;
        if report(&state, &mut last, out)? || !watch {
            return Ok(());
        }
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let uri = client::with_query(
            &collection,
            &[
                ("fieldSelector", &selector),
                ("watch", "true"),
                ("resourceVersion", &rv),
            ],
        );
        let mut stream = cluster.stream(&uri, client::JSON).await?;
        while let Some(line) = stream.line().await? {
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            match event["type"].as_str() {
                Some("MODIFIED" | "ADDED") => {
                    let state = deployment_status(&event["object"])?;
                    if report(&state, &mut last, out)? {
                        return Ok(());
                    }
                }
                Some("DELETED") => {
                    return Err(Error::Failed(format!("deployment {name:?} was deleted")))
                }
                _ => {}
            }
        }
        // The server closed the watch: list again and watch on.
    }
}

/// Prints a state when it changed; true when the rollout is done.
fn report(state: &Rollout, last: &mut String, out: &mut Output) -> Result<bool> {
    let (message, done) = match state {
        Rollout::Waiting(m) => (m, false),
        Rollout::Done(m) => (m, true),
    };
    if message != last {
        out.line(message)?;
        out.flush()?;
        *last = message.clone();
    }
    Ok(done)
}

/// The deployment and its ReplicaSets by revision, oldest first.
async fn history(
    cluster: &Cluster,
    info: &berth_api::ResourceInfo,
    name: &str,
) -> Result<(Value, Vec<(i64, Value)>)> {
    let deploy = cluster
        .get(&client::object_path(info, Some(&cluster.namespace), name))
        .await?;
    let selector = printer::labels_text(&deploy["spec"]["selector"]["matchLabels"]);
    let selector = if selector == "<none>" {
        String::new()
    } else {
        selector
    };
    let rs_info = client::resolve("replicasets")?;
    let list = cluster
        .get(&client::with_query(
            &client::collection_path(rs_info, Some(&cluster.namespace)),
            &[("labelSelector", &selector)],
        ))
        .await?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    Ok((deploy.clone(), revisions(&deploy, &items)))
}

/// The ReplicaSets a deployment controls, by their revision annotation, oldest first.
pub fn revisions(deploy: &Value, replica_sets: &[Value]) -> Vec<(i64, Value)> {
    let uid = deploy["metadata"]["uid"].as_str().unwrap_or_default();
    let mut out: Vec<(i64, Value)> = replica_sets
        .iter()
        .filter(|rs| {
            rs["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|owners| owners.iter().any(|o| o["uid"] == uid && !uid.is_empty()))
        })
        .filter_map(|rs| {
            let revision = rs["metadata"]["annotations"][REVISION]
                .as_str()?
                .parse()
                .ok()?;
            Some((revision, rs.clone()))
        })
        .collect();
    out.sort_by_key(|(r, _)| *r);
    out
}

/// A ReplicaSet's pod template without the `pod-template-hash` label the controller adds.
fn pod_template(rs: &Value) -> Value {
    strip_hash(&rs["spec"]["template"])
}

fn strip_hash(template: &Value) -> Value {
    let mut template = template.clone();
    if let Some(labels) = template["metadata"]["labels"].as_object_mut() {
        labels.remove("pod-template-hash");
    }
    template
}

/// The revision and pod template `undo` rolls back to: `to_revision`, or the one before the
/// latest.
pub fn undo_target(name: &str, history: &[(i64, Value)], to_revision: i64) -> Result<(i64, Value)> {
    if history.is_empty() {
        return Err(Error::Failed(format!(
            "no rollout history found for deployment {name:?}"
        )));
    }
    let found = if to_revision > 0 {
        history.iter().find(|(r, _)| *r == to_revision)
    } else if history.len() >= 2 {
        history.get(history.len() - 2)
    } else {
        return Err(Error::Failed(format!(
            "no revision to roll back to for deployment {name:?}"
        )));
    };
    let (revision, rs) = found.ok_or_else(|| {
        Error::Failed(format!(
            "unable to find specified revision {to_revision} in history"
        ))
    })?;
    Ok((*revision, pod_template(rs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(generation: i64, observed: i64, spec: i64, status: Value) -> Value {
        let mut status = status;
        status["observedGeneration"] = json!(observed);
        json!({"metadata": {"name": "web", "generation": generation, "uid": "d1"},
               "spec": {"replicas": spec}, "status": status})
    }

    #[test]
    fn status_follows_kubectl_rule() {
        let waiting = |d: &Value| match deployment_status(d).unwrap() {
            Rollout::Waiting(m) => m,
            Rollout::Done(m) => panic!("done: {m}"),
        };
        assert_eq!(
            waiting(&deploy(2, 1, 3, json!({}))),
            "Waiting for deployment spec update to be observed..."
        );
        assert_eq!(
            waiting(&deploy(2, 2, 3, json!({"updatedReplicas": 1, "replicas": 3}))),
            "Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated..."
        );
        assert_eq!(
            waiting(&deploy(2, 2, 3, json!({"updatedReplicas": 3, "replicas": 4}))),
            "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination..."
        );
        assert_eq!(
            waiting(&deploy(2, 2, 3, json!({"updatedReplicas": 3, "replicas": 3, "availableReplicas": 2}))),
            "Waiting for deployment \"web\" rollout to finish: 2 of 3 updated replicas are available..."
        );
        assert_eq!(
            deployment_status(&deploy(
                2,
                2,
                3,
                json!({"updatedReplicas": 3, "replicas": 3, "availableReplicas": 3})
            ))
            .unwrap(),
            Rollout::Done("deployment \"web\" successfully rolled out".into())
        );
        let stuck = deploy(
            2,
            2,
            3,
            json!({"conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]}),
        );
        assert!(deployment_status(&stuck).is_err());
    }

    fn rs(name: &str, owner: &str, revision: &str, image: &str) -> Value {
        json!({"metadata": {"name": name, "annotations": {REVISION: revision},
                            "ownerReferences": [{"uid": owner, "kind": "Deployment", "name": "web"}]},
               "spec": {"template": {"metadata": {"labels": {"app": "web", "pod-template-hash": name}},
                                     "spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    #[test]
    fn history_and_undo_target() {
        let d = deploy(3, 3, 1, json!({}));
        let sets = vec![
            rs("b", "d1", "2", "nginx:2"),
            rs("a", "d1", "1", "nginx:1"),
            rs("x", "other", "5", "other"),
            rs("c", "d1", "3", "nginx:3"),
        ];
        let history = revisions(&d, &sets);
        assert_eq!(
            history.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let (revision, template) = undo_target("web", &history, 0).unwrap();
        assert_eq!(revision, 2);
        assert_eq!(template["spec"]["containers"][0]["image"], "nginx:2");
        assert_eq!(template["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(undo_target("web", &history, 1).unwrap().0, 1);
        assert!(undo_target("web", &history, 9).is_err());
        assert!(undo_target("web", &[], 0).is_err());
    }
}
