//! `paths` of a group-version document: the collection, item and subresource URLs of each
//! resource, with operations shaped like kube-apiserver's (operation ids, `x-kubernetes-action`,
//! `x-kubernetes-group-version-kind`, query parameters, request and response bodies).
//!
//! kubectl's strict validation (`--validate=strict`, the default of `apply` and `create`) looks
//! for a `patch` operation whose GVK extension names the kind and whose own `parameters` hold
//! `{"name": "fieldValidation", "in": "query"}`; every patch, post and put here has it.

use berth_api::{ResourceInfo, Scope, Subresource};
use serde_json::{json, Map, Value};

use super::schemas::{self, DELETE_OPTIONS, PATCH, REF_PREFIX, STATUS};

/// The `paths` object for these resources, and the schema names its operations refer to.
pub(crate) fn paths(
    group: &str,
    version: &str,
    resources: &[&ResourceInfo],
) -> (Value, Vec<String>) {
    let mut paths = Map::new();
    let mut refs = vec![
        DELETE_OPTIONS.to_string(),
        PATCH.to_string(),
        STATUS.to_string(),
    ];
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    for info in resources {
        let r = Resource::new(info);
        refs.extend(r.kind_schema.iter().cloned());
        refs.extend(r.list_schema.iter().cloned());
        let plural = info.plural;
        match info.scope {
            Scope::Namespaced => {
                let collection = format!("{prefix}/namespaces/{{namespace}}/{plural}");
                paths.insert(collection.clone(), r.collection_item(true));
                paths.insert(format!("{collection}/{{name}}"), r.item(true));
                for sub in info.subresources {
                    let (path, sub_refs) = r.subresource(sub, true);
                    refs.extend(sub_refs);
                    paths.insert(format!("{collection}/{{name}}/{}", sub.name), path);
                }
                if info.verbs.contains(&"list") {
                    paths.insert(format!("{prefix}/{plural}"), r.all_namespaces());
                }
            }
            Scope::Cluster => {
                let collection = format!("{prefix}/{plural}");
                paths.insert(collection.clone(), r.collection_item(false));
                paths.insert(format!("{collection}/{{name}}"), r.item(false));
                for sub in info.subresources {
                    let (path, sub_refs) = r.subresource(sub, false);
                    refs.extend(sub_refs);
                    paths.insert(format!("{collection}/{{name}}/{}", sub.name), path);
                }
            }
        }
    }
    (Value::Object(paths), refs)
}

/// Upper camel case of a group for operation ids: `""` is `Core`, `apps` is `Apps`,
/// `rbac.authorization.k8s.io` is `RbacAuthorization`.
fn group_id(group: &str) -> String {
    if group.is_empty() {
        return "Core".to_string();
    }
    group
        .trim_end_matches(".k8s.io")
        .split('.')
        .map(upper_first)
        .collect()
}

/// The `tags` entry: `core_v1`, `apps_v1`, `rbacAuthorization_v1`.
fn tag(group: &str, version: &str) -> String {
    let id = group_id(group);
    let mut chars = id.chars();
    let lower: String = chars
        .next()
        .map(|c| c.to_ascii_lowercase())
        .into_iter()
        .chain(chars)
        .collect();
    format!("{lower}_{version}")
}

fn upper_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("{REF_PREFIX}{name}") })
}

/// One resource's share of the document.
struct Resource<'a> {
    info: &'a ResourceInfo,
    kind_schema: Option<String>,
    list_schema: Option<String>,
    /// `CoreV1`, `AppsV1`: the middle of every operation id.
    id: String,
    tag: String,
}

/// What an operation does, which decides its id prefix, parameters and bodies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    List,
    Create,
    DeleteCollection,
    Read,
    Replace,
    Patch,
    Delete,
}

impl Action {
    fn kubernetes(self) -> &'static str {
        match self {
            Action::List => "list",
            Action::Create => "post",
            Action::DeleteCollection => "deletecollection",
            Action::Read => "get",
            Action::Replace => "put",
            Action::Patch => "patch",
            Action::Delete => "delete",
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Action::List => "list",
            Action::Create => "create",
            Action::DeleteCollection | Action::Delete => "delete",
            Action::Read => "read",
            Action::Replace => "replace",
            Action::Patch => "patch",
        }
    }
}

