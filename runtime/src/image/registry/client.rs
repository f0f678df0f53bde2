//! One registry endpoint over HTTP: the `/v2/` probe, the auth challenge (anonymous,
//! Basic, Bearer token), and GETs that re-authenticate once when a token falls short.

use std::cell::RefCell;
use std::io::Read;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use tracing::{debug, warn};
use ureq::http::{HeaderValue, Response, StatusCode};
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
use ureq::{Agent, Body};

use super::config::{Credentials, Endpoint, HostConfig, Timeouts};
use super::PullError;

/// Tokens and error bodies larger than this are refused or cut.
const MAX_SMALL_BODY: u64 = 1 << 20;
/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 10;

/// What a request carries once the endpoint's challenge is answered.
#[derive(Debug, Clone)]
enum Auth {
    None,
    Basic(String),
    Bearer(String),
}

/// A connection to one endpoint for pulling one repository.
pub(super) struct Client {
    agent: Agent,
    pub(super) endpoint: Endpoint,
    /// The normalised reference being pulled, for messages.
    reference: String,
    /// The repository's path on the registry (`library/busybox`).
    repository: String,
    credentials: Option<Credentials>,
    auth: RefCell<Auth>,
}

impl Client {
    pub(super) fn new(
        endpoint: Endpoint,
        host: &HostConfig,
        timeouts: &Timeouts,
        reference: &str,
        repository: &str,
    ) -> Result<Client, PullError> {
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .root_certs(roots(host).map_err(|detail| PullError::Tls {
                reference: reference.to_string(),
                host: endpoint.host.clone(),
                detail,
            })?)
            .disable_verification(host.insecure_skip_verify)
            .build();
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .timeout_resolve(Some(timeouts.connect))
            .timeout_connect(Some(timeouts.connect))
            .timeout_send_request(Some(timeouts.response))
            .timeout_recv_response(Some(timeouts.response))
            .timeout_per_read(Some(timeouts.idle))
            // Redirects are followed by `send`, which knows which carry credentials.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Client {
            agent,
            endpoint,
            reference: reference.to_string(),
            repository: repository.to_string(),
            credentials: host.credentials.clone(),
            auth: RefCell::new(Auth::None),
        })
    }

    pub(super) fn host(&self) -> &str {
        &self.endpoint.host
    }

    /// `GET /v2/`: is this a registry, and what does it want for auth?
    pub(super) fn probe(&self) -> Result<(), PullError> {
        let url = self.endpoint.v2();
        let resp = self.send(&url, None, &Auth::None)?;
        match resp.status() {
            s if s.is_success() => {
                debug!(endpoint = %self.endpoint, "registry allows anonymous access");
                Ok(())
            }
            StatusCode::UNAUTHORIZED => self.answer_challenge(&resp),
            s => Err(self.status_error(&url, resp, s)),
        }
    }

    /// GET a URL under the repository (`manifests/<ref>`, `blobs/<digest>`), following
    /// redirects; on 401, answer the new challenge once and retry. The response is 2xx.
    pub(super) fn get(
        &self,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Response<Body>, PullError> {
        let url = format!("{}{}/{path}", self.endpoint.v2(), self.repository);
        let mut retried = false;
        loop {
            let auth = self.auth.borrow().clone();
            let resp = self.send(&url, accept, &auth)?;
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
            }
            if status == StatusCode::UNAUTHORIZED && !retried {
                retried = true;
                self.answer_challenge(&resp)?;
                continue;
            }
            return Err(self.status_error(&url, resp, status));
        }
    }

    fn send(
        &self,
        url: &str,
        accept: Option<&str>,
        auth: &Auth,
    ) -> Result<Response<Body>, PullError> {
        let authorization = match auth {
            Auth::None => None,
            Auth::Basic(v) => Some(v.clone()),
            Auth::Bearer(t) => Some(format!("Bearer {t}")),
        };
        self.send_following(url, &[], accept, authorization.as_deref())
    }

    /// GET `url` with `query`, following up to [`MAX_REDIRECTS`] redirects. Registries
    /// redirect blobs to storage, usually another host with a signed URL that refuses
    /// (and must not see) our credentials: `authorization` goes only to the origin
    /// (scheme, host and port) of `url`.
    fn send_following(
        &self,
        url: &str,
        query: &[(&str, String)],
        accept: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<Response<Body>, PullError> {
        let first_origin = origin(url);
        let mut current = url.to_string();
        for hop in 0..=MAX_REDIRECTS {
            let mut req = self.agent.get(&current);
            if hop == 0 {
                for (k, v) in query {
                    req = req.query(*k, v);
                }
            }
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if let Some(a) = authorization.filter(|_| origin(&current) == first_origin) {
                req = req.header("Authorization", a);
            }
            debug!(url = %current, "GET");
            let resp = req.call().map_err(|e| self.transport_error(&current, e))?;
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let Some(location) = resp.headers().get("location").and_then(|v| v.to_str().ok())
            else {
                return Ok(resp);
            };
            let next = join_location(&current, location);
            debug!(from = %current, to = %next, "following redirect");
            current = next;
        }
        Err(PullError::InvalidResponse {
            reference: self.reference.clone(),
            host: self.host().to_string(),
            detail: format!("{url}: more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// Set `self.auth` from a 401's `WWW-Authenticate`.
    fn answer_challenge(&self, resp: &Response<Body>) -> Result<(), PullError> {
        let challenges: Vec<Challenge> = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        let unauthorized = |detail: String| self.unauthorized(detail);
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let token = self.fetch_token(bearer)?;
            *self.auth.borrow_mut() = Auth::Bearer(token);
            return Ok(());
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            let Some(creds) = &self.credentials else {
                return Err(unauthorized(
                    "the registry asks for a username and password and none are configured".into(),
                ));
            };
            if matches!(*self.auth.borrow(), Auth::Basic(_)) {
                return Err(unauthorized(format!(
                    "the registry refused the credentials of user {:?}",
                    creds.username
                )));
            }
            *self.auth.borrow_mut() = Auth::Basic(basic(creds));
            return Ok(());
        }
        Err(unauthorized(match challenges.first() {
            Some(c) => format!("unsupported auth scheme {:?}", c.scheme),
            None => "401 without a WWW-Authenticate challenge".into(),
        }))
    }

    /// The Bearer token flow: GET the realm with service and scope (Basic credentials if
    /// configured); the answer's `token` or `access_token`.
    fn fetch_token(&self, c: &Challenge) -> Result<String, PullError> {
        let Some(realm) = c.param("realm") else {
            return Err(self.unauthorized("Bearer challenge without a realm".into()));
        };
        let pull_scope = format!("repository:{}:pull", self.repository);
        let mut query = vec![];
        if let Some(service) = c.param("service") {
            query.push(("service", service.to_string()));
        }
        // The challenge's own scope when it names one (a 401 on a request says what it
        // lacks); else, from the /v2/ probe, the pull scope of our repository.
        let scope = c.param("scope").unwrap_or(&pull_scope);
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            query.push(("scope", s.to_string()));
        }
        debug!(realm, ?query, "fetching a bearer token");
        let creds = self.credentials.as_ref().map(basic);
        let mut resp = self.send_following(realm, &query, None, creds.as_deref())?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let detail = read_error_detail(resp.body_mut());
            return Err(self.unauthorized(format!(
                "the token service {realm} refused {}: {status}{detail}",
                match &self.credentials {
                    Some(c) => format!("user {:?}", c.username),
                    None => "anonymous access".to_string(),
                }
            )));
        }
        if !status.is_success() {
            return Err(self.status_error(realm, resp, status));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_SMALL_BODY)
            .read_to_vec()
            .map_err(|e| self.transport_error(realm, e))?;
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| PullError::InvalidResponse {
                reference: self.reference.clone(),
                host: self.host().to_string(),
                detail: format!("token from {realm}: {e}"),
            })?;
        parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| PullError::InvalidResponse {
                reference: self.reference.clone(),
                host: self.host().to_string(),
                detail: format!("token response from {realm} has no token or access_token"),
            })
    }

    fn unauthorized(&self, detail: String) -> PullError {
        PullError::Unauthorized {
            reference: self.reference.clone(),
            host: self.host().to_string(),
            detail,
        }
    }

    /// A non-2xx answer as an error, with the registry's error codes when it sent them.
    fn status_error(&self, url: &str, mut resp: Response<Body>, status: StatusCode) -> PullError {
        let detail = read_error_detail(resp.body_mut());
        let (reference, host) = (self.reference.clone(), self.host().to_string());
        match status {
            StatusCode::NOT_FOUND => PullError::NotFound {
                reference,
                host,
                detail: if detail.is_empty() {
                    format!("{url}: 404")
                } else {
                    detail.trim_start_matches(": ").to_string()
                },
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => PullError::Unauthorized {
                reference,
                host,
                detail: format!("{status}{detail}"),
            },
            _ => PullError::Status {
                reference,
                host,
                url: url.to_string(),
                status: status.as_u16(),
                detail,
            },
        }
    }

    pub(super) fn transport_error(&self, url: &str, e: ureq::Error) -> PullError {
        let (reference, host) = (self.reference.clone(), self.host().to_string());
        match e {
            ureq::Error::Tls(_) | ureq::Error::Pem(_) => PullError::Tls {
                reference,
                host,
                detail: format!("{url}: {e}"),
            },
            ureq::Error::Io(ref io) if is_tls_error(io) => {
                let mut detail = format!("{url}: {e}");
                if detail.contains("UnknownIssuer") {
                    detail += &format!(
                        " (trust its CA with configs.\"{}\".tls.ca_file in the registries file)",
                        self.host()
                    );
                }
                PullError::Tls {
                    reference,
                    host,
                    detail,
                }
            }
            ureq::Error::BodyExceedsLimit(_) => PullError::InvalidResponse {
                reference,
                host,
                detail: format!("{url}: response too large"),
            },
            _ => PullError::Connect {
                reference,
                host,
                detail: format!("{url}: {e}"),
            },
        }
    }
}

