//! Client libraries through Berth: kube-rs (typed API, server-side apply, watcher) and raw
//! requests for the error paths, optimistic concurrency, and authentication/authorisation.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Cluster;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::Client;
use serde_json::{json, Value};

async fn admin_client(c: &Cluster) -> Client {
    let kc = kube::config::Kubeconfig::read_from(c.kubeconfig()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

/// A client whose kubeconfig user is replaced (`None`: anonymous).
async fn client_as(c: &Cluster, token: Option<&str>, cert: Option<(String, String)>) -> Client {
    let mut kc = kube::config::Kubeconfig::read_from(c.kubeconfig()).unwrap();
    for u in &mut kc.auth_infos {
        let mut auth = kube::config::AuthInfo::default();
        if let Some(t) = token {
            auth.token = Some(t.to_string().into());
        }
        if let Some((crt, key)) = &cert {
            use base64::Engine;
            let b = base64::engine::general_purpose::STANDARD;
            auth.client_certificate_data = Some(b.encode(crt));
            auth.client_key_data = Some(b.encode(key).into());
        }
        u.auth_info = Some(auth);
    }
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("app".to_string(), "demo".to_string())])),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

/// A bad request: what it is, method, content type, body, expected code and reason.
type Case = (
    &'static str,
    String,
    &'static str,
    Vec<u8>,
    u16,
    &'static str,
);

