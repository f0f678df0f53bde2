//! String format checks, as Kubernetes' `k8s.io/apimachinery/pkg/util/validation`: each returns
//! the list of reasons the string is invalid, empty when it is valid.

use std::net::IpAddr;

pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
pub const DNS1035_LABEL_MAX_LENGTH: usize = 63;
pub const QUALIFIED_NAME_MAX_LENGTH: usize = 63;
pub const LABEL_VALUE_MAX_LENGTH: usize = 63;
pub const PORT_NAME_MAX_LENGTH: usize = 15;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case \
alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. \
'my-name', or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. \
'example.com', regex used for validation is \
'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric \
characters or '-', start with an alphabetic character, and end with an alphanumeric character \
(e.g. 'my-name', or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and \
must start and end with an alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc', \
regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric \
characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. \
'MyValue', or 'my_value', or '12345', regex used for validation is \
'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', \
'_' or '.' (e.g. 'key.name', or 'KEY_NAME', or 'key-name', regex used for validation is \
'[-._a-zA-Z0-9]+')";

const ENV_VAR_NAME_MSG: &str = "a valid environment variable name must consist of alphabetic \
characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name', or \
'MY_ENV.NAME', or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')";

pub fn max_len_message(max: usize) -> String {
    format!("must be no more than {max} characters")
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A DNS label (RFC 1123): at most 63 lower-case alphanumerics or '-', alphanumeric at the ends.
pub fn is_dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_message(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns1123_label(s) {
        errs.push(DNS1123_LABEL_MSG.to_string());
    }
    errs
}

/// A DNS subdomain (RFC 1123): dot-separated DNS labels, at most 253 characters in all.
pub fn is_dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_message(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !s.split('.').all(matches_dns1123_label) {
        errs.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    errs
}

/// A DNS-1035 label: a DNS label that starts with a letter (Service names).
pub fn is_dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1035_LABEL_MAX_LENGTH {
        errs.push(max_len_message(DNS1035_LABEL_MAX_LENGTH));
    }
    if !(matches_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()) {
        errs.push(DNS1035_LABEL_MSG.to_string());
    }
    errs
}

/// A name usable as one URL path segment, as Kubernetes requires of RBAC object names: not `.`
/// or `..`, and without `/` or `%`.
pub fn is_path_segment_name(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|bad| s.contains(*bad))
        .map(|bad| format!("may not contain '{bad}'"))
        .collect()
}

/// A qualified name (label and annotation keys, finalizers): an optional DNS subdomain prefix
/// and `/`, then a name part of at most 63 alphanumerics, '-', '_' or '.'.
pub fn is_qualified_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {QUALIFIED_NAME_MSG} with an optional DNS subdomain prefix \
                 and '/' (e.g. 'example.com/MyName')"
            )]
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX_LENGTH {
        errs.push(format!(
            "name part must be no more than {QUALIFIED_NAME_MAX_LENGTH} characters"
        ));
    }
    if !name.is_empty() && !matches_qualified_name_part(name) {
        errs.push(format!("name part {QUALIFIED_NAME_MSG}"));
    }
    errs
}

/// A label value: empty, or at most 63 alphanumerics, '-', '_' or '.', alphanumeric at the ends.
pub fn is_valid_label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(max_len_message(LABEL_VALUE_MAX_LENGTH));
    }
    if !s.is_empty() && !matches_qualified_name_part(s) {
        errs.push(LABEL_VALUE_MSG.to_string());
    }
    errs
}

/// A port number: 1 to 65535.
pub fn is_valid_port_num(port: i32) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec!["must be between 1 and 65535, inclusive".to_string()]
    }
}

/// A port name (IANA_SVC_NAME, RFC 6335): at most 15 lower-case alphanumerics or '-', at least
/// one letter, no '--', no '-' at the ends.
pub fn is_valid_port_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > PORT_NAME_MAX_LENGTH {
        errs.push(max_len_message(PORT_NAME_MAX_LENGTH));
    }
    if !s.bytes().all(|c| is_lower_alnum(c) || c == b'-') || s.is_empty() {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if s.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

fn has_chdir_prefix(s: &str) -> Vec<String> {
    match s {
        "." => vec!["must not be '.'".to_string()],
        ".." => vec!["must not be '..'".to_string()],
        _ if s.starts_with("..") => vec!["must not start with '..'".to_string()],
        _ => Vec::new(),
    }
}

/// A ConfigMap or Secret key: at most 253 alphanumerics, '-', '_' or '.', not `.` or `..`.
pub fn is_config_map_key(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_message(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if s.is_empty()
        || !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        errs.push(CONFIG_KEY_MSG.to_string());
    }
    errs.extend(has_chdir_prefix(s));
    errs
}

/// An environment variable name: `[-._a-zA-Z][-._a-zA-Z0-9]*`, not `.` or `..`.
pub fn is_env_var_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let allowed = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    let b = s.as_bytes();
    if b.is_empty() || b[0].is_ascii_digit() || !b.iter().all(|&c| allowed(c)) {
        errs.push(ENV_VAR_NAME_MSG.to_string());
    }
    errs.extend(has_chdir_prefix(s));
    errs
}

/// An IPv4 or IPv6 address.
pub fn is_valid_ip(s: &str) -> Vec<String> {
    if s.parse::<IpAddr>().is_ok() {
        Vec::new()
    } else {
        vec!["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".to_string()]
    }
}

