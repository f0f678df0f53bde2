//! Image references, normalised as Docker does: `busybox` is
//! `docker.io/library/busybox:latest`, `index.docker.io` is `docker.io`, a registry is the
//! first component only if it has a `.` or `:` or is `localhost`.

use super::digest::sha256_hex;
use super::{Error, Result};

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DOMAIN: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A parsed, normalised reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference {
    /// `domain/path`, e.g. `docker.io/library/busybox`.
    pub repository: String,
    /// The tag; `latest` when neither a tag nor a digest was given.
    pub tag: Option<String>,
    /// `sha256:<hex>` when the reference pins a manifest.
    pub digest: Option<String>,
}

impl Reference {
    pub(crate) fn parse(reference: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidReference {
            reference: reference.to_string(),
            reason: reason.to_string(),
        };
        if reference.is_empty() {
            return Err(invalid("empty reference"));
        }
        let (name_tag, digest) = match reference.split_once('@') {
            Some((n, d)) => {
                sha256_hex(d).map_err(|_| invalid("digest must be sha256:<64 hex>"))?;
                (n, Some(d.to_string()))
            }
            None => (reference, None),
        };
        let (name, tag) = match name_tag.rfind(':') {
            Some(i) if !name_tag[i + 1..].contains('/') => {
                (&name_tag[..i], Some(name_tag[i + 1..].to_string()))
            }
            _ => (name_tag, None),
        };
        if let Some(tag) = &tag {
            if !valid_tag(tag) {
                return Err(invalid("tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
            }
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first, rest.to_string())
            }
            _ => (DEFAULT_DOMAIN, name.to_string()),
        };
        if !valid_domain(domain) {
            return Err(invalid("invalid registry host"));
        }
        let domain = if domain == LEGACY_DOMAIN {
            DEFAULT_DOMAIN
        } else {
            domain
        };
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_PREFIX}{path}")
        } else {
            path
        };
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase"));
        }
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(invalid(
                "repository path components must be lowercase letters and digits \
                 separated by '.', '_', '__' or dashes",
            ));
        }
        let repository = format!("{domain}/{path}");
        if repository.len() > MAX_NAME_LEN {
            return Err(invalid("repository name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (tag, _) => tag,
        };
        Ok(Self {
            repository,
            tag,
            digest,
        })
    }

    /// `repository:tag`, the form the store keeps names in; `None` for a digest-only reference.
    pub(crate) fn tagged_name(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|t| format!("{}:{t}", self.repository))
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Normalise a reference the way Docker does:
/// `busybox` → `docker.io/library/busybox:latest`,
/// `quay.io/a/b@sha256:…` → unchanged, `index.docker.io/x/y` → `docker.io/x/y:latest`.
pub fn normalize_reference(reference: &str) -> Result<String> {
    Ok(Reference::parse(reference)?.to_string())
}

/// True if `s` could only be a bare tag (as OCI layouts write in
/// `org.opencontainers.image.ref.name`), not a repository reference.
pub(crate) fn is_bare_tag(s: &str) -> bool {
    !s.contains(['/', ':', '@']) && valid_tag(s)
}

fn valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    first_ok
        && tag.len() <= MAX_TAG_LEN
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

pub(crate) fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || domain.starts_with('[') => (h, Some(p)),
        _ => (domain, None),
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[') {
        v6.strip_suffix(']')
            .is_some_and(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'))
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalises_like_docker() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            ("index.docker.io/busybox:x", "docker.io/library/busybox:x"),
            (
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox:latest",
            ),
            ("bitnami/redis", "docker.io/bitnami/redis:latest"),
            ("gcr.io/pause:3.9", "gcr.io/pause:3.9"),
            ("registry.k8s.io/a/b/c:v1", "registry.k8s.io/a/b/c:v1"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/app:dev", "localhost:5000/app:dev"),
            ("10.0.0.1:5000/app", "10.0.0.1:5000/app:latest"),
            ("my-app__x/z.y-1", "docker.io/my-app__x/z.y-1:latest"),
            ("my.registry/app", "my.registry/app:latest"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_reference(input).unwrap(), want, "{input}");
        }
        assert_eq!(
            normalize_reference(&format!("busybox@{D}")).unwrap(),
            format!("docker.io/library/busybox@{D}")
        );
        assert_eq!(
            normalize_reference(&format!("quay.io/a/b:1@{D}")).unwrap(),
            format!("quay.io/a/b:1@{D}")
        );
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tagged_name(), None);
        assert_eq!(r.digest.as_deref(), Some(D));
    }

    #[test]
    fn rejects_malformed_references() {
        for bad in [
            "",
            "Busybox",
            "docker.io/Library/busybox",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:abc",
            "busybox@md5:abc",
            "a//b",
            "/busybox",
            "busybox/",
            "a..b",
            "-a",
            "a-",
            "a___b",
            "exa mple",
            "bad_host.com/x",
            "host:port/x",
        ] {
            assert!(
                matches!(Reference::parse(bad), Err(Error::InvalidReference { .. })),
                "{bad:?} accepted: {:?}",
                Reference::parse(bad)
            );
        }
        let long_tag = "x".repeat(129);
        assert!(Reference::parse(&format!("a:{long_tag}")).is_err());
        assert!(Reference::parse(&format!("a:{}", &long_tag[1..])).is_ok());
    }

    #[test]
    fn bare_tags_are_recognised() {
        assert!(is_bare_tag("latest"));
        assert!(is_bare_tag("v1.2-rc_3"));
        assert!(!is_bare_tag("busybox:latest"));
        assert!(!is_bare_tag("docker.io/library/busybox"));
        assert!(!is_bare_tag(".hidden"));
    }
}
