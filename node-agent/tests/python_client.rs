//! The official Python client (`kubernetes.stream`, which speaks `v5`/`v4.channel.k8s.io`
//! for exec and the v4 channel protocol for port-forward) against the fake API server of
//! `common::apiserver`. Skipped (passing, with a note) without python3 and the
//! `kubernetes` package.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use berth_node_agent::stream::fake::{FakeDialer, FakeExecBackend};
use common::apiserver::api_server;
use common::http_server;
use serde_json::{json, Value};
use tokio::process::Command;

#[allow(clippy::print_stderr)]
async fn python_client_present() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import kubernetes.stream"])
        .output()
        .await
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipped: python3 with the kubernetes package is not available");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_exec_and_port_forward() -> Result<()> {
    if !python_client_present().await {
        return Ok(());
    }
    let (web, _web) = http_server("hello python").await?;
    let dialer = Arc::new(FakeDialer::new().route(80, web));
    let api = api_server(Arc::new(FakeExecBackend::new()), dialer.clone()).await?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/stream_client.py");
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        Command::new("python3")
            .arg(script)
            .arg(format!("https://{}", api.addr))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow!("python client timed out; requests: {:#?}", api.requests()))??;
    if !out.status.success() {
        bail!(
            "python client failed: {}\nrequests: {:#?}",
            String::from_utf8_lossy(&out.stderr),
            api.requests()
        );
    }
    let got: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        got["exec"],
        json!({"stdout": "out\n", "stderr": "err\n", "rc": 3, "protocol": "v5.channel.k8s.io"})
    );
    assert_eq!(
        got["exec_stdin"],
        json!({"stdout": "got hello\n", "rc": 0, "protocol": "v4.channel.k8s.io"})
    );
    let response = got["portforward"]["response"].as_str().unwrap_or("");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(response.ends_with("hello python"), "{got}");
    assert_eq!(got["portforward"]["error"], Value::Null);
    assert_eq!(dialer.dialed(), [80]);
    Ok(())
}
