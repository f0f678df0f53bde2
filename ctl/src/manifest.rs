//! Reading `-f` arguments: files, directories (their `.yaml`, `.yml` and `.json` files, with
//! `-R` also those below), and `-` for standard input. Every object keeps where it came from,
//! so an error names the file, the document and the line.

use std::io::Read;
use std::path::{Path, PathBuf};

use berth_api::decode::Manifest;
use berth_api::ResourceInfo;

use crate::error::{Error, Result};

/// The text of one `-f` source.
#[derive(Debug, Clone)]
pub struct Source {
    /// The path as given, or `STDIN`.
    pub name: String,
    pub text: String,
}

/// One object of a manifest, its kind resolved.
#[derive(Debug, Clone)]
pub struct Item {
    pub file: String,
    pub manifest: Manifest,
    pub info: &'static ResourceInfo,
}

impl Item {
    pub fn name(&self) -> &str {
        self.manifest.name().unwrap_or_default()
    }

    /// `"web.yaml" document 2`, for messages.
    pub fn origin(&self) -> String {
        format!("{:?} document {}", self.file, self.manifest.document)
    }
}

/// Reads every source the `-f` flags name; `stdin` is read for `-`.
pub fn read_sources(
    files: &[String],
    recursive: bool,
    stdin: &mut dyn Read,
) -> Result<Vec<Source>> {
    let mut sources = Vec::new();
    for file in files {
        if file == "-" {
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .map_err(|source| Error::Read {
                    path: "STDIN".into(),
                    source,
                })?;
            sources.push(Source {
                name: "STDIN".into(),
                text,
            });
            continue;
        }
        let path = Path::new(file);
        if path.is_dir() {
            let mut found = Vec::new();
            walk(path, recursive, &mut found)?;
            found.sort();
            for p in found {
                sources.push(read_file(&p)?);
            }
        } else {
            sources.push(read_file(path)?);
        }
    }
    Ok(sources)
}

fn read_file(path: &Path) -> Result<Source> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Source {
        name: path.display().to_string(),
        text,
    })
}

fn walk(dir: &Path, recursive: bool, found: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Read {
        path: dir.display().to_string(),
        source,
    })?;
    for entry in entries {
        let path = entry
            .map_err(|source| Error::Read {
                path: dir.display().to_string(),
                source,
            })?
            .path();
        if path.is_dir() {
            if recursive {
                walk(&path, recursive, found)?;
            }
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            found.push(path);
        }
    }
    Ok(())
}

/// Decodes one source and resolves each object's kind.
pub fn items(source: &Source) -> Result<Vec<Item>> {
    let manifests = berth_api::decode::decode(&source.text).map_err(|e| Error::Manifest {
        file: source.name.clone(),
        source: Box::new(e),
    })?;
    manifests
        .into_iter()
        .map(|manifest| {
            let info =
                berth_api::registry::by_api_version_kind(&manifest.api_version, &manifest.kind)
                    .ok_or_else(|| Error::ManifestObject {
                        file: source.name.clone(),
                        document: manifest.document,
                        line: manifest.line,
                        message: format!(
                            "no kind {:?} is served in version {:?}",
                            manifest.kind, manifest.api_version
                        ),
                    })?;
            if manifest.name().unwrap_or_default().is_empty() {
                return Err(Error::ManifestObject {
                    file: source.name.clone(),
                    document: manifest.document,
                    line: manifest.line,
                    message: "metadata.name is required".into(),
                });
            }
            Ok(Item {
                file: source.name.clone(),
                manifest,
                info,
            })
        })
        .collect()
}

/// Reads and decodes everything the `-f` flags name.
pub fn read_items(files: &[String], recursive: bool, stdin: &mut dyn Read) -> Result<Vec<Item>> {
    let mut all = Vec::new();
    for source in read_sources(files, recursive, stdin)? {
        all.extend(items(&source)?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source {
        Source {
            name: "web.yaml".into(),
            text: text.into(),
        }
    }

    #[test]
    fn two_documents_decode_with_their_kinds() {
        let items = items(&source(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
        ))
        .unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].info.kind, "Deployment");
        assert_eq!(items[1].manifest.document, 2);
        assert_eq!(items[1].origin(), "\"web.yaml\" document 2");
    }

    #[test]
    fn a_syntax_error_names_file_document_and_line() {
        let err = items(&source(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [b\n",
        ))
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("error parsing \"web.yaml\": document 2 (line "),
            "{text}"
        );
    }

    #[test]
    fn a_missing_kind_and_an_unknown_kind_are_named() {
        let err = items(&source(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {name: b}\n",
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "error parsing \"web.yaml\": document 2 (line 5): missing field \"kind\""
        );
        let err = items(&source(
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: a}\n",
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "error in \"web.yaml\" document 1 (line 1): no kind \"Widget\" is served in version \"example.com/v1\""
        );
    }

    #[test]
    fn directories_are_read_in_order_and_recursively_with_r() {
        let dir = tempfile::tempdir().unwrap();
        let cm = |n: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {n}}}\n");
        std::fs::write(dir.path().join("b.yaml"), cm("b")).unwrap();
        std::fs::write(dir.path().join("a.yml"), cm("a")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(
            dir.path().join("sub/c.json"),
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#,
        )
        .unwrap();
        let d = dir.path().display().to_string();
        let names = |recursive| {
            read_items(std::slice::from_ref(&d), recursive, &mut std::io::empty())
                .unwrap()
                .iter()
                .map(|i| i.name().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(false), ["a", "b"]);
        assert_eq!(names(true), ["a", "b", "c"]);
        let mut stdin = cm("s").into_bytes();
        let from_stdin = read_items(&["-".into()], false, &mut stdin.as_slice()).unwrap();
        assert_eq!(from_stdin[0].file, "STDIN");
        stdin.clear();
    }
}