/// `scheme://authority` of a URL (with the default port made explicit), for comparing.
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let scheme = scheme.to_ascii_lowercase();
    let authority = authority.to_ascii_lowercase();
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    match (has_port, scheme.as_str()) {
        (false, "https") => format!("{scheme}://{authority}:443"),
        (false, "http") => format!("{scheme}://{authority}:80"),
        _ => format!("{scheme}://{authority}"),
    }
}

/// Resolve a `Location` against the URL that answered with it.
fn join_location(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if let Some(net_path) = location.strip_prefix("//") {
        return format!("{scheme}://{net_path}");
    }
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}");
    }
    let path = rest[authority.len()..]
        .split(['?', '#'])
        .next()
        .unwrap_or("");
    let dir = match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    };
    format!("{scheme}://{authority}{dir}{location}")
}

/// rustls reports certificate failures as an io error wrapping its own error.
fn is_tls_error(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
}

fn basic(c: &Credentials) -> String {
    let raw = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// The system's trust roots (loaded once), plus the host's CA file.
fn roots(host: &HostConfig) -> Result<RootCerts, String> {
    static SYSTEM: OnceLock<Vec<Certificate<'static>>> = OnceLock::new();
    let system = SYSTEM.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for e in &loaded.errors {
            warn!(error = %e, "could not load a system CA certificate");
        }
        loaded
            .certs
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect()
    });
    let mut certs = system.clone();
    if let Some(path) = &host.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("ca file {}: {e}", path.display()))?;
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(e) => return Err(format!("ca file {}: {e}", path.display())),
            }
        }
    }
    Ok(RootCerts::Specific(Arc::new(certs)))
}