impl<'a> Resource<'a> {
    fn new(info: &'a ResourceInfo) -> Self {
        Resource {
            info,
            kind_schema: schemas::kind_schema(info.group, info.version, info.kind),
            list_schema: schemas::list_schema(info.group, info.version, info.kind),
            id: format!("{}{}", group_id(info.group), upper_first(info.version)),
            tag: tag(info.group, info.version),
        }
    }

    fn can(&self, verb: &str) -> bool {
        self.info.verbs.contains(&verb)
    }

    fn gvk(&self) -> Value {
        json!({"group": self.info.group, "version": self.info.version, "kind": self.info.kind})
    }

    /// A response or request body schema: a `$ref` when the kind has a schema, else any object.
    fn body(&self, schema: Option<&str>) -> Value {
        match schema {
            Some(name) => schema_ref(name),
            None => json!({"type": "object"}),
        }
    }

    /// `Namespaced` in operation ids of namespaced paths.
    fn scope_id(&self, namespaced: bool) -> &'static str {
        if namespaced {
            "Namespaced"
        } else {
            ""
        }
    }

    fn path_params(&self, namespaced: bool, item: bool) -> Value {
        let mut params = Vec::new();
        if item {
            params.push(json!({
                "name": "name",
                "in": "path",
                "required": true,
                "description": format!("name of the {}", self.info.kind),
                "schema": {"type": "string", "uniqueItems": true},
            }));
        }
        if namespaced {
            params.push(json!({
                "name": "namespace",
                "in": "path",
                "required": true,
                "description": "object name and auth scope, such as for teams and projects",
                "schema": {"type": "string", "uniqueItems": true},
            }));
        }
        params.push(query("pretty", "string", PRETTY));
        Value::Array(params)
    }

    fn operation(
        &self,
        action: Action,
        namespaced: bool,
        description: String,
    ) -> Map<String, Value> {
        let kind = self.info.kind;
        let id = match action {
            Action::DeleteCollection => {
                format!(
                    "delete{}Collection{}{kind}",
                    self.id,
                    self.scope_id(namespaced)
                )
            }
            _ => format!(
                "{}{}{}{kind}",
                action.id_prefix(),
                self.id,
                self.scope_id(namespaced)
            ),
        };
        let item = self.kind_schema.as_deref();
        let mut op = Map::new();
        op.insert("description".into(), json!(description));
        op.insert("operationId".into(), json!(id));
        op.insert("tags".into(), json!([self.tag]));
        op.insert("parameters".into(), Value::Array(action_params(action)));
        match action {
            Action::Create | Action::Replace => {
                op.insert("requestBody".into(), json_body(self.body(item)));
            }
            Action::Patch => {
                op.insert("requestBody".into(), patch_body());
            }
            Action::Delete | Action::DeleteCollection => {
                op.insert("requestBody".into(), any_body(schema_ref(DELETE_OPTIONS)));
            }
            Action::List | Action::Read => {}
        }
        let responses = match action {
            Action::List => json!({
                "200": ok(self.body(self.list_schema.as_deref()), true),
                "401": unauthorized(),
            }),
            Action::Read => json!({"200": ok(self.body(item), false), "401": unauthorized()}),
            Action::Create => json!({
                "200": ok(self.body(item), false),
                "201": response("Created", self.body(item)),
                "202": response("Accepted", self.body(item)),
                "401": unauthorized(),
            }),
            Action::Replace | Action::Patch => json!({
                "200": ok(self.body(item), false),
                "201": response("Created", self.body(item)),
                "401": unauthorized(),
            }),
            Action::Delete => json!({
                "200": ok(self.body(item), false),
                "202": response("Accepted", self.body(item)),
                "401": unauthorized(),
            }),
            Action::DeleteCollection => json!({
                "200": ok(schema_ref(STATUS), false),
                "401": unauthorized(),
            }),
        };
        op.insert("responses".into(), responses);
        op.insert("x-kubernetes-action".into(), json!(action.kubernetes()));
        op.insert("x-kubernetes-group-version-kind".into(), self.gvk());
        op
    }

    /// `.../pods`: list, create, delete collection.
    fn collection_item(&self, namespaced: bool) -> Value {
        let kind = self.info.kind;
        let mut path = Map::new();
        if self.can("list") {
            let op = self.operation(
                Action::List,
                namespaced,
                format!("list or watch objects of kind {kind}"),
            );
            path.insert("get".into(), Value::Object(op));
        }
        if self.can("create") {
            let op = self.operation(Action::Create, namespaced, format!("create a {kind}"));
            path.insert("post".into(), Value::Object(op));
        }
        if self.can("deletecollection") {
            let op = self.operation(
                Action::DeleteCollection,
                namespaced,
                format!("delete collection of {kind}"),
            );
            path.insert("delete".into(), Value::Object(op));
        }
        path.insert("parameters".into(), self.path_params(namespaced, false));
        Value::Object(path)
    }

    /// `.../pods/{name}`: read, replace, patch, delete.
    fn item(&self, namespaced: bool) -> Value {
        let kind = self.info.kind;
        let mut path = Map::new();
        let ops = [
            (
                "get",
                "get",
                Action::Read,
                format!("read the specified {kind}"),
            ),
            (
                "update",
                "put",
                Action::Replace,
                format!("replace the specified {kind}"),
            ),
            (
                "patch",
                "patch",
                Action::Patch,
                format!("partially update the specified {kind}"),
            ),
            (
                "delete",
                "delete",
                Action::Delete,
                format!("delete a {kind}"),
            ),
        ];
        for (verb, method, action, description) in ops {
            if self.can(verb) {
                let op = self.operation(action, namespaced, description);
                path.insert(method.into(), Value::Object(op));
            }
        }
        path.insert("parameters".into(), self.path_params(namespaced, true));
        Value::Object(path)
    }

    /// `/api/v1/pods`: the list across namespaces.
    fn all_namespaces(&self) -> Value {
        let kind = self.info.kind;
        let mut op = self.operation(
            Action::List,
            false,
            format!("list or watch objects of kind {kind}"),
        );
        op.insert(
            "operationId".into(),
            json!(format!("list{}{kind}ForAllNamespaces", self.id)),
        );
        json!({ "get": op, "parameters": [query("pretty", "string", PRETTY)] })
    }

    /// `.../pods/{name}/<sub>`, with the schemas it refers to.
    fn subresource(&self, sub: &Subresource, namespaced: bool) -> (Value, Vec<String>) {
        let kind = self.info.kind;
        let sub_id = upper_first(sub.name);
        let scope = self.scope_id(namespaced);
        let gvk = json!({"group": sub.group, "version": sub.version, "kind": sub.kind});
        let schema =
            if sub.group == self.info.group && sub.version == self.info.version && sub.kind == kind
            {
                self.kind_schema.clone()
            } else {
                schemas::kind_schema(sub.group, sub.version, sub.kind)
            };
        let mut path = Map::new();
        let connect = matches!(sub.name, "exec" | "attach" | "portforward" | "proxy");
        let can = |verb: &str| sub.verbs.contains(&verb);
        let finish = |mut op: Map<String, Value>, action: &str| {
            op.insert("tags".into(), json!([self.tag]));
            op.insert("x-kubernetes-action".into(), json!(action));
            op.insert("x-kubernetes-group-version-kind".into(), gvk.clone());
            Value::Object(op)
        };

        if connect {
            for (verb, method, method_id) in [("get", "get", "Get"), ("create", "post", "Post")] {
                if !can(verb) {
                    continue;
                }
                let mut op = Map::new();
                op.insert(
                    "description".into(),
                    json!(format!(
                        "connect {} requests to {} of {kind}",
                        method.to_uppercase(),
                        sub.name
                    )),
                );
                op.insert(
                    "operationId".into(),
                    json!(format!(
                        "connect{}{method_id}{scope}{kind}{sub_id}",
                        self.id
                    )),
                );
                op.insert("parameters".into(), Value::Array(connect_params(sub.name)));
                op.insert(
                    "responses".into(),
                    json!({
                        "200": {"description": "OK", "content": {"*/*": {"schema": {"type": "string"}}}},
                        "401": unauthorized(),
                    }),
                );
                path.insert(method.into(), finish(op, "connect"));
            }
        } else if sub.name == "log" {
            if can("get") {
                let mut op = Map::new();
                op.insert(
                    "description".into(),
                    json!(format!("read log of the specified {kind}")),
                );
                op.insert(
                    "operationId".into(),
                    json!(format!("read{}{scope}{kind}Log", self.id)),
                );
                op.insert("parameters".into(), Value::Array(log_params()));
                op.insert(
                    "responses".into(),
                    json!({
                        "200": {"description": "OK", "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/json": {"schema": {"type": "string"}},
                        }},
                        "401": unauthorized(),
                    }),
                );
                path.insert("get".into(), finish(op, "get"));
            }
        } else {
            let body = self.body(schema.as_deref());
            let ops = [
                (
                    "get",
                    "get",
                    Action::Read,
                    format!("read {} of the specified {kind}", sub.name),
                ),
                (
                    "update",
                    "put",
                    Action::Replace,
                    format!("replace {} of the specified {kind}", sub.name),
                ),
                (
                    "patch",
                    "patch",
                    Action::Patch,
                    format!("partially update {} of the specified {kind}", sub.name),
                ),
                (
                    "create",
                    "post",
                    Action::Create,
                    format!("create {} of a {kind}", sub.name),
                ),
            ];
            for (verb, method, action, description) in ops {
                if !can(verb) {
                    continue;
                }
                let mut op = Map::new();
                op.insert("description".into(), json!(description));
                op.insert(
                    "operationId".into(),
                    json!(format!(
                        "{}{}{scope}{kind}{sub_id}",
                        action.id_prefix(),
                        self.id
                    )),
                );
                op.insert("parameters".into(), Value::Array(action_params(action)));
                match action {
                    Action::Patch => {
                        op.insert("requestBody".into(), patch_body());
                    }
                    Action::Replace | Action::Create => {
                        op.insert("requestBody".into(), json_body(body.clone()));
                    }
                    _ => {}
                }
                let responses = match action {
                    Action::Read => json!({"200": ok(body.clone(), false), "401": unauthorized()}),
                    Action::Create => json!({
                        "200": ok(body.clone(), false),
                        "201": response("Created", body.clone()),
                        "202": response("Accepted", body.clone()),
                        "401": unauthorized(),
                    }),
                    _ => json!({
                        "200": ok(body.clone(), false),
                        "201": response("Created", body.clone()),
                        "401": unauthorized(),
                    }),
                };
                op.insert("responses".into(), responses);
                path.insert(method.into(), finish(op, action.kubernetes()));
            }
        }
        path.insert("parameters".into(), self.path_params(namespaced, true));
        (Value::Object(path), schema.into_iter().collect())
    }
}