/// A CIDR: an address, `/`, and a prefix length that fits its family.
pub fn is_valid_cidr(s: &str) -> Vec<String> {
    let valid = s.split_once('/').is_some_and(|(ip, len)| {
        let max = match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => 32,
            Ok(IpAddr::V6(_)) => 128,
            Err(_) => return false,
        };
        !len.is_empty()
            && len.bytes().all(|c| c.is_ascii_digit())
            && len.parse::<u32>().is_ok_and(|l| l <= max)
    });
    if valid {
        Vec::new()
    } else {
        vec!["must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)".to_string()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(errs: Vec<String>) -> bool {
        errs.is_empty()
    }

    #[test]
    fn dns1123_label() {
        for good in ["a", "web", "web-1", "1abc", &"a".repeat(63)] {
            assert!(ok(is_dns1123_label(good)), "{good}");
        }
        for bad in ["", "Web", "-a", "a-", "a.b", "a_b", &"a".repeat(64)] {
            assert!(!ok(is_dns1123_label(bad)), "{bad}");
        }
        assert_eq!(
            is_dns1123_label(&"a".repeat(64)),
            vec!["must be no more than 63 characters".to_string()]
        );
    }

    #[test]
    fn dns1123_subdomain() {
        for good in ["a", "example.com", "a-b.c-d.e", "1.2.3"] {
            assert!(ok(is_dns1123_subdomain(good)), "{good}");
        }
        for bad in ["", "a..b", ".a", "a.", "A.com", "a_b.com", &"a".repeat(254)] {
            assert!(!ok(is_dns1123_subdomain(bad)), "{bad}");
        }
    }

    #[test]
    fn dns1035_label() {
        assert!(ok(is_dns1035_label("web-1")));
        assert!(!ok(is_dns1035_label("1web")));
        assert!(!ok(is_dns1035_label("web.a")));
        assert!(!ok(is_dns1035_label("")));
    }

    #[test]
    fn qualified_name() {
        for good in [
            "app",
            "App_Name.v1",
            "example.com/app",
            "a/b",
            &"a".repeat(63),
        ] {
            assert!(ok(is_qualified_name(good)), "{good}");
        }
        assert_eq!(
            is_qualified_name("/a"),
            vec!["prefix part must be non-empty"]
        );
        assert_eq!(is_qualified_name("a/"), vec!["name part must be non-empty"]);
        assert_eq!(is_qualified_name(""), vec!["name part must be non-empty"]);
        assert_eq!(
            is_qualified_name(&"a".repeat(64)),
            vec!["name part must be no more than 63 characters"]
        );
        assert!(is_qualified_name("a/b/c")[0].starts_with("a qualified name must consist"));
        assert!(is_qualified_name("Example.com/a")[0].starts_with("prefix part a lowercase"));
        assert!(is_qualified_name("-a")[0].starts_with("name part must consist"));
        assert!(!ok(is_qualified_name("a b")));
    }

    #[test]
    fn label_value() {
        for good in ["", "v1", "My_Value.2", &"a".repeat(63)] {
            assert!(ok(is_valid_label_value(good)), "{good}");
        }
        for bad in ["-a", "a-", "a b", "a/b", &"a".repeat(64)] {
            assert!(!ok(is_valid_label_value(bad)), "{bad}");
        }
    }

    #[test]
    fn port_number_and_name() {
        assert!(ok(is_valid_port_num(1)));
        assert!(ok(is_valid_port_num(65535)));
        assert!(!ok(is_valid_port_num(0)));
        assert!(!ok(is_valid_port_num(65536)));
        assert!(!ok(is_valid_port_num(-1)));
        for good in ["http", "h2c", "web-80"] {
            assert!(ok(is_valid_port_name(good)), "{good}");
        }
        assert_eq!(
            is_valid_port_name("123"),
            vec!["must contain at least one letter (a-z)"]
        );
        assert_eq!(
            is_valid_port_name("a--b"),
            vec!["must not contain consecutive hyphens"]
        );
        assert_eq!(
            is_valid_port_name("-ab"),
            vec!["must not begin or end with a hyphen"]
        );
        assert_eq!(
            is_valid_port_name("abcdefghijklmnop"),
            vec![max_len_message(15)]
        );
        assert!(!ok(is_valid_port_name("HTTP")));
    }

    #[test]
    fn config_key_and_env_var() {
        for good in ["key", "KEY_NAME", "a.b-c", ".hidden"] {
            assert!(ok(is_config_map_key(good)), "{good}");
        }
        assert_eq!(is_config_map_key("."), vec!["must not be '.'"]);
        assert_eq!(is_config_map_key(".."), vec!["must not be '..'"]);
        assert_eq!(is_config_map_key("..a"), vec!["must not start with '..'"]);
        assert!(!ok(is_config_map_key("a/b")));
        assert!(!ok(is_config_map_key("")));
        assert!(ok(is_env_var_name("MY_VAR.1")));
        assert!(ok(is_env_var_name("_x")));
        assert!(!ok(is_env_var_name("1VAR")));
        assert!(!ok(is_env_var_name("A B")));
        assert!(!ok(is_env_var_name("")));
    }

    #[test]
    fn ip_and_cidr() {
        assert!(ok(is_valid_ip("10.0.0.1")));
        assert!(ok(is_valid_ip("fd00::1")));
        assert!(!ok(is_valid_ip("10.0.0")));
        assert!(!ok(is_valid_ip("010.0.0.1")));
        assert!(ok(is_valid_cidr("10.244.0.0/16")));
        assert!(ok(is_valid_cidr("fd00::/64")));
        assert!(!ok(is_valid_cidr("10.244.0.0/33")));
        assert!(!ok(is_valid_cidr("10.244.0.0")));
        assert!(!ok(is_valid_cidr("10.244.0.0/")));
        assert!(!ok(is_valid_cidr("x/8")));
    }
}
