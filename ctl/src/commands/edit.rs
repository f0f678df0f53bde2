//! `kctl edit TYPE NAME`: the object as YAML in `$KUBE_EDITOR` or `$EDITOR` (else `vi`), sent
//! back as an update (PUT). As kubectl does, a rejected edit reopens the file with the
//! server's error on top; saving it unchanged gives up.

use serde_json::Value;

use crate::client::{self, Cluster};
use crate::commands::parse_one;
use crate::error::{Error, Result};
use crate::output::Output;
use crate::printer;
use crate::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `TYPE NAME` or `TYPE/NAME`.
    #[arg(required = true, value_name = "RESOURCE")]
    pub resource: Vec<String>,
}

const HEADER: &str =
    "# Please edit the object below. Lines beginning with a '#' will be ignored,\n\
# and an empty file will abort the edit. If an error occurs while saving this file will be\n\
# reopened with the relevant failures.\n#\n";

/// What one round of editing came to.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Nothing changed, or the file was emptied.
    Cancelled,
    /// The edited object to send.
    Edited(Value),
}

/// Reads what the user saved: comments dropped, unchanged or empty text cancels.
pub fn read_edit(original: &str, saved: &str) -> std::result::Result<Outcome, String> {
    let content: String = saved
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    if content.trim().is_empty() || content.trim() == original.trim() {
        return Ok(Outcome::Cancelled);
    }
    serde_yaml_ng::from_str(&content)
        .map(Outcome::Edited)
        .map_err(|e| format!("the edited file is not valid YAML: {e}"))
}

pub async fn run(args: Args, global: &GlobalArgs, out: &mut Output) -> Result<()> {
    let (info, name) = parse_one(&args.resource)?;
    let cluster = global.cluster().await?;
    let path = client::object_path(info, client::scoped(info, &cluster.namespace), &name);
    let mut object = printer::with_type(cluster.get(&path).await?, info);
    if let Some(metadata) = object["metadata"].as_object_mut() {
        metadata.remove("managedFields");
    }
    let original = printer::to_yaml(&object)?;
    let file = tempfile::Builder::new()
        .prefix(&format!("kctl-edit-{name}-"))
        .suffix(".yaml")
        .tempfile()
        .map_err(|source| Error::Write {
            path: std::env::temp_dir().display().to_string(),
            source,
        })?;
    let mut text = original.clone();
    let mut errors: Option<String> = None;
    let mut last_saved: Option<String> = None;
    loop {
        let mut contents = HEADER.to_string();
        if let Some(errors) = &errors {
            for line in errors.lines() {
                contents.push_str(&format!("# {line}\n"));
            }
            contents.push_str("#\n");
        }
        contents.push_str(&text);
        std::fs::write(file.path(), &contents).map_err(|source| Error::Write {
            path: file.path().display().to_string(),
            source,
        })?;
        run_editor(file.path()).await?;
        let saved = std::fs::read_to_string(file.path()).map_err(|source| Error::Read {
            path: file.path().display().to_string(),
            source,
        })?;
        let body: String = saved
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        if errors.is_some() && last_saved.as_deref() == Some(body.as_str()) {
            return Err(Error::Failed(format!(
                "Edit cancelled, no valid changes were saved: {}",
                errors
                    .unwrap_or_default()
                    .lines()
                    .next()
                    .unwrap_or_default()
            )));
        }
        last_saved = Some(body.clone());
        let edited = match read_edit(&original, &saved) {
            Ok(Outcome::Cancelled) => return out.line("Edit cancelled, no changes made."),
            Ok(Outcome::Edited(edited)) => edited,
            Err(message) => {
                errors = Some(message);
                text = body;
                continue;
            }
        };
        match update(&cluster, info, &path, &name, &edited).await {
            Ok(()) => return out.line(format!("{}/{name} edited", client::kind_group(info))),
            Err(e @ (Error::Api(_) | Error::Usage(_))) => {
                errors = Some(crate::report(&e));
                text = body;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn update(
    cluster: &Cluster,
    info: &berth_api::ResourceInfo,
    path: &str,
    name: &str,
    edited: &Value,
) -> Result<()> {
    if edited["metadata"]["name"].as_str() != Some(name) || edited["kind"] != info.kind {
        return Err(Error::Usage(
            "the kind and metadata.name of an edited object cannot change".into(),
        ));
    }
    let uri = client::with_query(
        path,
        &[("fieldManager", "kctl-edit"), ("fieldValidation", "Strict")],
    );
    cluster.put(&uri, edited).await.map(|_| ())
}

/// Runs the user's editor on a file and waits for it; the editor variable may hold flags
/// (`code --wait`), so it goes through the shell.
async fn run_editor(path: &std::path::Path) -> Result<()> {
    let editor = std::env::var("KUBE_EDITOR")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".to_string());
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("kctl-editor")
        .arg(path)
        .status()
        .await
        .map_err(|e| Error::Failed(format!("cannot run editor {editor:?}: {e}")))?;
    if !status.success() {
        return Err(Error::Failed(format!(
            "editor {editor:?} exited with {status}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_ignored_and_unchanged_text_cancels() {
        let original = "apiVersion: v1\nkind: ConfigMap\ndata:\n  a: '1'\n";
        let saved = format!("{HEADER}{original}");
        assert_eq!(read_edit(original, &saved).unwrap(), Outcome::Cancelled);
        assert_eq!(
            read_edit(original, "# only comments\n").unwrap(),
            Outcome::Cancelled
        );
        let changed = format!("{HEADER}apiVersion: v1\nkind: ConfigMap\ndata:\n  a: '2'\n");
        match read_edit(original, &changed).unwrap() {
            Outcome::Edited(v) => assert_eq!(v["data"]["a"], "2"),
            other => panic!("{other:?}"),
        }
        assert!(read_edit(original, "a: [1\n").is_err());
    }
}