const PRETTY: &str = "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).";
const DRY_RUN: &str = "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed";
const FIELD_MANAGER: &str = "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.";
const FIELD_VALIDATION: &str = "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.";
const FORCE: &str = "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.";

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": ty, "uniqueItems": true},
    })
}

fn list_params() -> Vec<Value> {
    vec![
        query("allowWatchBookmarks", "boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion."),
        query("continue", "string", "The continue option should be set when retrieving more results from the server. Since this value is server defined, clients may only use the continue value from a previous query result with identical query parameters (except for the value of continue)."),
        query("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields. Defaults to everything."),
        query("labelSelector", "string", "A selector to restrict the list of returned objects by their labels. Defaults to everything."),
        query("limit", "integer", "limit is a maximum number of responses to return for a list call. If more items exist, the server will set the `continue` field on the list metadata to a value that can be used with the same initial query to retrieve the next set of results."),
        query("resourceVersion", "string", "resourceVersion sets a constraint on what resource versions a request may be served from. Defaults to unset."),
        query("resourceVersionMatch", "string", "resourceVersionMatch determines how resourceVersion is applied to list calls. Defaults to unset."),
        query("sendInitialEvents", "boolean", "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection."),
        query("timeoutSeconds", "integer", "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity."),
        query("watch", "boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion."),
    ]
}

