//! The image configuration: the container defaults an image carries, and how a container's
//! `command`/`args` combine with them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The parts of an image's config (OCI `config` object, Docker's `config` too) that feed
/// container defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries, in image order.
    pub env: Vec<String>,
    /// Empty means `/`.
    pub working_dir: String,
    /// `user`, `uid`, `user:group` or `uid:gid`; empty means root.
    pub user: String,
    pub labels: BTreeMap<String, String>,
    /// `80/tcp`, `53/udp`, sorted.
    pub exposed_ports: Vec<String>,
    pub stop_signal: Option<String>,
}

/// The command a container runs, from its spec and its image, by kubelet's (CRI's) rules:
///
/// - `command` set: `command + args`; the image's Entrypoint and Cmd are ignored.
/// - only `args` set: image Entrypoint + `args`.
/// - neither: image Entrypoint + image Cmd.
///
/// An Entrypoint of exactly `[""]` counts as unset, as containerd treats it. The result
/// is empty when there is nothing to run; the caller reports that.
pub fn resolve_command(config: &ImageConfig, command: &[String], args: &[String]) -> Vec<String> {
    if !command.is_empty() {
        return command.iter().chain(args).cloned().collect();
    }
    let entrypoint: &[String] = if config.entrypoint.len() == 1 && config.entrypoint[0].is_empty() {
        &[]
    } else {
        &config.entrypoint
    };
    let args = if args.is_empty() {
        &config.cmd[..]
    } else {
        args
    };
    entrypoint.iter().chain(args).cloned().collect()
}

/// An image config blob as OCI and Docker write it. Every field tolerates `null`, which
/// Docker writes for unset lists; unknown fields are ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct RawImageConfig {
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: Option<RawRuntimeConfig>,
    pub rootfs: RawRootFs,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawRootFs {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub diff_ids: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RawRuntimeConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    stop_signal: Option<String>,
}

impl RawImageConfig {
    pub(crate) fn image_config(&self) -> ImageConfig {
        let Some(c) = &self.config else {
            return ImageConfig::default();
        };
        ImageConfig {
            entrypoint: c.entrypoint.clone().unwrap_or_default(),
            cmd: c.cmd.clone().unwrap_or_default(),
            env: c.env.clone().unwrap_or_default(),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            user: c.user.clone().unwrap_or_default(),
            labels: c.labels.clone().unwrap_or_default(),
            exposed_ports: c
                .exposed_ports
                .as_ref()
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default(),
            stop_signal: c.stop_signal.clone().filter(|s| !s.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        ImageConfig {
            entrypoint: v(entrypoint),
            cmd: v(cmd),
            ..Default::default()
        }
    }

    #[test]
    fn command_and_args_follow_kubelet_rules() {
        let img = image(&["/entry", "-x"], &["serve", "--port=80"]);
        // Neither set: Entrypoint + Cmd.
        assert_eq!(
            resolve_command(&img, &[], &[]),
            v(&["/entry", "-x", "serve", "--port=80"])
        );
        // Only args: Entrypoint + args, Cmd ignored.
        assert_eq!(
            resolve_command(&img, &[], &v(&["debug"])),
            v(&["/entry", "-x", "debug"])
        );
        // Command set: command + args; image Entrypoint and Cmd ignored.
        assert_eq!(
            resolve_command(&img, &v(&["/bin/sh", "-c"]), &v(&["echo hi"])),
            v(&["/bin/sh", "-c", "echo hi"])
        );
        assert_eq!(
            resolve_command(&img, &v(&["/bin/true"]), &[]),
            v(&["/bin/true"])
        );
    }

    #[test]
    fn image_without_entrypoint_or_cmd() {
        let cmd_only = image(&[], &["sh"]);
        assert_eq!(resolve_command(&cmd_only, &[], &[]), v(&["sh"]));
        assert_eq!(
            resolve_command(&cmd_only, &[], &v(&["ls", "/"])),
            v(&["ls", "/"])
        );
        let empty_entry = image(&[""], &["sh"]);
        assert_eq!(resolve_command(&empty_entry, &[], &[]), v(&["sh"]));
        assert!(resolve_command(&ImageConfig::default(), &[], &[]).is_empty());
    }

    #[test]
    fn parses_docker_config_with_nulls() {
        let raw: RawImageConfig = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":null,"Cmd":["sh"],
            "Env":["PATH=/bin"],"WorkingDir":"","User":"","Labels":null,
            "ExposedPorts":{"8080/tcp":{},"53/udp":{}},"StopSignal":"SIGQUIT","Volumes":null},
            "container_config":{"Hostname":"x"},"history":[{"empty_layer":true}],
            "rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#,
        )
        .unwrap();
        let cfg = raw.image_config();
        assert!(cfg.entrypoint.is_empty());
        assert_eq!(cfg.cmd, v(&["sh"]));
        assert_eq!(cfg.env, v(&["PATH=/bin"]));
        assert_eq!(cfg.exposed_ports, v(&["53/udp", "8080/tcp"]));
        assert_eq!(cfg.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(raw.rootfs.diff_ids.unwrap(), v(&["sha256:aa"]));
        let bare: RawImageConfig =
            serde_json::from_str(r#"{"rootfs":{"type":"layers","diff_ids":null}}"#).unwrap();
        assert_eq!(bare.image_config(), ImageConfig::default());
    }
}
