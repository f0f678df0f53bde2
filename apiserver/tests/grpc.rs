//! The `berth.v1.Api` gRPC service: the same objects, identities and rules as REST.

mod common;

use std::time::Duration;

use berth_apiserver::grpc::pb;
use berth_apiserver::grpc::pb::api_client::ApiClient;
use common::Cluster;
use serde_json::{json, Value};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn cm_gvk() -> Option<pb::GroupVersionKind> {
    Some(pb::GroupVersionKind {
        group: String::new(),
        version: "v1".into(),
        kind: "ConfigMap".into(),
    })
}

fn object(v: Value) -> Option<pb::Object> {
    Some(pb::Object {
        gvk: cm_gvk(),
        json: serde_json::to_vec(&v).unwrap(),
    })
}

async fn channel(c: &Cluster, identity: Option<(String, String)>) -> Channel {
    let pki = &c.args.data_dir.join("pki");
    let ca = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://127.0.0.1:{}", c.cp().addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn admin_identity(c: &Cluster) -> (String, String) {
    let pki = &c.args.data_dir.join("pki");
    (
        std::fs::read_to_string(pki.join("admin.crt")).unwrap(),
        std::fs::read_to_string(pki.join("admin.key")).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_crud_watch_apply_and_errors() {
    let c = Cluster::start().await;
    let mut api = ApiClient::new(channel(&c, Some(admin_identity(&c))).await);

    // Watch first, from now on.
    let mut watch = api
        .watch(pb::WatchRequest {
            gvk: cm_gvk(),
            namespace: "default".into(),
            label_selector: "app=grpc".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let created = api
        .create(pb::CreateRequest {
            object: object(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "g", "namespace": "default", "labels": {"app": "grpc"}},
                "data": {"a": "1"}})),
            options: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.created);
    let v: Value = serde_json::from_slice(&created.object.unwrap().json).unwrap();
    assert!(v["metadata"]["uid"].is_string());

    let got = api
        .get(pb::GetRequest {
            r#ref: Some(pb::ObjectRef {
                gvk: cm_gvk(),
                namespace: "default".into(),
                name: "g".into(),
                subresource: String::new(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut v: Value = serde_json::from_slice(&got.json).unwrap();
    assert_eq!(v["data"]["a"], "1");

    v["data"]["a"] = json!("2");
    let updated = api
        .update(pb::UpdateRequest {
            object: object(v.clone()),
            subresource: String::new(),
            options: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!updated.created);
    // The same resourceVersion again is a conflict.
    let stale = api
        .update(pb::UpdateRequest {
            object: object(v),
            subresource: String::new(),
            options: None,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::Aborted, "{stale:?}");

    let applied = api
        .apply(pb::ApplyRequest {
            object: object(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "g", "namespace": "default", "labels": {"app": "grpc"}},
                "data": {"b": "3"}})),
            options: Some(pb::WriteOptions {
                field_manager: "grpc-test".into(),
                ..Default::default()
            }),
            force: true,
        })
        .await
        .unwrap()
        .into_inner();
    let v: Value = serde_json::from_slice(&applied.object.unwrap().json).unwrap();
    assert_eq!(v["data"]["b"], "3");

    let list = api
        .list(pb::ListRequest {
            gvk: cm_gvk(),
            namespace: "default".into(),
            label_selector: "app=grpc".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.items.len(), 1);

    let mut types = Vec::new();
    while types.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        types.push(ev.r#type);
    }
    assert_eq!(types, ["ADDED", "MODIFIED", "MODIFIED"]);

    // Admission runs: an invalid name is refused with the Kubernetes Status in the details.
    let bad = api
        .create(pb::CreateRequest {
            object: object(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "Bad_Name", "namespace": "default"}})),
            options: None,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let status: Value = serde_json::from_slice(bad.details()).unwrap();
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["code"], 422);

    let deleted = api
        .delete(pb::DeleteRequest {
            r#ref: Some(pb::ObjectRef {
                gvk: cm_gvk(),
                namespace: "default".into(),
                name: "g".into(),
                subresource: String::new(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.deleted);
    let ev = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev.r#type, "DELETED");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_refuses_anonymous_and_unauthorised_callers() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "carol-token,carol,2001\n").unwrap();
    let t = tokens.clone();
    let c = Cluster::start_with(move |a| a.token_auth_file = Some(t)).await;
    let get = || pb::GetRequest {
        r#ref: Some(pb::ObjectRef {
            gvk: cm_gvk(),
            namespace: "default".into(),
            name: "x".into(),
            subresource: String::new(),
        }),
    };
    let mut anon = ApiClient::new(channel(&c, None).await);
    let err = anon.get(get()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

    let ch = channel(&c, None).await;
    let mut carol = ApiClient::with_interceptor(ch, |mut req: tonic::Request<()>| {
        req.metadata_mut()
            .insert("authorization", "Bearer carol-token".parse().unwrap());
        Ok(req)
    });
    let err = carol.get(get()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err
        .message()
        .contains("User \"carol\" cannot get resource \"configmaps\""));
    c.stop().await;
}
