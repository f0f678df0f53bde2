//! Who is calling and what they may do.
//!
//! Authentication: a client certificate signed by the cluster CA (CN is the user, O the
//! groups) or a bearer token: from the token file (`token,user,uid,"group1,group2"`, the
//! Kubernetes static token file format), a ServiceAccount token, or a
//! [bootstrap token](crate::bootstrap_token). Anonymous requests are refused with 401.
//!
//! Authorisation, in order: members of `system:masters` may do anything; node identities
//! (`system:node:<name>` in `system:nodes`) pass the [node rules](node_decision); everyone
//! else is checked against RBAC Roles, ClusterRoles and their bindings, read from the watch
//! cache.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::cache::WatchCache;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn new(name: &str, groups: &[&str]) -> Self {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        Self {
            name: name.to_string(),
            uid: String::new(),
            groups,
        }
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The node name of a node identity.
    pub fn node_name(&self) -> Option<&str> {
        if !self.in_group("system:nodes") {
            return None;
        }
        self.name.strip_prefix("system:node:")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("token file {path}: {reason}")]
    TokenFile { path: String, reason: String },
}

/// Bearer tokens from a static token file.
#[derive(Debug, Default, Clone)]
pub struct Tokens {
    by_token: HashMap<String, User>,
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let err = |reason: String| Error::TokenFile {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Self::parse(&text).map_err(err)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut by_token = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line);
            if fields.len() < 3 || fields[0].is_empty() || fields[1].is_empty() {
                return Err(format!(
                    "line {}: expected token,user,uid[,\"group1,group2\"]",
                    i + 1
                ));
            }
            let groups: Vec<&str> = fields
                .get(3)
                .map(|g| g.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default();
            let mut user = User::new(&fields[1], &groups);
            user.uid = fields[2].clone();
            by_token.insert(fields[0].clone(), user);
        }
        Ok(Self { by_token })
    }

    pub fn authenticate(&self, token: &str) -> Option<User> {
        self.by_token.get(token).cloned()
    }
}

/// Splits one CSV line, honouring double quotes.
fn split_csv(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            c => out.last_mut().expect("non-empty").push(c),
        }
    }
    out
}

/// The user a client certificate names: CN is the user name, each O a group.
pub fn user_from_cert(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
    Some(User::new(&name, &refs))
}

/// What a request wants to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attributes {
    Resource {
        verb: String,
        group: String,
        resource: String,
        subresource: String,
        namespace: String,
        name: String,
    },
    NonResource {
        verb: String,
        path: String,
    },
}

