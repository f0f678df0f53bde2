//! How a node joins: bootstrap tokens, CertificateSigningRequests, and the approver and
//! signer of node certificates.

mod common;

use std::time::Duration;

use base64::Engine;
use common::Cluster;
use kube::Client;
use serde_json::{json, Value};

const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A client of the cluster authenticating with a token or a client certificate.
async fn client_as(c: &Cluster, token: Option<&str>, cert: Option<(&str, &str)>) -> Client {
    let mut kc = kube::config::Kubeconfig::read_from(c.kubeconfig()).unwrap();
    for u in &mut kc.auth_infos {
        let mut auth = kube::config::AuthInfo::default();
        if let Some(t) = token {
            auth.token = Some(t.to_string().into());
        }
        if let Some((crt, key)) = cert {
            auth.client_certificate_data = Some(B64.encode(crt));
            auth.client_key_data = Some(B64.encode(key).into());
        }
        u.auth_info = Some(auth);
    }
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

async fn raw(client: &Client, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", "application/json")
        .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
        .unwrap();
    let r = client
        .send(req.map(kube::client::Body::from))
        .await
        .unwrap();
    let code = r.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (code, v)
}

/// Repeats a request until it stops answering `while_code` (the cache catching up).
async fn settle(client: &Client, method: &str, path: &str, while_code: u16) -> (u16, Value) {
    for _ in 0..50 {
        let r = raw(client, method, path, None).await;
        if r.0 != while_code {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    raw(client, method, path, None).await
}

/// A private key and a PEM certificate request for `cn` in `orgs` with DNS or IP `sans`.
fn request(cn: &str, orgs: &[&str], sans: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    for o in orgs {
        dn.push(rcgen::DnType::OrganizationName, *o);
    }
    dn.push(rcgen::DnType::CommonName, cn);
    params.distinguished_name = dn;
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    (key.serialize_pem(), pem)
}

fn csr(name: &str, pem: &str, signer: &str, usages: &[&str]) -> Value {
    json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {"request": B64.encode(pem), "signerName": signer, "usages": usages,
            // Forged requester fields are replaced by the server.
            "username": "admin", "groups": ["system:masters"]}})
}

/// Waits until the request has a decision (and, if approved, a certificate).
async fn decided(client: &Client, name: &str) -> Value {
    for _ in 0..100 {
        let (code, v) = raw(client, "GET", &format!("{CSRS}/{name}"), None).await;
        assert_eq!(code, 200, "{v}");
        let conds = v["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let denied = conds.iter().any(|c| c["type"] == "Denied");
        if denied || v["status"]["certificate"].is_string() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("certificate signing request {name} was not decided");
}

fn condition(v: &Value, ty: &str) -> Option<Value> {
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
        .cloned()
}

fn certificate(v: &Value) -> String {
    String::from_utf8(
        B64.decode(v["status"]["certificate"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_joins_with_the_bootstrap_token() {
    let c = Cluster::start().await;
    let admin = {
        let kc = kube::config::Kubeconfig::read_from(c.kubeconfig()).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        Client::try_from(cfg).unwrap()
    };

    // The bootstrap kubeconfig next to the admin's, with a token of the bootstrap form.
    let path = c.args.data_dir.join("bootstrap-kubeconfig.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
    let token = doc["users"][0]["user"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        berth_apiserver::bootstrap_token::parse(&token).is_some(),
        "{token}"
    );
    assert_eq!(doc["clusters"][0]["cluster"]["server"], c.url());
    let id = token.split('.').next().unwrap().to_string();
    let (code, secret) = raw(
        &admin,
        "GET",
        &format!("/api/v1/namespaces/kube-system/secrets/bootstrap-token-{id}"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{secret}");
    assert_eq!(secret["type"], "bootstrap.kubernetes.io/token");

    // The token authenticates; altered or unusable tokens do not.
    let bootstrapper = client_as(&c, Some(&token), None).await;
    assert_eq!(raw(&bootstrapper, "GET", CSRS, None).await.0, 200);
    let mut wrong = token.clone();
    wrong.replace_range(
        wrong.len() - 1..,
        if wrong.ends_with('a') { "b" } else { "a" },
    );
    let wrong = client_as(&c, Some(&wrong), None).await;
    assert_eq!(raw(&wrong, "GET", CSRS, None).await.0, 401);
    let secrets = "/api/v1/namespaces/kube-system/secrets";
    for (tid, extra) in [
        ("expire", json!({"expiration": "2020-01-01T00:00:00Z"})),
        ("nouse1", json!({"usage-bootstrap-authentication": "false"})),
        ("future", json!({"expiration": "2999-01-01T00:00:00Z"})),
    ] {
        let mut data = json!({"token-id": tid, "token-secret": "0123456789abcdef",
            "usage-bootstrap-authentication": "true"});
        for (k, v) in extra.as_object().unwrap() {
            data[k] = v.clone();
        }
        let s = json!({"apiVersion": "v1", "kind": "Secret",
            "type": "bootstrap.kubernetes.io/token",
            "metadata": {"name": format!("bootstrap-token-{tid}")}, "stringData": data});
        assert_eq!(raw(&admin, "POST", secrets, Some(&s)).await.0, 201);
    }
    let future = client_as(&c, Some("future.0123456789abcdef"), None).await;
    assert_eq!(settle(&future, "GET", CSRS, 401).await.0, 200);
    for t in ["expire.0123456789abcdef", "nouse1.0123456789abcdef"] {
        let refused = client_as(&c, Some(t), None).await;
        assert_eq!(raw(&refused, "GET", CSRS, None).await.0, 401, "{t}");
    }
    // A bootstrapper may only deal with certificate requests.
    assert_eq!(
        raw(&bootstrapper, "GET", "/api/v1/nodes", None).await.0,
        403
    );

    // The bootstrapper asks for n1's client certificate: approved and signed.
    let (key, pem) = request("system:node:n1", &["system:nodes"], &[]);
    let body = csr(
        "node-csr-n1",
        &pem,
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["digital signature", "client auth"],
    );
    let (code, created) = raw(&bootstrapper, "POST", CSRS, Some(&body)).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        created["spec"]["username"],
        format!("system:bootstrap:{id}")
    );
    let groups = created["spec"]["groups"].as_array().unwrap();
    assert!(groups.contains(&json!("system:bootstrappers")), "{created}");
    assert!(!groups.contains(&json!("system:masters")), "{created}");
    let signed = decided(&bootstrapper, "node-csr-n1").await;
    let approved = condition(&signed, "Approved").expect("approved");
    assert_eq!(approved["reason"], "AutoApproved");
    let cert = certificate(&signed);

    // The certificate is n1's identity: a node in system:nodes, under the node rules.
    let node = client_as(&c, None, Some((&cert, &key))).await;
    let n1 = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
    assert_eq!(raw(&node, "POST", "/api/v1/nodes", Some(&n1)).await.0, 201);
    let n2 = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}});
    let (code, status) = raw(&node, "POST", "/api/v1/nodes", Some(&n2)).await;
    assert_eq!(code, 201, "nodes may register: {status}");
    let (code, status) = raw(&node, "DELETE", "/api/v1/nodes/n2", None).await;
    assert_eq!(code, 403, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("User \"system:node:n1\""),
        "{status}"
    );

    // The node renews its client certificate, and gets a serving certificate for itself.
    let (_, pem) = request("system:node:n1", &["system:nodes"], &[]);
    let body = csr(
        "node-csr-n1-renew",
        &pem,
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["digital signature", "key encipherment", "client auth"],
    );
    assert_eq!(raw(&node, "POST", CSRS, Some(&body)).await.0, 201);
    let renewed = decided(&node, "node-csr-n1-renew").await;
    assert!(condition(&renewed, "Approved").is_some(), "{renewed}");
    let (_, pem) = request(
        "system:node:n1",
        &["system:nodes"],
        &["127.0.0.1", "n1.local"],
    );
    let body = csr(
        "serving-n1",
        &pem,
        "kubernetes.io/kubelet-serving",
        &["digital signature", "key encipherment", "server auth"],
    );
    assert_eq!(raw(&node, "POST", CSRS, Some(&body)).await.0, 201);
    let serving = decided(&node, "serving-n1").await;
    let der = rustls_pemfile::certs(&mut certificate(&serving).as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
    let eku = x509.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    let sans = format!(
        "{:?}",
        x509.subject_alternative_name().unwrap().unwrap().value
    );
    assert!(sans.contains("n1.local"), "{sans}");
    // Its own requests only: a watch narrowed to its name is allowed, others are not.
    let watch = format!("{CSRS}?fieldSelector=metadata.name%3Dserving-n1");
    assert_eq!(raw(&node, "GET", &watch, None).await.0, 200);
    assert_eq!(
        raw(&node, "GET", &format!("{CSRS}/node-csr-n1"), None)
            .await
            .0,
        403
    );
    assert_eq!(raw(&node, "GET", CSRS, None).await.0, 403);

    // Subjects that do not match: denied, never signed.
    let (_, pem) = request("system:node:n2", &["system:nodes"], &["10.0.0.2"]);
    let body = csr(
        "serving-n2-by-n1",
        &pem,
        "kubernetes.io/kubelet-serving",
        &["digital signature", "server auth"],
    );
    assert_eq!(raw(&node, "POST", CSRS, Some(&body)).await.0, 201);
    let (_, pem) = request("admin", &["system:masters"], &[]);
    let body = csr(
        "sneaky-admin",
        &pem,
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["digital signature", "client auth"],
    );
    assert_eq!(raw(&bootstrapper, "POST", CSRS, Some(&body)).await.0, 201);
    for (name, reason) in [
        ("serving-n2-by-n1", "SubjectMismatch"),
        ("sneaky-admin", "SubjectNotAllowed"),
    ] {
        let v = decided(&admin, name).await;
        let denied = condition(&v, "Denied").unwrap_or_else(|| panic!("{name}: {v}"));
        assert_eq!(denied["reason"], reason, "{v}");
        assert!(v["status"].get("certificate").is_none(), "{v}");
    }
    // A fitting request the CA cannot sign (an extension it does not handle) fails once.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "system:nodes");
    dn.push(rcgen::DnType::CommonName, "system:node:n1");
    params.distinguished_name = dn;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 99999, 1],
            vec![0x05, 0x00],
        ));
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    let body = csr(
        "odd-extension",
        &pem,
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["digital signature", "client auth"],
    );
    assert_eq!(raw(&node, "POST", CSRS, Some(&body)).await.0, 201);
    let mut failed = None;
    for _ in 0..100 {
        let (_, v) = raw(&admin, "GET", &format!("{CSRS}/odd-extension"), None).await;
        if let Some(f) = condition(&v, "Failed") {
            failed = Some((f, v));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (f, v) = failed.expect("the request is marked Failed");
    assert_eq!(f["reason"], "SignerValidationFailure", "{v}");
    assert!(condition(&v, "Approved").is_some(), "{v}");
    assert!(v["status"].get("certificate").is_none(), "{v}");

    // Other signers are left for an administrator.
    let (_, pem) = request("someone", &[], &[]);
    let body = csr(
        "other-signer",
        &pem,
        "example.com/custom",
        &["digital signature", "client auth"],
    );
    assert_eq!(raw(&admin, "POST", CSRS, Some(&body)).await.0, 201);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, v) = raw(&admin, "GET", &format!("{CSRS}/other-signer"), None).await;
    assert!(v["status"].get("conditions").is_none(), "{v}");

    // Approval and status rules: a decision stays, a certificate is set once.
    let mut approve = v.clone();
    approve["status"]["conditions"] = json!([{"type": "Approved", "status": "True",
        "reason": "ByHand", "message": "ok"}]);
    approve["spec"]["signerName"] = json!("example.com/changed");
    let (code, approved) = raw(
        &admin,
        "PUT",
        &format!("{CSRS}/other-signer/approval"),
        Some(&approve),
    )
    .await;
    assert_eq!(code, 200, "{approved}");
    assert_eq!(approved["spec"]["signerName"], "example.com/custom");
    assert!(condition(&approved, "Approved").unwrap()["lastUpdateTime"].is_string());
    let mut deny = approved.clone();
    deny["status"]["conditions"] = json!([{"type": "Denied", "status": "True"}]);
    let (code, status) = raw(
        &admin,
        "PUT",
        &format!("{CSRS}/other-signer/approval"),
        Some(&deny),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    let mut forged = signed.clone();
    forged["status"]["certificate"] = json!(B64.encode(cert.replace("A", "B")));
    let (code, status) = raw(
        &admin,
        "PUT",
        &format!("{CSRS}/node-csr-n1/status"),
        Some(&forged),
    )
    .await;
    assert_eq!(code, 422, "{status}");

    // Invalid requests are refused with the field named.
    let mut bad = csr(
        "bad",
        "not pem",
        "kubernetes.io/kubelet-serving",
        &["server auth"],
    );
    bad["spec"]["usages"] = json!(["server auth", "teleport"]);
    let (code, status) = raw(&admin, "POST", CSRS, Some(&bad)).await;
    assert_eq!(code, 422, "{status}");
    let msg = status["message"].as_str().unwrap();
    assert!(
        msg.contains("spec.request") && msg.contains("spec.usages[1]"),
        "{msg}"
    );

    // kubectl: apply a request (OpenAPI validation), then decide by hand.
    let (_, pem) = request("by-hand", &[], &[]);
    let manifest = format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: by-hand\nspec:\n  request: {}\n  signerName: example.com/custom\n  usages: [client auth]\n  expirationSeconds: 86400\n",
        B64.encode(&pem)
    );
    let file = common::write(c.dir.path(), "csr.yaml", &manifest);
    let out = c.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(
        out.contains("certificatesigningrequest.certificates.k8s.io/by-hand created"),
        "{out}"
    );
    let out = c.kubectl_ok(&["certificate", "deny", "by-hand"]);
    assert!(out.contains("denied"), "{out}");
    let (_, v) = raw(&admin, "GET", &format!("{CSRS}/by-hand"), None).await;
    assert_eq!(
        condition(&v, "Denied").unwrap()["reason"],
        "KubectlDeny",
        "{v}"
    );

    // kubectl lists them (short name csr).
    let out = c.kubectl_ok(&["get", "csr"]);
    let row = |name: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing: {out}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "AGE",
            "SIGNERNAME",
            "REQUESTOR",
            "REQUESTEDDURATION",
            "CONDITION"
        ]
    );
    let n1 = row("node-csr-n1");
    assert_eq!(n1[2], "kubernetes.io/kube-apiserver-client-kubelet");
    assert_eq!(n1[3], format!("system:bootstrap:{id}"));
    assert_eq!(n1[4..], ["<none>", "Approved,Issued"]);
    assert_eq!(row("serving-n1")[5], "Approved,Issued");
    assert_eq!(row("sneaky-admin")[5], "Denied");
    assert_eq!(row("other-signer")[5], "Approved");
    assert_eq!(row("by-hand")[4..], ["24h", "Denied"]);

    // A restart keeps the token.
    let c = c.restart().await;
    let doc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(doc["users"][0]["user"]["token"], token.as_str());
    let bootstrapper = client_as(&c, Some(&token), None).await;
    assert_eq!(settle(&bootstrapper, "GET", CSRS, 401).await.0, 200);
    c.stop().await;
}
