//! `kctl get`: server-side Tables (the columns the server prints, priority-1 columns only with
//! `-o wide`), or objects as YAML, JSON, names or JSONPath; `-w` prints a row per change.

use serde_json::Value;

use crate::client::{self, Cluster};
use crate::commands::{parse_targets, several_kinds, Target};
use crate::error::{ApiError, Error, Result};
use crate::output::Output;
use crate::printer::{self, Aligner, Format, TableLayout, TableOptions};
use crate::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `TYPE[,TYPE...] [NAME...]` or `TYPE/NAME...`; `all` for the common workload kinds.
    #[arg(required = true, value_name = "RESOURCE")]
    pub resources: Vec<String>,
    /// Output format: wide, yaml, json, name, jsonpath=TEMPLATE.
    #[arg(short = 'o', long, default_value = "")]
    pub output: String,
    /// Label selector, e.g. `app=web,tier!=db`.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector, e.g. `metadata.name=web`.
    #[arg(long)]
    pub field_selector: Option<String>,
    /// List across all namespaces (adds a NAMESPACE column).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// After listing, print a row for every change.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Add a LABELS column.
    #[arg(long)]
    pub show_labels: bool,
    /// Leave out the header row.
    #[arg(long)]
    pub no_headers: bool,
}

pub async fn run(args: Args, global: &GlobalArgs, out: &mut Output) -> Result<()> {
    let format: Format = args.output.parse()?;
    let targets = parse_targets(&args.resources)?;
    let several = several_kinds(&args.resources, &targets);
    let cluster = global.cluster().await?;
    if args.watch {
        return watch(&cluster, &args, &format, &targets, out).await;
    }
    if format.is_table() {
        tables(&cluster, &args, &format, &targets, several, out).await
    } else {
        objects(&cluster, &args, &format, &targets, out).await
    }
}

fn namespace_of<'a>(args: &Args, cluster: &'a Cluster, target: &Target) -> Option<&'a str> {
    if args.all_namespaces && target.names.is_empty() {
        None
    } else {
        client::scoped(target.info, &cluster.namespace)
    }
}

/// The collection URL of a target with the `-l` and `--field-selector` filters.
fn list_uri(args: &Args, cluster: &Cluster, target: &Target, extra: &[(&str, &str)]) -> String {
    let mut query = vec![
        (
            "labelSelector",
            args.selector.as_deref().unwrap_or_default(),
        ),
        (
            "fieldSelector",
            args.field_selector.as_deref().unwrap_or_default(),
        ),
    ];
    query.extend_from_slice(extra);
    client::with_query(
        &client::collection_path(target.info, namespace_of(args, cluster, target)),
        &query,
    )
}

fn table_options(args: &Args, format: &Format, target: &Target, several: bool) -> TableOptions {
    TableOptions {
        wide: *format == Format::Wide,
        namespace: args.all_namespaces && target.info.namespaced() && target.names.is_empty(),
        labels: args.show_labels,
        kind_prefix: several.then(|| client::kind_group(target.info)),
    }
}

/// A server answer that should be a Table.
fn expect_table(value: Value, what: &str) -> Result<Value> {
    if value["kind"] == "Table" {
        Ok(value)
    } else {
        Err(Error::Decode {
            what: what.to_string(),
            message: format!(
                "expected a meta.k8s.io/v1 Table, got kind {:?}",
                value["kind"].as_str().unwrap_or_default()
            ),
        })
    }
}

async fn tables(
    cluster: &Cluster,
    args: &Args,
    format: &Format,
    targets: &[Target],
    several: bool,
    out: &mut Output,
) -> Result<()> {
    let mut printed = false;
    let mut not_found: Option<Error> = None;
    for target in targets {
        let mut found: Vec<Value> = Vec::new();
        if target.names.is_empty() {
            let uri = list_uri(args, cluster, target, &[]);
            found.push(expect_table(cluster.get_table(&uri).await?, &uri)?);
        } else {
            for name in &target.names {
                let uri =
                    client::object_path(target.info, namespace_of(args, cluster, target), name);
                match cluster.get_table(&uri).await {
                    Ok(table) => found.push(expect_table(table, &uri)?),
                    Err(e) if e.is_not_found() => not_found = Some(e),
                    Err(e) => return Err(e),
                }
            }
        }
        let Some(first) = found.first() else { continue };
        let layout = TableLayout::new(
            &first["columnDefinitions"],
            table_options(args, format, target, several),
        );
        let rows: Vec<Vec<String>> = found.iter().flat_map(|t| layout.rows(t)).collect();
        if rows.is_empty() {
            continue;
        }
        if printed {
            out.line("")?;
        }
        let text = printer::render_table(layout.headers(), &rows);
        if args.no_headers {
            let body: Vec<&str> = text.lines().skip(1).collect();
            out.line(body.join("\n"))?;
        } else {
            out.text(&text)?;
        }
        printed = true;
    }
    if let Some(e) = not_found {
        return Err(e);
    }
    if !printed {
        out.note(no_resources(args, cluster, targets))?;
    }
    Ok(())
}