/// `: CODE: message; CODE: message` from an OCI error body, or `: <text>` (cut short)
/// from another body; empty when there is none.
fn read_error_detail(body: &mut Body) -> String {
    let mut raw = Vec::new();
    let _ = body.as_reader().take(MAX_SMALL_BODY).read_to_end(&mut raw);
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<OciError>,
    }
    #[derive(serde::Deserialize)]
    struct OciError {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(&raw) {
        let parts: Vec<String> = e
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code, e.message),
                (false, true) => e.code.clone(),
                _ => e.message.clone(),
            })
            .collect();
        if !parts.is_empty() {
            return format!(": {}", parts.join("; "));
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {}", text.chars().take(200).collect::<String>())
    }
}

/// The media type of a response (without parameters).
pub(super) fn content_type(resp: &Response<Body>) -> Option<String> {
    resp.headers()
        .get("content-type")
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        .filter(|v| !v.is_empty())
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Challenge {
    /// Lowercase: `basic`, `bearer`.
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parse `Bearer realm="…",service="…", Basic realm="x"` (RFC 7235: a scheme, then
/// comma-separated `key=value` or `key="quoted"` params; a token without `=` after a
/// comma starts the next challenge).
pub(super) fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let s = header.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < s.len() && (s[*i] == b' ' || s[*i] == b'\t' || s[*i] == b',') {
            *i += 1;
        }
    };
    while i < s.len() {
        skip_ws(&mut i);
        let start = i;
        while i < s.len() && !matches!(s[i], b' ' | b'\t' | b',' | b'=') {
            i += 1;
        }
        if start == i {
            break;
        }
        let token = &header[start..i];
        let mut j = i;
        while j < s.len() && (s[j] == b' ' || s[j] == b'\t') {
            j += 1;
        }
        if j < s.len() && s[j] == b'=' && !out.is_empty() {
            // key=value of the current challenge.
            i = j + 1;
            while i < s.len() && (s[i] == b' ' || s[i] == b'\t') {
                i += 1;
            }
            let value = if i < s.len() && s[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < s.len() && s[i] != b'"' {
                    if s[i] == b'\\' && i + 1 < s.len() {
                        i += 1;
                    }
                    let ch = header[i..].chars().next().unwrap_or('\u{fffd}');
                    v.push(ch);
                    i += ch.len_utf8();
                }
                i += 1;
                v
            } else {
                let vs = i;
                while i < s.len() && s[i] != b',' && s[i] != b' ' {
                    i += 1;
                }
                header[vs..i].to_string()
            };
            if let Some(c) = out.last_mut() {
                c.params.push((token.to_string(), value));
            }
        } else {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: Vec::new(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_targets_and_origins() {
        let base = "https://reg.io/v2/a/blobs/sha256:x?y=1";
        assert_eq!(
            join_location(base, "https://s3.io/b?sig=1"),
            "https://s3.io/b?sig=1"
        );
        assert_eq!(join_location(base, "/store/b"), "https://reg.io/store/b");
        assert_eq!(join_location(base, "//cdn.io/b"), "https://cdn.io/b");
        assert_eq!(
            join_location(base, "other"),
            "https://reg.io/v2/a/blobs/other"
        );
        assert_eq!(origin(base), "https://reg.io:443");
        assert_eq!(origin("https://REG.io:443/x"), origin(base));
        assert_ne!(origin("http://reg.io/x"), origin(base));
        assert_ne!(
            origin("http://127.0.0.1:5000/"),
            origin("http://127.0.0.1:5001/")
        );
    }

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/busybox:pull"));

        let c = parse_challenges(
            r#"Basic realm="Registry Realm", Bearer realm=https://t/x , service = "a\"b""#,
        );
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("REALM"), Some("Registry Realm"));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("https://t/x"));
        assert_eq!(c[1].param("service"), Some("a\"b"));
        assert!(parse_challenges("").is_empty());
        assert_eq!(parse_challenges("Basic")[0].scheme, "basic");
    }
}