fn delete_params() -> Vec<Value> {
    vec![
        query("dryRun", "string", DRY_RUN),
        query("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately. If this value is nil, the default grace period for the specified type will be used. Defaults to a per object value if not specified. zero means delete immediately."),
        query("ignoreStoreReadErrorWithClusterBreakingPotential", "boolean", "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error."),
        query("orphanDependents", "boolean", "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned."),
        query("propagationPolicy", "string", "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. Acceptable values are: 'Orphan', 'Background', 'Foreground'."),
    ]
}

fn action_params(action: Action) -> Vec<Value> {
    let write = || {
        vec![
            query("dryRun", "string", DRY_RUN),
            query("fieldManager", "string", FIELD_MANAGER),
            query("fieldValidation", "string", FIELD_VALIDATION),
        ]
    };
    match action {
        Action::List => list_params(),
        Action::Read => Vec::new(),
        Action::Create | Action::Replace => write(),
        Action::Patch => {
            let mut params = write();
            params.push(query("force", "boolean", FORCE));
            params
        }
        Action::Delete => delete_params(),
        Action::DeleteCollection => {
            let mut params = delete_params();
            params.extend(list_params());
            params
        }
    }
}

fn log_params() -> Vec<Value> {
    vec![
        query("container", "string", "The container for which to stream logs. Defaults to only container if there is one container in the pod."),
        query("follow", "boolean", "Follow the log stream of the pod. Defaults to false."),
        query("insecureSkipTLSVerifyBackend", "boolean", "insecureSkipTLSVerifyBackend indicates that the apiserver should not confirm the validity of the serving certificate of the backend it is connecting to."),
        query("limitBytes", "integer", "If set, the number of bytes to read from the server before terminating the log output."),
        query("previous", "boolean", "Return previous terminated container logs. Defaults to false."),
        query("sinceSeconds", "integer", "A relative time in seconds before the current time from which to show logs."),
        query("tailLines", "integer", "If set, the number of lines from the end of the logs to show."),
        query("timestamps", "boolean", "If true, add an RFC3339 or RFC3339Nano timestamp at the beginning of every line of log output. Defaults to false."),
    ]
}