fn no_resources(args: &Args, cluster: &Cluster, targets: &[Target]) -> String {
    if args.all_namespaces || !targets.iter().any(|t| t.info.namespaced()) {
        "No resources found".to_string()
    } else {
        format!("No resources found in {} namespace.", cluster.namespace)
    }
}

async fn objects(
    cluster: &Cluster,
    args: &Args,
    format: &Format,
    targets: &[Target],
    out: &mut Output,
) -> Result<()> {
    let mut items = Vec::new();
    let mut single = None;
    for target in targets {
        if target.names.is_empty() {
            let list = cluster.get(&list_uri(args, cluster, target, &[])).await?;
            for item in list["items"].as_array().cloned().unwrap_or_default() {
                items.push(printer::with_type(item, target.info));
            }
        } else {
            for name in &target.names {
                let uri =
                    client::object_path(target.info, namespace_of(args, cluster, target), name);
                let object = printer::with_type(cluster.get(&uri).await?, target.info);
                if targets.len() == 1 && target.names.len() == 1 {
                    single = Some(object.clone());
                }
                items.push(object);
            }
        }
    }
    let value = single.unwrap_or_else(|| printer::list_of(items));
    let text = printer::render_object(format, &value)?;
    match format {
        // As kubectl prints it: exactly the template, no newline added.
        Format::JsonPath(_) => out.raw(text.as_bytes()),
        _ => out.text(&text),
    }
}

async fn watch(
    cluster: &Cluster,
    args: &Args,
    format: &Format,
    targets: &[Target],
    out: &mut Output,
) -> Result<()> {
    let target = match targets {
        [t] if t.names.len() <= 1 => t,
        _ => {
            return Err(Error::Usage(
                "watch is only supported on individual resources and resource collections, but several were named".into(),
            ))
        }
    };
    // A named watch lists and watches the collection filtered to that name, as kubectl does.
    let mut field_selector = args.field_selector.clone().unwrap_or_default();
    if let Some(name) = target.names.first() {
        if !field_selector.is_empty() {
            field_selector.push(',');
        }
        field_selector.push_str(&format!("metadata.name={name}"));
    }
    let namespace = namespace_of(args, cluster, target);
    let collection = client::collection_path(target.info, namespace);
    let uri_with = |extra: &[(&str, &str)]| {
        let mut query = vec![
            (
                "labelSelector",
                args.selector.as_deref().unwrap_or_default(),
            ),
            ("fieldSelector", field_selector.as_str()),
        ];
        query.extend_from_slice(extra);
        client::with_query(&collection, &query)
    };
    let listing = Target {
        info: target.info,
        names: Vec::new(),
    };
    let uri = uri_with(&[]);
    let accept_table = format.is_table();
    let initial = if accept_table {
        expect_table(cluster.get_table(&uri).await?, &uri)?
    } else {
        cluster.get(&uri).await?
    };
    let resource_version = initial["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let layout = accept_table.then(|| {
        TableLayout::new(
            &initial["columnDefinitions"],
            table_options(args, format, &listing, false),
        )
    });
    let mut aligner = Aligner::default();
    if let Some(layout) = &layout {
        let rows = layout.rows(&initial);
        let mut all = vec![layout.headers().to_vec()];
        all.extend(rows);
        aligner.fit(&all);
        let skip = usize::from(args.no_headers);
        for row in all.iter().skip(skip) {
            out.line(aligner.line(row))?;
        }
    } else {
        for item in initial["items"].as_array().cloned().unwrap_or_default() {
            let object = printer::with_type(item, target.info);
            out.text(&printer::render_object(format, &object)?)?;
        }
    }
    out.flush()?;
    let watch_uri = uri_with(&[
        ("watch", "true"),
        ("resourceVersion", resource_version.as_str()),
    ]);
    let mut stream = cluster
        .stream(
            &watch_uri,
            if accept_table {
                client::TABLE_ACCEPT
            } else {
                client::JSON
            },
        )
        .await?;
    while let Some(line) = stream.line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let event: Value = serde_json::from_str(&line).map_err(|e| Error::Decode {
            what: watch_uri.clone(),
            message: e.to_string(),
        })?;
        match event["type"].as_str() {
            Some("ERROR") => {
                let status = event["object"].to_string();
                let code = event["object"]["code"].as_u64().unwrap_or(500) as u16;
                return Err(Error::from(ApiError::from_response(
                    code,
                    status.as_bytes(),
                )));
            }
            Some("BOOKMARK") => continue,
            _ => {}
        }
        match &layout {
            Some(layout) => {
                for row in layout.rows(&event["object"]) {
                    out.line(aligner.line(&row))?;
                }
            }
            None => {
                let object = printer::with_type(event["object"].clone(), target.info);
                out.text(&printer::render_object(format, &object)?)?;
            }
        }
        out.flush()?;
    }
    Ok(())
}
