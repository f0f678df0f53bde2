//! The query strings of exec, attach and port-forward requests.
//!
//! The API server forwards the client's query unchanged, so these take the client's
//! names (`stdin=true`) as well as the kubelet's own (`input=1`).

use super::{Error, Result};

/// What an exec or attach request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// The command and its arguments (`command=` repeated); empty for attach.
    pub command: Vec<String>,
    /// The target container; `None` lets the caller pick the pod's default.
    pub container: Option<String>,
    /// Whether the client sends stdin.
    pub stdin: bool,
    /// Whether the client wants stdout.
    pub stdout: bool,
    /// Whether the client wants stderr; always false with `tty`, whose output is one stream.
    pub stderr: bool,
    /// Whether the process gets a terminal (and the client may resize it).
    pub tty: bool,
}

impl ExecOptions {
    /// Parses `command=sh&command=-c&command=date&container=c&stdin=true&stdout=1&tty=false`.
    ///
    /// As the kubelet does, `tty` turns `stderr` off, and at least one of stdin, stdout
    /// and stderr must remain.
    pub fn from_query(query: &str) -> Result<Self> {
        let mut opts = ExecOptions::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "command" => opts.command.push(value.into_owned()),
                "container" if !value.is_empty() => opts.container = Some(value.into_owned()),
                "stdin" | "input" => opts.stdin = parse_bool("stdin", &value)?,
                "stdout" | "output" => opts.stdout = parse_bool("stdout", &value)?,
                "stderr" | "error" => opts.stderr = parse_bool("stderr", &value)?,
                "tty" => opts.tty = parse_bool("tty", &value)?,
                _ => {}
            }
        }
        if opts.tty {
            opts.stderr = false;
        }
        if !(opts.stdin || opts.stdout || opts.stderr) {
            return Err(Error::NoStreams);
        }
        Ok(opts)
    }
}

/// Go's `strconv.ParseBool`, which the API server's query decoding uses.
fn parse_bool(param: &'static str, value: &str) -> Result<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(Error::InvalidQuery {
            param,
            value: other.to_string(),
        }),
    }
}

/// What a port-forward request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortForwardOptions {
    /// The pod, as error messages name it (`default/web`).
    pub pod: String,
    /// The ports of the websocket channel protocol (`ports=80&ports=8080` or `ports=80,8080`).
    /// SPDY clients name a port per stream instead and send none here.
    pub ports: Vec<u16>,
}

impl PortForwardOptions {
    /// Parses the `ports` (client) or `port` (kubelet) parameters.
    pub fn from_query(pod: impl Into<String>, query: &str) -> Result<Self> {
        let mut ports = Vec::new();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if key != "ports" && key != "port" {
                continue;
            }
            for p in value.split(',') {
                ports.push(parse_port(p.trim())?);
            }
        }
        Ok(Self {
            pod: pod.into(),
            ports,
        })
    }
}

/// A port number between 1 and 65535.
pub(crate) fn parse_port(value: &str) -> Result<u16> {
    match value.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(Error::InvalidPort {
            value: value.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_query_as_kubectl_sends_it() {
        let o = ExecOptions::from_query(
            "command=sh&command=-c&command=echo+a%26b&container=nginx&stderr=true&stdin=true&stdout=true",
        )
        .unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo a&b"]);
        assert_eq!(o.container.as_deref(), Some("nginx"));
        assert!(o.stdin && o.stdout && o.stderr && !o.tty);
    }

    #[test]
    fn kubelet_names_and_tty_drops_stderr() {
        let o = ExecOptions::from_query("command=ls&input=1&output=1&error=1&tty=1").unwrap();
        assert!(o.stdin && o.stdout && o.tty);
        assert!(!o.stderr, "tty merges stderr into stdout");
    }

    #[test]
    fn needs_one_stream_and_valid_booleans() {
        let err = ExecOptions::from_query("command=ls").unwrap_err();
        assert_eq!(
            err.to_string(),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        assert!(matches!(
            ExecOptions::from_query("command=ls&stderr=true&tty=true"),
            Err(Error::NoStreams)
        ));
        let err = ExecOptions::from_query("command=ls&stdout=yes").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value \"yes\" for query parameter \"stdout\": want true or false"
        );
        // Attach has no command.
        let o = ExecOptions::from_query("stdout=true&container=").unwrap();
        assert!(o.command.is_empty() && o.container.is_none());
    }

    #[test]
    fn port_forward_ports() {
        let o = PortForwardOptions::from_query("ns/p", "ports=80&ports=8080,9090&port=1").unwrap();
        assert_eq!(o.ports, [80, 8080, 9090, 1]);
        assert_eq!(o.pod, "ns/p");
        assert!(PortForwardOptions::from_query("p", "")
            .unwrap()
            .ports
            .is_empty());
        for bad in ["ports=0", "ports=70000", "ports=http", "ports="] {
            let err = PortForwardOptions::from_query("p", bad).unwrap_err();
            assert!(err.to_string().contains("as a port"), "{bad}: {err}");
        }
    }
}