fn connect_params(sub: &str) -> Vec<Value> {
    let stream = |name: &str, what: &str| {
        query(
            name,
            "boolean",
            &format!("Redirect the standard {what} stream of the pod for this call."),
        )
    };
    let container = query("container", "string", "The container in which to execute the command. Defaults to only container if there is only one container in the pod.");
    match sub {
        "exec" => vec![
            query("command", "string", "Command is the remote command to execute. argv array. Not executed within a shell."),
            container,
            stream("stderr", "error"),
            stream("stdin", "input"),
            stream("stdout", "output"),
            query("tty", "boolean", "TTY if true indicates that a tty will be allocated for the exec call. Defaults to false."),
        ],
        "attach" => vec![
            container,
            stream("stderr", "error"),
            stream("stdin", "input"),
            stream("stdout", "output"),
            query("tty", "boolean", "TTY if true indicates that a tty will be allocated for the attach call."),
        ],
        "portforward" => vec![query("ports", "integer", "List of ports to forward Required when using WebSockets")],
        _ => Vec::new(),
    }
}

const MEDIA_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];

fn ok(schema: Value, watchable: bool) -> Value {
    let mut content = Map::new();
    for media in MEDIA_TYPES {
        content.insert((*media).into(), json!({ "schema": schema }));
    }
    if watchable {
        for media in [
            "application/json;stream=watch",
            "application/vnd.kubernetes.protobuf;stream=watch",
        ] {
            content.insert(media.into(), json!({ "schema": schema }));
        }
    }
    json!({ "description": "OK", "content": content })
}

fn response(description: &str, schema: Value) -> Value {
    let mut content = Map::new();
    for media in MEDIA_TYPES {
        content.insert((*media).into(), json!({ "schema": schema }));
    }
    json!({ "description": description, "content": content })
}

