//! Calling CNI plugins (CNI spec 1.0): the first network configuration (`.conflist`, or a
//! single-plugin `.conf`) in the configuration directory, each plugin run in turn with
//! `CNI_COMMAND=ADD` (then `DEL` in reverse, passing the result along as `prevResult`).
//! Any conformant plugin works: Debian's `containernetworking-plugins` (bridge, host-local)
//! until Berth's own arrives.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no CNI network configuration in {0}")]
    NoConfig(PathBuf),
    #[error("CNI configuration {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("CNI plugin {plugin:?} not found in {path}")]
    NoPlugin { plugin: String, path: String },
    #[error("CNI plugin {plugin} {command}: {message}")]
    Plugin {
        plugin: String,
        command: &'static str,
        message: String,
    },
    #[error("CNI plugin {plugin}: {source}")]
    Io {
        plugin: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the plugins and their configuration are.
#[derive(Debug, Clone)]
pub struct Cni {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
}

/// A loaded network configuration list.
#[derive(Debug, Clone)]
struct NetworkList {
    name: String,
    version: String,
    plugins: Vec<Value>,
}

/// What ADD gave back that the agent needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachment {
    /// Pod addresses without prefix length, IPv4 first.
    pub ips: Vec<String>,
    /// The raw result, kept for DEL.
    pub result: Value,
}

impl Cni {
    /// Whether the configuration directory holds a network configuration yet.
    pub fn has_config(&self) -> bool {
        self.load().is_ok()
    }

    fn load(&self) -> Result<NetworkList> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.conf_dir)
            .map_err(|_| Error::NoConfig(self.conf_dir.clone()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
            })
            .collect();
        files.sort();
        let path = files
            .into_iter()
            .next()
            .ok_or_else(|| Error::NoConfig(self.conf_dir.clone()))?;
        let err = |reason: String| Error::Config {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        let name = v["name"]
            .as_str()
            .ok_or_else(|| err("no \"name\"".into()))?
            .to_string();
        let version = v["cniVersion"].as_str().unwrap_or("1.0.0").to_string();
        let plugins = match v.get("plugins") {
            Some(Value::Array(p)) if !p.is_empty() => p.clone(),
            Some(_) => return Err(err("\"plugins\" must be a non-empty list".into())),
            None => vec![v.clone()],
        };
        for p in &plugins {
            if p["type"].as_str().is_none() {
                return Err(err("a plugin has no \"type\"".into()));
            }
        }
        Ok(NetworkList {
            name,
            version,
            plugins,
        })
    }

    fn find(&self, plugin: &str) -> Result<PathBuf> {
        if plugin.contains('/') {
            return Err(Error::NoPlugin {
                plugin: plugin.into(),
                path: "(a plugin type may not contain '/')".into(),
            });
        }
        self.bin_dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::NoPlugin {
                plugin: plugin.into(),
                path: self.path_var(),
            })
    }

    fn path_var(&self) -> String {
        self.bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    async fn exec(
        &self,
        command: &'static str,
        list: &NetworkList,
        plugin: &Value,
        container_id: &str,
        netns: &Path,
        prev: Option<&Value>,
    ) -> Result<Value> {
        let kind = plugin["type"].as_str().expect("checked on load");
        let bin = self.find(kind)?;
        let mut conf = plugin.clone();
        conf["name"] = json!(list.name);
        conf["cniVersion"] = json!(list.version);
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        let io = |source| Error::Io {
            plugin: kind.into(),
            source,
        };
        let mut child = tokio::process::Command::new(&bin)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", self.path_var())
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(io)?;
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(&serde_json::to_vec(&conf).expect("serialises"))
            .await
            .map_err(io)?;
        drop(stdin);
        let out = child.wait_with_output().await.map_err(io)?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            // Plugins report errors as {"code", "msg", "details"} on stdout.
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| {
                    let msg = v["msg"].as_str()?.to_string();
                    Some(match v["details"].as_str() {
                        Some(d) if !d.is_empty() => format!("{msg}: {d}"),
                        _ => msg,
                    })
                })
                .unwrap_or_else(|| {
                    format!(
                        "{}{}",
                        text.trim(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    )
                });
            return Err(Error::Plugin {
                plugin: kind.into(),
                command,
                message,
            });
        }
        if text.trim().is_empty() {
            return Ok(prev.cloned().unwrap_or(Value::Null));
        }
        serde_json::from_str(&text).map_err(|e| Error::Plugin {
            plugin: kind.into(),
            command,
            message: format!("invalid result: {e}"),
        })
    }

    /// Attach the pod whose network namespace is `netns`.
    pub async fn add(&self, container_id: &str, netns: &Path) -> Result<Attachment> {
        let list = self.load()?;
        let mut prev: Option<Value> = None;
        for (i, plugin) in list.plugins.iter().enumerate() {
            match self
                .exec("ADD", &list, plugin, container_id, netns, prev.as_ref())
                .await
            {
                Ok(r) => prev = Some(r),
                Err(e) => {
                    // Undo what the earlier plugins did (the spec asks for DEL on failure).
                    for p in list.plugins[..=i].iter().rev() {
                        let _ = self
                            .exec("DEL", &list, p, container_id, netns, prev.as_ref())
                            .await;
                    }
                    return Err(e);
                }
            }
        }
        let result = prev.unwrap_or(Value::Null);
        let mut ips: Vec<String> = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str())
            .map(|a| a.split('/').next().unwrap_or(a).to_string())
            .collect();
        ips.sort_by_key(|ip| ip.contains(':'));
        Ok(Attachment { ips, result })
    }

    /// Detach; a namespace that is already gone is fine (`netns` may not exist).
    pub async fn del(&self, container_id: &str, netns: &Path, prev: Option<&Value>) -> Result<()> {
        let list = self.load()?;
        let prev = prev.filter(|p| !p.is_null());
        let mut first = None;
        for plugin in list.plugins.iter().rev() {
            if let Err(e) = self
                .exec("DEL", &list, plugin, container_id, netns, prev)
                .await
            {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// A bridge network with host-local addresses from `subnet`: what `berth up` and the
/// tests write when no configuration exists (the reference plugins from Debian's
/// containernetworking-plugins).
pub fn bridge_conflist(name: &str, bridge: &str, subnet: &str, data_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": data_dir,
                }
            }
        ]
    })
}