impl Attributes {
    /// Kubernetes' words for a refusal.
    pub fn forbidden_message(&self, user: &User) -> String {
        match self {
            Attributes::Resource {
                verb,
                group,
                resource,
                subresource,
                namespace,
                name,
            } => {
                let what = if name.is_empty() {
                    resource.clone()
                } else {
                    format!("{resource} \"{name}\"")
                };
                let mut res = resource.clone();
                if !subresource.is_empty() {
                    res = format!("{res}/{subresource}");
                }
                let scope = if namespace.is_empty() {
                    "at the cluster scope".to_string()
                } else {
                    format!("in the namespace \"{namespace}\"")
                };
                format!(
                    "{what} is forbidden: User \"{}\" cannot {verb} resource \"{res}\" in API group \"{group}\" {scope}",
                    user.name
                )
            }
            Attributes::NonResource { verb, path } => format!(
                "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
                user.name
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

/// The chain of authorisers.
pub struct Authorizer {
    cache: Arc<WatchCache>,
}

impl Authorizer {
    pub fn new(cache: Arc<WatchCache>) -> Self {
        Self { cache }
    }

    pub fn authorize(&self, user: &User, attrs: &Attributes) -> Decision {
        if user.in_group("system:masters") {
            return Decision::Allow;
        }
        if let Some(node) = user.node_name() {
            let lookups = NodeLookups {
                pod_node: &|ns, name| self.pod_node(ns, name),
                csr_requester: &|name| self.csr_requester(name),
            };
            if node_decision(node, attrs, &lookups) == Decision::Allow {
                return Decision::Allow;
            }
        }
        if self.rbac(user, attrs) {
            Decision::Allow
        } else {
            Decision::Deny
        }
    }

    fn pod_node(&self, namespace: &str, name: &str) -> Option<String> {
        let key = format!("/registry/core/pods/{namespace}/{name}");
        let pod = self.cache.get(&key)?;
        pod.object
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    fn csr_requester(&self, name: &str) -> Option<String> {
        let key = format!("{}{name}", crate::certificates::PREFIX);
        let csr = self.cache.get(&key)?;
        csr.object
            .pointer("/spec/username")
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    fn rbac(&self, user: &User, attrs: &Attributes) -> bool {
        let namespace = match attrs {
            Attributes::Resource { namespace, .. } => namespace.as_str(),
            Attributes::NonResource { .. } => "",
        };
        let (crbs, _) = self.cache.list(
            "/registry/rbac.authorization.k8s.io/clusterrolebindings/",
            None,
        );
        for b in crbs {
            if binds(&b.object, user, "") && self.role_allows(&b.object, "", attrs) {
                return true;
            }
        }
        if namespace.is_empty() {
            return false;
        }
        let (rbs, _) = self.cache.list(
            &format!("/registry/rbac.authorization.k8s.io/rolebindings/{namespace}/"),
            None,
        );
        rbs.iter().any(|b| {
            binds(&b.object, user, namespace) && self.role_allows(&b.object, namespace, attrs)
        })
    }

    fn role_allows(&self, binding: &Value, namespace: &str, attrs: &Attributes) -> bool {
        let kind = binding.pointer("/roleRef/kind").and_then(Value::as_str);
        let name = binding
            .pointer("/roleRef/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let key = match kind {
            Some("ClusterRole") => {
                format!("/registry/rbac.authorization.k8s.io/clusterroles/{name}")
            }
            Some("Role") if !namespace.is_empty() => {
                format!("/registry/rbac.authorization.k8s.io/roles/{namespace}/{name}")
            }
            _ => return false,
        };
        let Some(role) = self.cache.get(&key) else {
            return false;
        };
        role.object
            .get("rules")
            .and_then(Value::as_array)
            .is_some_and(|rules| rules.iter().any(|r| rule_allows(r, attrs)))
    }
}

/// Whether a binding names the user (directly, through a group, or as a service account).
fn binds(binding: &Value, user: &User, binding_ns: &str) -> bool {
    let Some(subjects) = binding.get("subjects").and_then(Value::as_array) else {
        return false;
    };
    subjects.iter().any(|s| {
        let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = s.get("name").and_then(Value::as_str).unwrap_or("");
        match kind {
            "User" => name == user.name,
            "Group" => user.in_group(name),
            "ServiceAccount" => {
                let ns = s
                    .get("namespace")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .unwrap_or(binding_ns);
                user.name == format!("system:serviceaccount:{ns}:{name}")
            }
            _ => false,
        }
    })
}

fn list_has(rule: &Value, field: &str, want: &str) -> bool {
    rule.get(field)
        .and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|v| v == "*" || v == want))
}

/// One RBAC policy rule against a request.
pub fn rule_allows(rule: &Value, attrs: &Attributes) -> bool {
    match attrs {
        Attributes::Resource {
            verb,
            group,
            resource,
            subresource,
            name,
            ..
        } => {
            if !list_has(rule, "verbs", verb) || !list_has(rule, "apiGroups", group) {
                return false;
            }
            let resources = rule.get("resources").and_then(Value::as_array);
            let res_ok = resources.is_some_and(|l| {
                l.iter().filter_map(Value::as_str).any(|r| {
                    if subresource.is_empty() {
                        r == "*" || r == resource
                    } else {
                        r == "*"
                            || *r == format!("{resource}/{subresource}")
                            || *r == format!("*/{subresource}")
                    }
                })
            });
            if !res_ok {
                return false;
            }
            match rule.get("resourceNames").and_then(Value::as_array) {
                Some(names) if !names.is_empty() => names.iter().any(|n| n == name.as_str()),
                _ => true,
            }
        }
        Attributes::NonResource { verb, path } => {
            if !list_has(rule, "verbs", verb) {
                return false;
            }
            rule.get("nonResourceURLs")
                .and_then(Value::as_array)
                .is_some_and(|l| {
                    l.iter().filter_map(Value::as_str).any(|u| {
                        u == "*"
                            || u == path
                            || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
                    })
                })
        }
    }
}

/// What the node authoriser looks up in cluster state.
pub struct NodeLookups<'a> {
    /// The node a pod (namespace, name) is bound to.
    pub pod_node: &'a dyn Fn(&str, &str) -> Option<String>,
    /// Who asked for a CertificateSigningRequest (its `spec.username`).
    pub csr_requester: &'a dyn Fn(&str) -> Option<String>,
}

/// The node authoriser: what a node's agent may do.
pub fn node_decision(node: &str, attrs: &Attributes, lookups: &NodeLookups<'_>) -> Decision {
    let pod_node = lookups.pod_node;
    let Attributes::Resource {
        verb,
        group,
        resource,
        subresource,
        namespace,
        name,
    } = attrs
    else {
        return Decision::Allow;
    };
    let read = matches!(verb.as_str(), "get" | "list" | "watch");
    let allow = match (group.as_str(), resource.as_str(), subresource.as_str()) {
        // What an agent reads to run its pods and proxy services.
        (
            "",
            "nodes" | "pods" | "services" | "endpoints" | "configmaps" | "secrets" | "namespaces",
            "",
        ) if read => true,
        ("discovery.k8s.io", "endpointslices", "") if read => true,
        // Its own Node object and status only.
        ("", "nodes", "" | "status") => {
            (verb == "create" && subresource.is_empty()) || (!name.is_empty() && name == node)
        }
        // Its own heartbeat Lease.
        ("coordination.k8s.io", "leases", "") => {
            namespace == "kube-node-lease" && (verb == "create" || name == node || read)
        }
        // The status of, and deletion of, pods bound to it.
        ("", "pods", "status") | ("", "pods", "")
            if matches!(verb.as_str(), "update" | "patch" | "delete") =>
        {
            pod_node(namespace, name).as_deref() == Some(node)
        }
        ("", "events", "") | ("events.k8s.io", "events", "") => {
            matches!(verb.as_str(), "create" | "update" | "patch")
        }
        // Certificate requests: new ones, and reading its own (by name, or a list or watch
        // narrowed to its name).
        ("certificates.k8s.io", "certificatesigningrequests", "") => {
            verb == "create"
                || (read
                    && !name.is_empty()
                    && (lookups.csr_requester)(name).as_deref()
                        == Some(format!("system:node:{node}").as_str()))
        }
        _ => false,
    };
    if allow {
        Decision::Allow
    } else {
        Decision::Deny
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn res(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
        Attributes::Resource {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn token_file_lines() {
        let t = Tokens::parse("# comment\nabc,alice,1,\"dev,ops\"\nxyz,bob,2\n").unwrap();
        let alice = t.authenticate("abc").unwrap();
        assert_eq!(alice.name, "alice");
        assert!(alice.in_group("dev") && alice.in_group("ops"));
        assert!(alice.in_group("system:authenticated"));
        assert_eq!(t.authenticate("xyz").unwrap().name, "bob");
        assert!(t.authenticate("nope").is_none());
        assert!(Tokens::parse("onlytoken\n").is_err());
    }

    #[test]
    fn rules_match_verbs_groups_resources_and_names() {
        let rule = json!({"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"],
            "verbs": ["get", "update"], "resourceNames": ["web"]});
        assert!(rule_allows(
            &rule,
            &res("get", "apps", "deployments", "", "d", "web")
        ));
        assert!(rule_allows(
            &rule,
            &res("update", "apps", "deployments", "scale", "d", "web")
        ));
        assert!(!rule_allows(
            &rule,
            &res("get", "apps", "deployments", "", "d", "db")
        ));
        assert!(!rule_allows(
            &rule,
            &res("delete", "apps", "deployments", "", "d", "web")
        ));
        assert!(!rule_allows(
            &rule,
            &res("get", "", "deployments", "", "d", "web")
        ));
        assert!(!rule_allows(
            &rule,
            &res("get", "apps", "deployments", "status", "d", "web")
        ));
        let all = json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]});
        assert!(rule_allows(
            &all,
            &res("deletecollection", "x", "y", "z", "", "")
        ));
        let urls = json!({"nonResourceURLs": ["/apis/*", "/version"], "verbs": ["get"]});
        let nr = |p: &str| Attributes::NonResource {
            verb: "get".into(),
            path: p.into(),
        };
        assert!(rule_allows(&urls, &nr("/apis/apps/v1")));
        assert!(rule_allows(&urls, &nr("/version")));
        assert!(!rule_allows(&urls, &nr("/api/v1")));
    }

    #[test]
    fn bindings_match_users_groups_and_service_accounts() {
        let b = json!({"subjects": [{"kind": "User", "name": "alice"},
            {"kind": "Group", "name": "dev"}, {"kind": "ServiceAccount", "name": "ci"}]});
        assert!(binds(&b, &User::new("alice", &[]), "ns"));
        assert!(binds(&b, &User::new("carol", &["dev"]), "ns"));
        assert!(binds(
            &b,
            &User::new("system:serviceaccount:ns:ci", &[]),
            "ns"
        ));
        assert!(!binds(
            &b,
            &User::new("system:serviceaccount:other:ci", &[]),
            "ns"
        ));
        assert!(!binds(&b, &User::new("bob", &[]), "ns"));
    }

    #[test]
    fn nodes_write_only_their_own_objects() {
        let bound = |_: &str, name: &str| match name {
            "mine" => Some("n1".to_string()),
            "theirs" => Some("n2".to_string()),
            _ => None,
        };
        let csrs = |name: &str| match name {
            "csr-mine" => Some("system:node:n1".to_string()),
            "csr-theirs" => Some("system:node:n2".to_string()),
            _ => None,
        };
        let lookups = NodeLookups {
            pod_node: &bound,
            csr_requester: &csrs,
        };
        let d = |a: Attributes| node_decision("n1", &a, &lookups);
        let csr = "certificatesigningrequests";
        let certs = "certificates.k8s.io";
        assert_eq!(d(res("create", certs, csr, "", "", "")), Decision::Allow);
        assert_eq!(
            d(res("get", certs, csr, "", "", "csr-mine")),
            Decision::Allow
        );
        assert_eq!(
            d(res("watch", certs, csr, "", "", "csr-mine")),
            Decision::Allow
        );
        assert_eq!(
            d(res("get", certs, csr, "", "", "csr-theirs")),
            Decision::Deny
        );
        assert_eq!(d(res("list", certs, csr, "", "", "")), Decision::Deny);
        assert_eq!(
            d(res("update", certs, csr, "approval", "", "csr-mine")),
            Decision::Deny
        );
        assert_eq!(
            d(res("update", "", "nodes", "status", "", "n1")),
            Decision::Allow
        );
        assert_eq!(
            d(res("update", "", "nodes", "status", "", "n2")),
            Decision::Deny
        );
        assert_eq!(d(res("patch", "", "nodes", "", "", "n2")), Decision::Deny);
        assert_eq!(
            d(res(
                "update",
                "coordination.k8s.io",
                "leases",
                "",
                "kube-node-lease",
                "n1"
            )),
            Decision::Allow
        );
        assert_eq!(
            d(res(
                "update",
                "coordination.k8s.io",
                "leases",
                "",
                "kube-node-lease",
                "n2"
            )),
            Decision::Deny
        );
        assert_eq!(
            d(res("update", "", "pods", "status", "default", "mine")),
            Decision::Allow
        );
        assert_eq!(
            d(res("update", "", "pods", "status", "default", "theirs")),
            Decision::Deny
        );
        assert_eq!(
            d(res("delete", "", "pods", "", "default", "theirs")),
            Decision::Deny
        );
        assert_eq!(d(res("watch", "", "pods", "", "", "")), Decision::Allow);
        assert_eq!(
            d(res("create", "", "pods", "", "default", "")),
            Decision::Deny
        );
        assert_eq!(
            d(res("delete", "apps", "deployments", "", "default", "web")),
            Decision::Deny
        );
    }

    #[test]
    fn node_identity_needs_the_nodes_group() {
        assert_eq!(
            User::new("system:node:n1", &["system:nodes"]).node_name(),
            Some("n1")
        );
        assert_eq!(User::new("system:node:n1", &[]).node_name(), None);
    }
}