fn unauthorized() -> Value {
    json!({ "description": "Unauthorized" })
}

fn json_body(schema: Value) -> Value {
    json!({ "content": { "*/*": { "schema": schema } }, "required": true })
}

fn any_body(schema: Value) -> Value {
    json!({ "content": { "*/*": { "schema": schema } } })
}

fn patch_body() -> Value {
    let patch = schema_ref(PATCH);
    json!({
        "content": {
            "application/apply-patch+yaml": { "schema": patch },
            "application/json-patch+json": { "schema": patch },
            "application/merge-patch+json": { "schema": patch },
            "application/strategic-merge-patch+json": { "schema": patch },
        },
        "required": true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_id_parts() {
        assert_eq!(group_id(""), "Core");
        assert_eq!(group_id("apps"), "Apps");
        assert_eq!(group_id("rbac.authorization.k8s.io"), "RbacAuthorization");
        assert_eq!(group_id("discovery.k8s.io"), "Discovery");
        assert_eq!(tag("", "v1"), "core_v1");
        assert_eq!(
            tag("rbac.authorization.k8s.io", "v1"),
            "rbacAuthorization_v1"
        );
    }

    #[test]
    fn pod_paths_and_operations() {
        let pod = berth_api::registry::by_kind("Pod").unwrap();
        let (paths, refs) = paths("", "v1", &[pod]);
        let item = &paths["/api/v1/namespaces/{namespace}/pods/{name}"];
        assert_eq!(item["get"]["operationId"], "readCoreV1NamespacedPod");
        assert_eq!(item["patch"]["operationId"], "patchCoreV1NamespacedPod");
        assert_eq!(item["patch"]["x-kubernetes-action"], "patch");
        assert_eq!(
            item["patch"]["x-kubernetes-group-version-kind"],
            json!({"group": "", "version": "v1", "kind": "Pod"})
        );
        let collection = &paths["/api/v1/namespaces/{namespace}/pods"];
        assert_eq!(collection["get"]["operationId"], "listCoreV1NamespacedPod");
        assert_eq!(
            collection["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.PodList"
        );
        assert_eq!(
            paths["/api/v1/pods"]["get"]["operationId"],
            "listCoreV1PodForAllNamespaces"
        );
        let exec = &paths["/api/v1/namespaces/{namespace}/pods/{name}/exec"];
        assert_eq!(exec["get"]["x-kubernetes-action"], "connect");
        assert_eq!(
            exec["post"]["x-kubernetes-group-version-kind"]["kind"],
            "PodExecOptions"
        );
        let binding = &paths["/api/v1/namespaces/{namespace}/pods/{name}/binding"];
        assert_eq!(
            binding["post"]["requestBody"]["content"]["*/*"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Binding"
        );
        assert!(refs.contains(&"io.k8s.api.core.v1.Binding".to_string()));
        let status = &paths["/api/v1/namespaces/{namespace}/pods/{name}/status"];
        assert!(status.get("patch").is_some() && status.get("post").is_none());
    }

    #[test]
    fn cluster_scoped_paths_have_no_namespace() {
        let node = berth_api::registry::by_kind("Node").unwrap();
        let (paths, _) = paths("", "v1", &[node]);
        let item = &paths["/api/v1/nodes/{name}"];
        assert_eq!(item["put"]["operationId"], "replaceCoreV1Node");
        let params = item["parameters"].as_array().unwrap();
        assert!(params.iter().all(|p| p["name"] != "namespace"));
        assert!(paths.get("/api/v1/namespaces/{namespace}/nodes").is_none());
    }

    #[test]
    fn scale_subresource_uses_autoscaling_scale() {
        let deploy = berth_api::registry::by_kind("Deployment").unwrap();
        let (paths, refs) = paths("apps", "v1", &[deploy]);
        let scale = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(
            scale["patch"]["x-kubernetes-group-version-kind"],
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        );
        assert_eq!(
            scale["get"]["operationId"],
            "readAppsV1NamespacedDeploymentScale"
        );
        assert!(refs.contains(&"io.k8s.api.autoscaling.v1.Scale".to_string()));
    }
}