/// Sends a raw request; returns the status code and the body as JSON (or a string).
async fn raw(client: &Client, method: &str, path: &str, ct: &str, body: Vec<u8>) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", ct)
        .body(body)
        .unwrap();
    let resp = client.send(req.map(kube::client::Body::from)).await;
    match resp {
        Ok(r) => {
            let code = r.status().as_u16();
            let bytes = http_body_util::BodyExt::collect(r.into_body())
                .await
                .unwrap()
                .to_bytes();
            let v = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
            (code, v)
        }
        Err(e) => panic!("request failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kube_rs_create_list_patch_apply_watch() {
    let c = Cluster::start().await;
    let client = admin_client(&c).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    // A watcher started first sees everything that follows.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watch_api = api.clone();
    let watching = tokio::spawn(async move {
        let mut stream = watcher(watch_api, watcher::Config::default().labels("app=demo")).boxed();
        while let Some(ev) = stream.try_next().await.unwrap() {
            if let watcher::Event::Apply(cm) | watcher::Event::InitApply(cm) = ev {
                let _ = tx.send(cm.data.unwrap_or_default());
            }
        }
    });

    let created = api
        .create(&PostParams::default(), &cm("one", &[("a", "1")]))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.resource_version.is_some());
    let list = api
        .list(&ListParams::default().labels("app=demo"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);

    let patched = api
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"b": "2"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.as_ref().unwrap()["b"], "2");

    let applied = api
        .patch(
            "one",
            &PatchParams::apply("kube-rs-test").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "one", "labels": {"app": "demo"}}, "data": {"c": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.data.as_ref().unwrap()["c"], "3");
    let managers: Vec<String> = applied
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"kube-rs-test".to_string()),
        "{managers:?}"
    );

    // The watcher saw the patched and applied states.
    let saw_c = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(data) = rx.recv().await {
            if data.get("c").map(String::as_str) == Some("3") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(saw_c);
    watching.abort();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_read_modify_write_loses_no_increment() {
    let c = Cluster::start().await;
    let client = admin_client(&c).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &cm("counter", &[("n", "0")]))
        .await
        .unwrap();
    const CLIENTS: usize = 32;
    const EACH: usize = 5;
    let mut tasks = Vec::new();
    let mut conflicts = 0;
    for _ in 0..CLIENTS {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..EACH {
                loop {
                    let mut cur = api.get("counter").await.unwrap();
                    let n: u64 = cur.data.as_ref().unwrap()["n"].parse().unwrap();
                    cur.data
                        .as_mut()
                        .unwrap()
                        .insert("n".into(), (n + 1).to_string());
                    match api.replace("counter", &PostParams::default(), &cur).await {
                        Ok(_) => break,
                        Err(kube::Error::Api(e)) if e.code == 409 => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            conflicts
        }));
    }
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    let n = api.get("counter").await.unwrap().data.unwrap()["n"].clone();
    assert_eq!(n, (CLIENTS * EACH).to_string());
    // The increments raced: optimistic concurrency was exercised, not avoided.
    assert!(conflicts > 0, "no conflicts with {CLIENTS} clients");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_status_and_changes_nothing() {
    let c = Cluster::start().await;
    let client = admin_client(&c).await;
    let cms = "/api/v1/namespaces/default/configmaps";
    let json = "application/json";
    let (code, _) = raw(
        &client,
        "POST",
        cms,
        json,
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"keep"},"data":{"a":"1"}}"#
            .to_vec(),
    )
    .await;
    assert_eq!(code, 201);
    let before = raw(&client, "GET", cms, json, vec![]).await.1["items"].clone();

    let cases: Vec<Case> = vec![
        (
            "invalid YAML",
            "POST".into(),
            "application/yaml",
            b"metadata: [unclosed".to_vec(),
            400,
            "BadRequest",
        ),
        (
            "unknown field",
            "POST".into(),
            json,
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"u"},"datta":{}}"#
                .to_vec(),
            400,
            "BadRequest",
        ),
        (
            "invalid name",
            "POST".into(),
            json,
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Not_Valid"}}"#.to_vec(),
            422,
            "Invalid",
        ),
        (
            "wrong apiVersion",
            "POST".into(),
            json,
            br#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"w"}}"#.to_vec(),
            400,
            "BadRequest",
        ),
        (
            "10 MB body",
            "POST".into(),
            json,
            vec![b' '; 10 * 1024 * 1024],
            413,
            "RequestEntityTooLarge",
        ),
    ];
    for (what, method, ct, body, code, reason) in cases {
        let path = format!("{cms}?fieldValidation=Strict");
        let (got, status) = raw(&client, &method, &path, ct, body).await;
        assert_eq!(got, code, "{what}: {status}");
        assert_eq!(status["kind"], "Status", "{what}");
        assert_eq!(status["reason"], reason, "{what}: {status}");
        assert_eq!(status["code"], code, "{what}");
    }
    // Malformed patches.
    let keep = format!("{cms}/keep");
    let (code, status) = raw(
        &client,
        "PATCH",
        &keep,
        "application/json-patch+json",
        br#"[{"op":"frobnicate","path":"/data"}]"#.to_vec(),
    )
    .await;
    assert!(code == 400 || code == 422, "{status}");
    assert_eq!(status["kind"], "Status");
    let (code, status) = raw(
        &client,
        "PATCH",
        &keep,
        "application/merge-patch+json",
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(code, 400, "{status}");
    let (code, status) = raw(
        &client,
        "PATCH",
        &keep,
        "application/json-patch+json",
        br#"[{"op":"test","path":"/data/a","value":"2"}]"#.to_vec(),
    )
    .await;
    assert!(code == 422 || code == 409 || code == 400, "{status}");

    let after = raw(&client, "GET", cms, json, vec![]).await.1["items"].clone();
    assert_eq!(before, after, "bad input changed stored objects");

    // Restarted on the same directory, the server keeps every object, and a watch from a
    // revision before its watch cache's window is told to re-list (410 Expired).
    let c = c.restart().await;
    let client = admin_client(&c).await;
    let after = raw(&client, "GET", cms, json, vec![]).await.1["items"].clone();
    assert_eq!(before, after, "restart lost or changed objects");
    let (code, body) = raw(
        &client,
        "GET",
        &format!("{cms}?watch=1&resourceVersion=1"),
        json,
        vec![],
    )
    .await;
    assert_eq!(code, 200);
    let ev: Value = match body {
        Value::String(s) => serde_json::from_str(s.lines().next().unwrap()).unwrap(),
        v => v,
    };
    assert_eq!(ev["type"], "ERROR", "{ev}");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn authentication_rbac_and_the_node_authoriser() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        "alice-token,alice,1001\nbob-token,bob,1002,\"dev\"\n",
    )
    .unwrap();
    let tokens_arg = tokens.clone();
    let c = Cluster::start_with(move |a| a.token_auth_file = Some(tokens_arg)).await;
    let admin = admin_client(&c).await;
    let cms = "/api/v1/namespaces/default/configmaps";

    // Anonymous: 401.
    let anon = client_as(&c, None, None).await;
    let (code, status) = raw(&anon, "GET", cms, "application/json", vec![]).await;
    assert_eq!(code, 401, "{status}");
    let bad = client_as(&c, Some("wrong-token"), None).await;
    assert_eq!(
        raw(&bad, "GET", cms, "application/json", vec![]).await.0,
        401
    );

    // Authenticated without a binding: 403 with Kubernetes' wording; discovery is allowed.
    let alice = client_as(&c, Some("alice-token"), None).await;
    let (code, status) = raw(&alice, "GET", cms, "application/json", vec![]).await;
    assert_eq!(code, 403, "{status}");
    assert!(status["message"]
        .as_str()
        .unwrap()
        .contains("User \"alice\" cannot list resource \"configmaps\""));
    assert_eq!(
        raw(&alice, "GET", "/version", "application/json", vec![])
            .await
            .0,
        200
    );
    // /metrics is for admins only; it tells the store member's Raft state.
    assert_eq!(
        raw(&alice, "GET", "/metrics", "text/plain", vec![]).await.0,
        403
    );
    let (code, metrics) = raw(&admin, "GET", "/metrics", "text/plain", vec![]).await;
    assert_eq!(code, 200, "{metrics}");
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains("berth_store_is_leader{member=\"default\"} 1")
            && text.contains("berth_store_has_leader{member=\"default\"} 1")
            && text.contains("# TYPE berth_store_term gauge"),
        "{text}"
    );

    // A RoleBinding to `view` lets alice read in default only; bob's group gets edit.
    let rb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "alice-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}]});
    let path = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings";
    assert_eq!(
        raw(
            &admin,
            "POST",
            path,
            "application/json",
            rb.to_string().into_bytes()
        )
        .await
        .0,
        201
    );
    let crb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "dev-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "Group", "name": "dev", "apiGroup": "rbac.authorization.k8s.io"}]});
    assert_eq!(
        raw(
            &admin,
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            "application/json",
            crb.to_string().into_bytes()
        )
        .await
        .0,
        201
    );
    let wait_allowed = |client: Client, method: &'static str, path: String, body: Vec<u8>| async move {
        for _ in 0..50 {
            let (code, _) = raw(&client, method, &path, "application/json", body.clone()).await;
            if code != 403 {
                return code;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        403
    };
    assert_eq!(
        wait_allowed(alice.clone(), "GET", cms.to_string(), vec![]).await,
        200
    );
    let new_cm =
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"by-alice"}}"#.to_vec();
    assert_eq!(
        raw(&alice, "POST", cms, "application/json", new_cm.clone())
            .await
            .0,
        403
    );
    assert_eq!(
        raw(
            &alice,
            "GET",
            "/api/v1/namespaces/kube-system/configmaps",
            "application/json",
            vec![]
        )
        .await
        .0,
        403
    );
    let bob = client_as(&c, Some("bob-token"), None).await;
    let by_bob = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"by-bob"}}"#.to_vec();
    assert_eq!(
        wait_allowed(bob.clone(), "POST", cms.to_string(), by_bob).await,
        201
    );

    // The node authoriser: a node writes its own Node and the status of its pods only.
    let pki = berth_apiserver::tls::Pki::bootstrap(
        &c.args.data_dir,
        &["127.0.0.1".to_string(), "localhost".to_string()],
    )
    .unwrap();
    let n1 = pki
        .issue("system:node:n1", &["system:nodes"], &[], false)
        .unwrap();
    let node = client_as(&c, None, Some(n1)).await;
    let node_obj = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
            .to_string()
            .into_bytes()
    };
    assert_eq!(
        raw(
            &node,
            "POST",
            "/api/v1/nodes",
            "application/json",
            node_obj("n1")
        )
        .await
        .0,
        201
    );
    assert_eq!(
        raw(
            &admin,
            "POST",
            "/api/v1/nodes",
            "application/json",
            node_obj("n2")
        )
        .await
        .0,
        201
    );
    let status_patch = br#"{"status":{"phase":"Running"}}"#.to_vec();
    assert_eq!(
        raw(
            &node,
            "PATCH",
            "/api/v1/nodes/n1/status",
            "application/merge-patch+json",
            status_patch.clone()
        )
        .await
        .0,
        200
    );
    assert_eq!(
        raw(
            &node,
            "PATCH",
            "/api/v1/nodes/n2/status",
            "application/merge-patch+json",
            status_patch.clone()
        )
        .await
        .0,
        403
    );
    let pod = |name: &str, node: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}})
        .to_string()
        .into_bytes()
    };
    let pods = "/api/v1/namespaces/default/pods";
    assert_eq!(
        raw(&admin, "POST", pods, "application/json", pod("mine", "n1"))
            .await
            .0,
        201
    );
    assert_eq!(
        raw(
            &admin,
            "POST",
            pods,
            "application/json",
            pod("theirs", "n2")
        )
        .await
        .0,
        201
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        raw(
            &node,
            "PATCH",
            &format!("{pods}/mine/status"),
            "application/merge-patch+json",
            status_patch.clone()
        )
        .await
        .0,
        200
    );
    assert_eq!(
        raw(
            &node,
            "PATCH",
            &format!("{pods}/theirs/status"),
            "application/merge-patch+json",
            status_patch
        )
        .await
        .0,
        403
    );
    assert_eq!(
        raw(&node, "POST", pods, "application/json", pod("new", "n1"))
            .await
            .0,
        403
    );

    // ServiceAccount tokens: issued by TokenRequest, authorised by RBAC, dead with the account.
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}});
    let sas = "/api/v1/namespaces/default/serviceaccounts";
    assert_eq!(
        raw(
            &admin,
            "POST",
            sas,
            "application/json",
            sa.to_string().into_bytes()
        )
        .await
        .0,
        201
    );
    let (code, tr) = raw(&admin, "POST", &format!("{sas}/robot/token"), "application/json",
        br#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":3600}}"#.to_vec()).await;
    assert_eq!(code, 201, "{tr}");
    let token = tr["status"]["token"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let robot = client_as(&c, Some(&token), None).await;
    let (code, status) = raw(&robot, "GET", cms, "application/json", vec![]).await;
    assert_eq!(code, 403, "{status}");
    assert!(status["message"]
        .as_str()
        .unwrap()
        .contains("system:serviceaccount:default:robot"));
    let rb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "robot-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "robot"}]});
    assert_eq!(
        raw(
            &admin,
            "POST",
            path,
            "application/json",
            rb.to_string().into_bytes()
        )
        .await
        .0,
        201
    );
    assert_eq!(
        wait_allowed(robot.clone(), "GET", cms.to_string(), vec![]).await,
        200
    );
    assert_eq!(
        raw(
            &admin,
            "DELETE",
            &format!("{sas}/robot"),
            "application/json",
            vec![]
        )
        .await
        .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        raw(&robot, "GET", cms, "application/json", vec![]).await.0,
        401
    );
    let forger = client_as(&c, Some(&format!("{token}x")), None).await;
    assert_eq!(
        raw(&forger, "GET", cms, "application/json", vec![]).await.0,
        401
    );
    c.stop().await;
}
