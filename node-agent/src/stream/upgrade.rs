//! Reading the upgrade request and writing the 101 answer.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::{HeaderMap, HeaderValue, StatusCode};
use hyper::upgrade::OnUpgrade;

use super::{Error, Result};

/// The header naming SPDY stream protocol versions, offered and chosen.
pub(crate) const STREAM_PROTOCOL_VERSION: &str = "x-stream-protocol-version";

/// Which upgrade the client asked for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// `Upgrade: websocket`; `offered` are the `Sec-WebSocket-Protocol` values.
    WebSocket { key: String, offered: Vec<String> },
    /// `Upgrade: SPDY/3.1`; `offered` are the `X-Stream-Protocol-Version` values.
    Spdy { offered: Vec<String> },
}

/// All values of a header, comma lists split, blanks dropped.
fn tokens(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Tells the websocket and SPDY upgrades apart and checks the websocket handshake.
pub(crate) fn classify(headers: &HeaderMap) -> Result<Transport> {
    let upgrade = tokens(headers, "upgrade");
    let connection_upgrade = tokens(headers, "connection")
        .iter()
        .any(|t| t.eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return Err(Error::NotUpgrade);
    }
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        let version = headers
            .get("sec-websocket-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if version.trim() != "13" {
            return Err(Error::WebSocketHandshake(
                "Sec-WebSocket-Version must be 13",
            ));
        }
        let key = headers
            .get("sec-websocket-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(Error::WebSocketHandshake("Sec-WebSocket-Key is missing"))?;
        return Ok(Transport::WebSocket {
            key: key.to_string(),
            offered: tokens(headers, "sec-websocket-protocol"),
        });
    }
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        return Ok(Transport::Spdy {
            offered: tokens(headers, STREAM_PROTOCOL_VERSION),
        });
    }
    Err(Error::NotUpgrade)
}

/// The first protocol the client offered that the server supports (the client's order
/// wins, as in the kubelet's negotiation).
pub(crate) fn negotiate<P: Copy>(
    offered: &[String],
    supported: &[(&'static str, P)],
) -> Option<(&'static str, P)> {
    offered
        .iter()
        .find_map(|o| supported.iter().find(|(name, _)| name == o).copied())
}

/// Takes hyper's upgrade handle off the request.
pub(crate) fn take_upgrade(req: &mut Request) -> Result<OnUpgrade> {
    req.extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or(Error::NoUpgradeSupport)
}

fn switching(upgrade: &'static str) -> http::response::Builder {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, upgrade)
}

/// The 101 of a websocket handshake, echoing the chosen subprotocol (kubectl insists).
pub(crate) fn websocket_101(key: &str, protocol: &str) -> Response {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut b = switching("websocket").header(SEC_WEBSOCKET_ACCEPT, accept);
    if !protocol.is_empty() {
        b = b.header(SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    b.body(Body::empty())
        .expect("static response parts are valid")
}

/// The 101 of a SPDY upgrade, naming the chosen stream protocol.
pub(crate) fn spdy_101(protocol: &str) -> Response {
    switching("SPDY/3.1")
        .header(
            STREAM_PROTOCOL_VERSION,
            HeaderValue::from_str(protocol).expect("protocol names are header-safe"),
        )
        .body(Body::empty())
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn tells_websocket_from_spdy() {
        let ws = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "9cLguCLSYU7VFOzhoO1Zmw=="),
            (
                "sec-websocket-protocol",
                "v5.channel.k8s.io, v4.channel.k8s.io",
            ),
            ("sec-websocket-protocol", "channel.k8s.io"),
        ]);
        assert_eq!(
            classify(&ws).unwrap(),
            Transport::WebSocket {
                key: "9cLguCLSYU7VFOzhoO1Zmw==".into(),
                offered: vec![
                    "v5.channel.k8s.io".into(),
                    "v4.channel.k8s.io".into(),
                    "channel.k8s.io".into()
                ],
            }
        );
        let spdy = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
            ("x-stream-protocol-version", "v3.channel.k8s.io"),
        ]);
        assert_eq!(
            classify(&spdy).unwrap(),
            Transport::Spdy {
                offered: vec!["v4.channel.k8s.io".into(), "v3.channel.k8s.io".into()]
            }
        );
    }

    #[test]
    fn refuses_plain_and_broken_handshakes() {
        assert!(matches!(
            classify(&headers(&[("upgrade", "websocket")])),
            Err(Error::NotUpgrade)
        ));
        assert!(matches!(
            classify(&headers(&[("connection", "upgrade"), ("upgrade", "h2c")])),
            Err(Error::NotUpgrade)
        ));
        let no_key = headers(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
        ]);
        assert!(matches!(
            classify(&no_key),
            Err(Error::WebSocketHandshake(_))
        ));
    }

    #[test]
    fn negotiation_follows_the_client_order() {
        let supported = [("v4.channel.k8s.io", 4), ("v5.channel.k8s.io", 5)];
        let offered = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            negotiate(
                &offered(&["v5.channel.k8s.io", "v4.channel.k8s.io"]),
                &supported
            ),
            Some(("v5.channel.k8s.io", 5))
        );
        assert_eq!(
            negotiate(&offered(&["x", "v4.channel.k8s.io"]), &supported),
            Some(("v4.channel.k8s.io", 4))
        );
        assert_eq!(negotiate(&offered(&["x"]), &supported), None);
    }

    #[test]
    fn accept_key_is_rfc6455s() {
        // The example of RFC 6455 section 1.3.
        let r = websocket_101("dGhlIHNhbXBsZSBub25jZQ==", "v5.channel.k8s.io");
        assert_eq!(r.status(), 101);
        assert_eq!(
            r.headers()[SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(r.headers()[SEC_WEBSOCKET_PROTOCOL], "v5.channel.k8s.io");
        let r = websocket_101("dGhlIHNhbXBsZSBub25jZQ==", "");
        assert!(r.headers().get(SEC_WEBSOCKET_PROTOCOL).is_none());
        let r = spdy_101("v4.channel.k8s.io");
        assert_eq!(r.headers()[UPGRADE], "SPDY/3.1");
        assert_eq!(r.headers()[STREAM_PROTOCOL_VERSION], "v4.channel.k8s.io");
    }
}
