//! Finding and editing kubeconfig files: `--kubeconfig`, else every file in `KUBECONFIG`
//! (colon-separated, merged as kubectl merges them), else `~/.kube/config`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use kube::config::Kubeconfig;
use serde_yaml_ng::Value;

use crate::error::{Error, Result};

/// The kubeconfig files to read, in merge order.
pub fn paths(flag: Option<&Path>, env: Option<OsString>, home: Option<PathBuf>) -> Vec<PathBuf> {
    if let Some(path) = flag {
        return vec![path.to_path_buf()];
    }
    if let Some(env) = env.filter(|e| !e.is_empty()) {
        return std::env::split_paths(&env)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
    }
    home.map(|h| vec![h.join(".kube").join("config")])
        .unwrap_or_default()
}

/// The paths for this process: its `--kubeconfig` flag, `KUBECONFIG` and `HOME`.
pub fn paths_from_env(flag: Option<&Path>) -> Vec<PathBuf> {
    paths(
        flag,
        std::env::var_os("KUBECONFIG"),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

/// Reads and merges the files. A file named by `--kubeconfig` must exist; files from
/// `KUBECONFIG` that do not exist are skipped, as kubectl skips them.
pub fn load(paths: &[PathBuf], explicit: bool) -> Result<Kubeconfig> {
    let mut merged: Option<Kubeconfig> = None;
    for path in paths {
        if !explicit && !path.exists() {
            continue;
        }
        let config = Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig {
            path: path.clone(),
            message: e.to_string(),
        })?;
        merged = Some(match merged {
            None => config,
            Some(m) => m.merge(config).map_err(|e| Error::Kubeconfig {
                path: path.clone(),
                message: e.to_string(),
            })?,
        });
    }
    merged.ok_or_else(|| {
        Error::NoKubeconfig(format!(
            "none of {} exists; pass --kubeconfig or set KUBECONFIG",
            paths
                .iter()
                .map(|p| format!("{:?}", p.display().to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// The file `config use-context` writes: the first of the paths that exists.
pub fn file_to_edit(paths: &[PathBuf]) -> Result<PathBuf> {
    paths
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or_else(|| Error::NoKubeconfig("no kubeconfig file exists to edit".into()))
}

/// Sets `current-context` in the text of a kubeconfig, keeping everything else as it was
/// read; the context must be defined in the file.
pub fn set_current_context(text: &str, context: &str) -> std::result::Result<String, String> {
    let mut doc: Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let known = doc
        .get("contexts")
        .and_then(Value::as_sequence)
        .map(|contexts| {
            contexts
                .iter()
                .any(|c| c.get("name").and_then(Value::as_str) == Some(context))
        })
        .unwrap_or(false);
    if !known {
        return Err(format!("no context exists with the name: {context:?}"));
    }
    let map = doc
        .as_mapping_mut()
        .ok_or_else(|| "not a YAML mapping".to_string())?;
    map.insert(
        Value::String("current-context".into()),
        Value::String(context.into()),
    );
    serde_yaml_ng::to_string(&doc).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_wins_then_env_then_home() {
        let flag = PathBuf::from("/a/config");
        assert_eq!(
            paths(Some(&flag), Some("/b:/c".into()), Some("/home/u".into())),
            vec![flag.clone()]
        );
        assert_eq!(
            paths(None, Some("/b::/c".into()), Some("/home/u".into())),
            vec![PathBuf::from("/b"), PathBuf::from("/c")]
        );
        assert_eq!(
            paths(None, Some("".into()), Some("/home/u".into())),
            vec![PathBuf::from("/home/u/.kube/config")]
        );
        assert!(paths(None, None, None).is_empty());
    }

    #[test]
    fn use_context_sets_only_current_context() {
        let text = "apiVersion: v1\nkind: Config\ncurrent-context: a\ncontexts:\n- name: a\n  context: {cluster: c, user: u}\n- name: b\n  context: {cluster: c, user: u}\nclusters: []\nusers: []\n";
        let out = set_current_context(text, "b").unwrap();
        let doc: Value = serde_yaml_ng::from_str(&out).unwrap();
        assert_eq!(doc["current-context"].as_str(), Some("b"));
        assert_eq!(doc["contexts"].as_sequence().unwrap().len(), 2);
        let err = set_current_context(text, "zz").unwrap_err();
        assert_eq!(err, "no context exists with the name: \"zz\"");
    }
}
