//! The streaming protocols of the agent's HTTPS endpoint: `exec`, `attach` and
//! `port-forward`, spoken exactly as the kubelet speaks them, since the API server
//! forwards the client's upgrade request unchanged and then splices bytes both ways.
//!
//! Protocols, picked from the request's upgrade headers:
//!
//! | request | exec / attach | port-forward |
//! |---|---|---|
//! | `Upgrade: websocket` | `v5.channel.k8s.io` (kubectl 1.30+), `v4.channel.k8s.io` (kube-rs, the Python client), `v4.base64.channel.k8s.io`, `v3`/`v2`/`channel.k8s.io`, `base64.channel.k8s.io` | `SPDY/3.1+portforward.k8s.io` (kubectl 1.30+: SPDY inside binary messages); `v4.channel.k8s.io` (kube-rs, the Python client: ports in the query) |
//! | `Upgrade: SPDY/3.1` | `X-Stream-Protocol-Version` `v4.channel.k8s.io` down to `channel.k8s.io` | `portforward.k8s.io` |
//!
//! Channel protocol (websocket exec): each binary message starts with its channel, 0
//! stdin, 1 stdout, 2 stderr, 3 error (a `metav1.Status` from v4 on), 4 resize
//! (`{"Width":W,"Height":H}`), and in v5 255 close (`[255, 0]` ends stdin). SPDY exec
//! gives each of those its own stream (`streamtype` header); an error stream closed
//! empty (before v4) or holding a Success status means exit code 0.
//!
//! Where to start reading: [`serve_exec`] and [`serve_port_forward`], then
//! `exec::run_process` (the transport-independent part of exec), then `portforward` and
//! the SPDY connection in `spdy::session`. The runtime plugs in through the seams in
//! [`ExecBackend`] and [`PortForwardDialer`]; `fake` has test doubles behind the
//! `test-util` feature.
//!
//! The server that calls these must support HTTP upgrades (`axum::serve` does; with
//! hyper-util, use `serve_connection_with_upgrades`).

mod backend;
mod exec;
#[cfg(feature = "test-util")]
pub mod fake;
mod options;
mod portforward;
pub mod spdy;
mod status;
mod upgrade;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

pub use backend::{
    BoxRead, BoxWrite, ExecBackend, ExitFuture, PodStream, PortForwardDialer, Process, ResizeSink,
    TerminalSize,
};
pub use options::{ExecOptions, PortForwardOptions};

/// How long a SPDY client has to open all the streams of a session (the kubelet's
/// default `streamCreationTimeout`).
pub(crate) const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A request the streaming endpoints refuse before upgrading.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// None of stdin, stdout, stderr was asked for.
    #[error("you must specify at least 1 of stdin, stdout, stderr")]
    NoStreams,
    /// An exec without a command.
    #[error("you must specify at least one command for the container")]
    NoCommand,
    /// A query parameter that is not a boolean.
    #[error("invalid value {value:?} for query parameter {param:?}: want true or false")]
    InvalidQuery {
        /// The parameter.
        param: &'static str,
        /// Its value.
        value: String,
    },
    /// A port that is not 1 to 65535.
    #[error("unable to parse {value:?} as a port: want a number from 1 to 65535")]
    InvalidPort {
        /// The offending value.
        value: String,
    },
    /// A websocket port-forward without ports in the query.
    #[error(
        "query parameter \"ports\" is required for port-forward over a websocket channel protocol"
    )]
    NoPorts,
    /// Neither `Upgrade: websocket` nor `Upgrade: SPDY/3.1` with `Connection: Upgrade`.
    #[error("this endpoint needs an upgrade request: \"Connection: Upgrade\" with \"Upgrade: websocket\" or \"Upgrade: SPDY/3.1\"")]
    NotUpgrade,
    /// A websocket request missing a required header.
    #[error("invalid websocket handshake: {0}")]
    WebSocketHandshake(&'static str),
    /// No offered subprotocol (websocket) or stream protocol version (SPDY) is supported.
    #[error("unable to negotiate a {} protocol: client offered [{offered}], server supports [{supported}]", if *.spdy { "stream" } else { "websocket" })]
    NoProtocol {
        /// What the client offered, comma-separated.
        offered: String,
        /// What this server speaks, comma-separated.
        supported: String,
        /// Whether this was the SPDY negotiation (`X-Stream-Protocol-Version`).
        spdy: bool,
    },
    /// The HTTP server handed over no upgrade handle.
    #[error("the connection of this request cannot be upgraded (serve it with upgrade support)")]
    NoUpgradeSupport,
}

/// The streaming module's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl IntoResponse for Error {
    /// A `v1.Status` failure: 400 BadRequest, or 500 for a server without upgrades.
    fn into_response(self) -> Response {
        let (code, reason) = match self {
            Error::NoUpgradeSupport => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
            _ => (StatusCode::BAD_REQUEST, "BadRequest"),
        };
        let body = status::failure(code.as_u16(), reason, &self.to_string());
        let mut resp = (code, axum::Json(body)).into_response();
        if let Error::NoProtocol {
            supported,
            spdy: true,
            ..
        } = &self
        {
            for p in supported.split(", ") {
                if let Ok(v) = http::HeaderValue::from_str(p) {
                    resp.headers_mut()
                        .append("x-accepted-stream-protocol-versions", v);
                }
            }
        }
        resp
    }
}

/// Serves `kubectl exec`: answers the upgrade request (101, or a 400 `Status` naming
/// what was wrong) and runs the session on the upgraded connection in a spawned task.
///
/// `opts` usually comes from [`ExecOptions::from_query`]; the command must not be empty.
pub async fn serve_exec(
    req: Request,
    opts: ExecOptions,
    backend: Arc<dyn ExecBackend>,
) -> Response {
    if opts.command.is_empty() {
        return Error::NoCommand.into_response();
    }
    exec::serve(req, opts, backend, exec::Kind::Exec)
}

/// Serves `kubectl attach`, as [`serve_exec`] but through [`ExecBackend::attach`]; the
/// command is ignored.
pub async fn serve_attach(
    req: Request,
    opts: ExecOptions,
    backend: Arc<dyn ExecBackend>,
) -> Response {
    exec::serve(req, opts, backend, exec::Kind::Attach)
}

/// Serves `kubectl port-forward`: answers the upgrade request and forwards every
/// requested connection through `dialer` in a spawned task.
///
/// `opts.ports` (from [`PortForwardOptions::from_query`]) is required by the websocket
/// channel protocol only; SPDY clients name the port on each stream.
pub async fn serve_port_forward(
    req: Request,
    opts: PortForwardOptions,
    dialer: Arc<dyn PortForwardDialer>,
) -> Response {
    portforward::serve(req, opts, dialer)
}
