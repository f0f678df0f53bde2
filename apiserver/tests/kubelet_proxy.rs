//! The kubelet proxy: pod logs, exec (websocket upgrade), and `nodes/proxy` through the API
//! server to a fake node agent.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::agent::FakeAgent;
use common::Cluster;
use futures::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use kube::Client;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

async fn admin(c: &Cluster) -> Client {
    let kc = kube::config::Kubeconfig::read_from(c.kubeconfig()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

async fn send(
    client: &Client,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> http::Response<kube::client::Body> {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", "application/json")
        .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
        .unwrap();
    client
        .send(req.map(kube::client::Body::from))
        .await
        .unwrap()
}

async fn text(resp: http::Response<kube::client::Body>) -> (u16, String) {
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8_lossy(&bytes).into_owned())
}

fn pki(c: &Cluster) -> berth_apiserver::tls::Pki {
    berth_apiserver::tls::Pki::bootstrap(
        &c.args.data_dir,
        &["127.0.0.1".to_string(), "localhost".to_string()],
    )
    .unwrap()
}

fn pod(name: &str, node: Option<&str>, containers: &[&str]) -> Value {
    let cs: Vec<Value> = containers
        .iter()
        .map(|c| json!({"name": c, "image": "busybox"}))
        .collect();
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": cs}});
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    p
}

/// A TLS connection to the API server as the admin (client certificate), verified against
/// the cluster CA, speaking HTTP/1.1 (as kubectl does for upgrades).
async fn tls_to(c: &Cluster) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let pki = pki(c);
    let mut roots = rustls::RootCertStore::empty();
    for cert in berth_apiserver::tls::certs(&pki.ca_pem, "ca").unwrap() {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            berth_apiserver::tls::certs(&pki.admin_cert_pem, "admin").unwrap(),
            berth_apiserver::tls::private_key(&pki.admin_key_pem, "admin").unwrap(),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(c.cp().addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// A websocket to the API server as the admin.
async fn websocket(
    c: &Cluster,
    path: &str,
) -> tokio_tungstenite::tungstenite::Result<(
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
)> {
    let tls = tls_to(c).await;
    let mut req = format!("wss://127.0.0.1:{}{path}", c.cp().addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    tokio_tungstenite::client_async(req, tls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_exec_and_node_proxy_reach_the_agent() {
    let c = Cluster::start().await;
    let client = admin(&c).await;
    let agent = FakeAgent::start(&pki(&c), "n1").await;
    let (code, body) =
        text(send(&client, "POST", "/api/v1/nodes", Some(&agent.node("n1"))).await).await;
    assert_eq!(code, 201, "{body}");
    let pods = "/api/v1/namespaces/default/pods";
    for p in [
        pod("web", Some("n1"), &["app"]),
        pod("two", Some("n1"), &["a", "b"]),
        pod("pending", None, &["app"]),
    ] {
        let (code, body) = text(send(&client, "POST", pods, Some(&p)).await).await;
        assert_eq!(code, 201, "{body}");
    }

    // A followed log streams: the first line arrives while the agent still holds the second.
    let resp = send(
        &client,
        "GET",
        &format!("{pods}/web/log?follow=true&tailLines=5"),
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the first line arrives before the stream ends")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(&first[..], b"line 1\n");
    agent.state.release.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"line 2\n");
    assert!(
        agent
            .requests()
            .contains(&"/containerLogs/default/web/app?follow=true&tailLines=5".to_string()),
        "{:?}",
        agent.requests()
    );

    // A follower that goes away closes the agent's stream too.
    let closed = |a: &FakeAgent| {
        a.state
            .logs_closed
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    // The stream above ended; wait until the agent counted it.
    for _ in 0..100 {
        if closed(&agent) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = closed(&agent);
    assert_eq!(before, 1);
    let resp = send(&client, "GET", &format!("{pods}/web/log?follow=true"), None).await;
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"line 1\n");
    drop(body);
    let mut waited = 0;
    while closed(&agent) == before && waited < 100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    assert_eq!(
        closed(&agent),
        before + 1,
        "the agent's log stream is still open"
    );

    // kubectl logs, with the container named.
    let out = c.kubectl_ok(&["logs", "two", "-c", "b"]);
    assert_eq!(out, "line 1\nline 2\n");
    assert!(agent
        .requests()
        .iter()
        .any(|r| r.starts_with("/containerLogs/default/two/b?container=b")));

    // The errors of Kubernetes.
    let cases = [
        (
            format!("{pods}/two/log"),
            400,
            "a container name must be specified for pod two, choose one of: [a b]",
        ),
        (
            format!("{pods}/two/log?container=zzz"),
            400,
            "container zzz is not valid for pod two",
        ),
        (
            format!("{pods}/pending/log"),
            400,
            "pod pending does not have a host assigned",
        ),
        (format!("{pods}/gone/log"), 404, "pods \"gone\" not found"),
    ];
    for (path, want_code, want_msg) in cases {
        let (code, body) = text(send(&client, "GET", &path, None).await).await;
        let status: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(code, want_code, "{path}: {body}");
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["message"], want_msg, "{path}");
    }
    // An agent's error comes back as a Status with its code.
    let broken = pod("broken", Some("n1"), &["broken"]);
    assert_eq!(
        text(send(&client, "POST", pods, Some(&broken)).await)
            .await
            .0,
        201
    );
    let (code, body) = text(send(&client, "GET", &format!("{pods}/broken/log"), None).await).await;
    assert_eq!(code, 404, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["reason"], "NotFound");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("is not running"),
        "{body}"
    );

    // exec over a websocket: 101 relayed with the agent's protocol, bytes both ways.
    let path = format!("{pods}/web/exec?command=echo&command=hi&stdout=true&stdin=true");
    let (mut ws, resp) = websocket(&c, &path).await.unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        "v5.channel.k8s.io"
    );
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        first,
        Message::Binary(
            b"command=echo&command=hi&stdout=true&stdin=true"
                .to_vec()
                .into()
        )
    );
    for payload in [&b"\x00hello"[..], &[0u8; 70_000][..]] {
        ws.send(Message::Binary(payload.to_vec().into()))
            .await
            .unwrap();
        let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back.into_data().as_ref(), payload);
    }
    ws.close(None).await.unwrap();
    assert!(agent.requests().contains(
        &"/exec/default/web/app?command=echo&command=hi&stdout=true&stdin=true".to_string()
    ));

    // The real kubectl (websocket, HTTP/1.1 on the TLS listener).
    let out = c.kubectl_ok(&["exec", "web", "--", "hello"]);
    assert_eq!(out, "hello from the agent\n");

    // Without an upgrade, the agent's refusal is relayed; exec needs a command.
    let (code, body) = text(
        send(
            &client,
            "POST",
            &format!("{pods}/web/exec?command=ls"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!((code, body.as_str()), (400, "upgrade request required"));
    let (code, body) = text(send(&client, "POST", &format!("{pods}/web/exec"), None).await).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("you must specify at least one command"),
        "{body}"
    );

    // port-forward over SPDY (a plain HTTP/1.1 upgrade): the protocol headers go through,
    // then bytes both ways.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tls = tls_to(&c).await;
        let req = format!(
            "POST {pods}/web/portforward HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n\
             Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\
             Content-Length: 0\r\n\r\n"
        );
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(
            head.contains("x-stream-protocol-version: portforward.k8s.io"),
            "{head}"
        );
        assert!(head.contains("upgrade: spdy/3.1"), "{head}");
        tls.write_all(b"\x80\x03\x00\x01ping").await.unwrap();
        let mut back = [0u8; 8];
        tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back, b"\x80\x03\x00\x01ping");
    }
    assert!(agent
        .requests()
        .contains(&"/portForward/default/web".to_string()));

    // nodes/proxy forwards any path and the query.
    let (code, body) = text(
        send(
            &client,
            "GET",
            "/api/v1/nodes/n1/proxy/healthz?verbose=1",
            None,
        )
        .await,
    )
    .await;
    assert_eq!((code, body.as_str()), (200, "ok verbose=1"));
    let (code, _) =
        text(send(&client, "GET", "/api/v1/nodes/nope/proxy/healthz", None).await).await;
    assert_eq!(code, 404);

    // Authorisation: a bootstrapper may do none of this.
    let doc: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(c.args.data_dir.join("bootstrap-kubeconfig.yaml")).unwrap(),
    )
    .unwrap();
    let token = doc["users"][0]["user"]["token"].as_str().unwrap();
    let mut kc = kube::config::Kubeconfig::read_from(c.kubeconfig()).unwrap();
    for u in &mut kc.auth_infos {
        u.auth_info = Some(kube::config::AuthInfo {
            token: Some(token.to_string().into()),
            ..Default::default()
        });
    }
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let boot = Client::try_from(cfg).unwrap();
    for (method, path) in [
        ("GET", format!("{pods}/web/log")),
        ("POST", format!("{pods}/web/exec?command=ls")),
        ("GET", format!("{pods}/web/exec?command=ls")),
        ("GET", "/api/v1/nodes/n1/proxy/healthz".to_string()),
    ] {
        let (code, body) = text(send(&boot, method, &path, None).await).await;
        assert_eq!(code, 403, "{method} {path}: {body}");
    }
    let (code, body) =
        text(send(&boot, "GET", &format!("{pods}/web/exec?command=ls"), None).await).await;
    let status: Value = serde_json::from_str(&body).unwrap();
    let msg = status["message"].as_str().unwrap();
    assert!(
        msg.contains("cannot create resource \"pods/exec\""),
        "{code} {msg}"
    );
    c.stop().await;
}
