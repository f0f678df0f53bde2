//! `kctl api-resources`: the resource types from discovery (`/api`, `/apis` and each group
//! version's resource list).

use serde_json::Value;

use crate::client::Cluster;
use crate::error::{Error, Result};
use crate::output::Output;
use crate::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `wide` adds verbs and categories; `name` prints `plural.group` only.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// Only namespaced (`true`) or cluster-scoped (`false`) types.
    #[arg(long)]
    pub namespaced: Option<bool>,
    /// Only this API group (`""` for core).
    #[arg(long)]
    pub api_group: Option<String>,
}

/// One served resource type.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub name: String,
    pub short_names: Vec<String>,
    pub group: String,
    pub group_version: String,
    pub namespaced: bool,
    pub kind: String,
    pub verbs: Vec<String>,
    pub categories: Vec<String>,
}

pub async fn run(args: Args, global: &GlobalArgs, out: &mut Output) -> Result<()> {
    let cluster = global.cluster().await?;
    let mut resources = discover(&cluster).await?;
    resources.retain(|r| {
        args.namespaced.is_none_or(|n| n == r.namespaced)
            && args.api_group.as_ref().is_none_or(|g| *g == r.group)
    });
    match args.output.as_deref() {
        Some("name") => {
            for r in &resources {
                if r.group.is_empty() {
                    out.line(&r.name)?;
                } else {
                    out.line(format!("{}.{}", r.name, r.group))?;
                }
            }
            Ok(())
        }
        None | Some("wide") => {
            let wide = args.output.is_some();
            out.text(&table(&resources, wide))
        }
        Some(other) => Err(Error::Usage(format!(
            "--output must be 'wide' or 'name', not {other:?}"
        ))),
    }
}

/// The table kubectl prints.
pub fn table(resources: &[Resource], wide: bool) -> String {
    let mut headers = vec!["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"];
    if wide {
        headers.extend(["VERBS", "CATEGORIES"]);
    }
    let headers: Vec<String> = headers.into_iter().map(str::to_string).collect();
    let rows: Vec<Vec<String>> = resources
        .iter()
        .map(|r| {
            let mut row = vec![
                r.name.clone(),
                r.short_names.join(","),
                r.group_version.clone(),
                r.namespaced.to_string(),
                r.kind.clone(),
            ];
            if wide {
                row.push(format!("[{}]", r.verbs.join(" ")));
                row.push(r.categories.join(","));
            }
            row
        })
        .collect();
    crate::printer::render_table(&headers, &rows)
}

/// Every top-level resource the server lists in discovery: the core group first, then the
/// other groups (their preferred versions) by name; resources by name within a group.
pub async fn discover(cluster: &Cluster) -> Result<Vec<Resource>> {
    let mut group_versions: Vec<(String, String)> = Vec::new();
    let core = cluster.get("/api").await?;
    for v in core["versions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if let Some(v) = v.as_str() {
            group_versions.push((String::new(), v.to_string()));
        }
    }
    let groups = cluster.get("/apis").await?;
    let mut named: Vec<(String, String)> = groups["groups"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|g| {
            let name = g["name"].as_str()?.to_string();
            let gv = g["preferredVersion"]["groupVersion"]
                .as_str()
                .or_else(|| g["versions"][0]["groupVersion"].as_str())?
                .to_string();
            Some((name, gv))
        })
        .collect();
    named.sort();
    group_versions.extend(named);
    let mut all = Vec::new();
    for (group, gv) in group_versions {
        let path = if group.is_empty() {
            format!("/api/{gv}")
        } else {
            format!("/apis/{gv}")
        };
        let list = cluster.get(&path).await?;
        let mut resources = parse_resource_list(&group, &list);
        resources.sort_by(|a, b| a.name.cmp(&b.name));
        all.extend(resources);
    }
    Ok(all)
}

/// The top-level resources of an `APIResourceList` (subresources such as `pods/log` left out).
pub fn parse_resource_list(group: &str, list: &Value) -> Vec<Resource> {
    let group_version = list["groupVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    list["resources"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|r| {
            let name = r["name"].as_str()?;
            if name.contains('/') {
                return None;
            }
            Some(Resource {
                name: name.to_string(),
                short_names: strings(&r["shortNames"]),
                group: group.to_string(),
                group_version: group_version.clone(),
                namespaced: r["namespaced"].as_bool().unwrap_or(false),
                kind: r["kind"].as_str().unwrap_or_default().to_string(),
                verbs: strings(&r["verbs"]),
                categories: strings(&r["categories"]),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resource_lists_become_rows_without_subresources() {
        let list = json!({"kind": "APIResourceList", "groupVersion": "apps/v1", "resources": [
            {"name": "deployments", "singularName": "deployment", "namespaced": true,
             "kind": "Deployment", "verbs": ["get", "list"], "shortNames": ["deploy"],
             "categories": ["all"]},
            {"name": "deployments/scale", "namespaced": true, "kind": "Scale", "verbs": ["get"]}
        ]});
        let resources = parse_resource_list("apps", &list);
        assert_eq!(resources.len(), 1);
        let text = table(&resources, false);
        assert_eq!(
            text,
            "NAME          SHORTNAMES   APIVERSION   NAMESPACED   KIND\n\
             deployments   deploy       apps/v1      true         Deployment\n"
        );
        assert!(table(&resources, true).contains("[get list]   all"));
    }
}
