//! The agent's exec, attach and port-forward endpoints on loopback, driven by websocket
//! and SPDY clients written from the protocols' wire descriptions, with a backend that
//! runs real local processes and a dialer to real loopback servers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use berth_node_agent::stream::fake::{FakeDialer, FakeExecBackend, FakeExecCall};
use berth_node_agent::stream::spdy::frame::rst;
use berth_node_agent::stream::spdy::Frame;
use berth_node_agent::stream::{ExecOptions, TerminalSize};
use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

struct Agent {
    addr: std::net::SocketAddr,
    backend: Arc<FakeExecBackend>,
    dialer: Arc<FakeDialer>,
    _server: Task,
}

async fn agent_with(backend: FakeExecBackend, dialer: FakeDialer) -> Result<Agent> {
    let backend = Arc::new(backend);
    let dialer = Arc::new(dialer);
    let (addr, server) = serve(stream_routes(backend.clone(), dialer.clone())).await?;
    Ok(Agent {
        addr,
        backend,
        dialer,
        _server: server,
    })
}

async fn agent() -> Result<Agent> {
    agent_with(FakeExecBackend::new(), FakeDialer::new()).await
}

/// `command=...` for each argument.
fn exec_path(argv: &[&str], flags: &str) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for a in argv {
        q.append_pair("command", a);
    }
    format!("/exec?{}&{flags}", q.finish())
}

const OUT_ERR_EXIT3: &[&str] = &["sh", "-c", "echo out; echo err >&2; exit 3"];

#[tokio::test]
async fn exec_over_websocket_v5_reports_output_and_exit_code() -> Result<()> {
    let a = agent().await?;
    let path = exec_path(OUT_ERR_EXIT3, "stdout=true&stderr=true");
    let (mut ws, proto) = ws_connect(a.addr, &path, &["v5.channel.k8s.io"]).await?;
    assert_eq!(proto, "v5.channel.k8s.io");
    let got = read_channels(&mut ws).await?;
    assert_eq!(got.text(1), "out\n");
    assert_eq!(got.text(2), "err\n");
    assert_eq!(
        got.status(),
        json!({"metadata": {}, "status": "Failure",
            "message": "command terminated with non-zero exit code: exit status 3",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}})
    );
    assert!(got.closed, "server sends a normal close");
    // The first message is the kubelet's empty "ready" marker on stdout.
    assert_eq!(got.messages[0], (1, vec![]));
    // The status comes after all output.
    assert_eq!(got.messages.last().map(|m| m.0), Some(3));
    assert_eq!(
        a.backend.calls(),
        [FakeExecCall::Exec(ExecOptions {
            command: OUT_ERR_EXIT3.iter().map(|s| s.to_string()).collect(),
            container: None,
            stdin: false,
            stdout: true,
            stderr: true,
            tty: false,
        })]
    );

    let path = exec_path(&["true"], "stdout=true");
    let (mut ws, _) = ws_connect(a.addr, &path, &["v5.channel.k8s.io"]).await?;
    let got = read_channels(&mut ws).await?;
    assert_eq!(got.status(), json!({"metadata": {}, "status": "Success"}));
    Ok(())
}

#[tokio::test]
async fn exec_over_websocket_v5_closes_stdin_with_channel_255() -> Result<()> {
    let a = agent().await?;
    let path = exec_path(&["sh", "-c", "cat; echo done"], "stdin=true&stdout=true");
    let (mut ws, _) =
        ws_connect(a.addr, &path, &["v5.channel.k8s.io", "v4.channel.k8s.io"]).await?;
    ws_send(&mut ws, 0, b"hello\n").await?;
    ws_send(&mut ws, 0, b"world\n").await?;
    // Without this close `cat` would never end.
    ws_send(&mut ws, 255, &[0]).await?;
    let got = read_channels(&mut ws).await?;
    assert_eq!(got.text(1), "hello\nworld\ndone\n");
    assert_eq!(got.status()["status"], "Success");
    Ok(())
}

#[tokio::test]
async fn exec_over_websocket_v4_as_kube_rs_speaks_it() -> Result<()> {
    let a = agent().await?;
    let path = exec_path(
        &["sh", "-c", "read x; echo got $x; echo oops >&2; exit 2"],
        "stdin=true&stdout=true&stderr=true",
    );
    let (mut ws, proto) = ws_connect(a.addr, &path, &["v4.channel.k8s.io"]).await?;
    assert_eq!(proto, "v4.channel.k8s.io");
    ws_send(&mut ws, 0, b"hi\n").await?;
    // v4 has no close channel: 255 is just an unknown channel and must be harmless.
    ws_send(&mut ws, 255, &[0]).await?;
    let got = read_channels(&mut ws).await?;
    assert_eq!(got.text(1), "got hi\n");
    assert_eq!(got.text(2), "oops\n");
    assert_eq!(got.status()["reason"], "NonZeroExitCode");
    assert_eq!(got.status()["details"]["causes"][0]["message"], "2");
    Ok(())
}

#[tokio::test]
async fn exec_over_websocket_base64_and_pre_v4_protocols() -> Result<()> {
    let a = agent().await?;
    let path = exec_path(&["sh", "-c", "echo b64; exit 1"], "stdout=true");
    let (mut ws, proto) = ws_connect(a.addr, &path, &["v4.base64.channel.k8s.io"]).await?;
    assert_eq!(proto, "v4.base64.channel.k8s.io");
    let mut texts = Vec::new();
    while let Some(msg) = within("message", ws.next()).await? {
        match msg? {
            Message::Text(t) => texts.push(t.to_string()),
            Message::Close(_) => {}
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    // "1" + base64("b64\n"), then "3" + base64(status).
    assert!(texts.contains(&"1YjY0Cg==".to_string()), "{texts:?}");
    let status = texts.iter().find(|t| t.starts_with('3')).expect("status");
    use base64::Engine as _;
    let status: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(&status[1..])?)?;
    assert_eq!(status["details"]["causes"][0]["message"], "1");

    // channel.k8s.io: the error channel carries text, and nothing on success.
    let (mut ws, proto) = ws_connect(a.addr, &path, &["channel.k8s.io"]).await?;
    assert_eq!(proto, "channel.k8s.io");
    let got = read_channels(&mut ws).await?;
    assert_eq!(got.text(1), "b64\n");
    assert_eq!(
        got.text(3),
        "command terminated with non-zero exit code: exit status 1"
    );
    let path = exec_path(&["true"], "stdout=true");
    let (mut ws, _) = ws_connect(a.addr, &path, &["channel.k8s.io"]).await?;
    let got = read_channels(&mut ws).await?;
    assert!(!got.data.contains_key(&3), "{got:?}");
    Ok(())
}

#[tokio::test]
async fn exec_over_websocket_answers_ping_and_client_close() -> Result<()> {
    let a = agent().await?;
    let path = exec_path(&["sleep", "30"], "stdin=true&stdout=true");
    let (mut ws, _) = ws_connect(a.addr, &path, &["v5.channel.k8s.io"]).await?;
    ws.send(Message::Ping(bytes::Bytes::from_static(b"are you there")))
        .await?;
    loop {
        match within("pong", ws.next()).await?.expect("open")? {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"are you there");
                break;
            }
            Message::Binary(b) => assert_eq!(&b[..], &[1], "only the ready marker"),
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    ws.close(None).await?;
    // The server answers the close and the connection ends.
    while let Some(msg) = within("close reply", ws.next()).await? {
        if msg.is_err() {
            break;
        }
    }
    Ok(())
}

#[tokio::test]
async fn tty_resize_reaches_the_terminal() -> Result<()> {
    let a = agent().await?;
    let path = exec_path(
        &["sh", "-c", "read x; stty size"],
        "stdin=true&stdout=true&tty=true",
    );
    let (mut ws, _) = ws_connect(a.addr, &path, &["v5.channel.k8s.io"]).await?;
    ws_send(&mut ws, 4, br#"{"Width":100,"Height":40}"#).await?;
    let want = TerminalSize {
        width: 100,
        height: 40,
    };
    within("resize applied", async {
        while !a.backend.resizes().contains(&want) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await?;
    ws_send(&mut ws, 0, b"go\n").await?;
    let got = read_channels(&mut ws).await?;
    // The terminal echoes the input, then stty reports rows and columns.
    assert!(got.text(1).contains("40 100"), "{:?}", got.text(1));
    assert_eq!(got.status()["status"], "Success");
    let FakeExecCall::Exec(opts) = &a.backend.calls()[0] else {
        panic!("exec expected")
    };
    assert!(opts.tty && !opts.stderr);
    Ok(())
}

#[tokio::test]
async fn attach_runs_the_backend_attach() -> Result<()> {
    let a = agent_with(
        FakeExecBackend::new().with_attach_command(&["sh", "-c", "echo attached; cat; exit 5"]),
        FakeDialer::new(),
    )
    .await?;
    let (mut ws, _) = ws_connect(
        a.addr,
        "/attach?container=main&stdin=true&stdout=true",
        &["v5.channel.k8s.io"],
    )
    .await?;
    ws_send(&mut ws, 0, b"typed\n").await?;
    ws_send(&mut ws, 255, &[0]).await?;
    let got = read_channels(&mut ws).await?;
    assert_eq!(got.text(1), "attached\ntyped\n");
    // Attach reports no exit code, as the kubelet.
    assert_eq!(got.status()["status"], "Success");
    assert!(
        matches!(&a.backend.calls()[0], FakeExecCall::Attach(o) if o.container.as_deref() == Some("main"))
    );
    Ok(())
}

#[tokio::test]
async fn runtime_errors_become_internal_error_statuses() -> Result<()> {
    // No attach command: the backend's attach fails.
    let a = agent().await?;
    let (mut ws, _) = ws_connect(a.addr, "/attach?stdout=true", &["v4.channel.k8s.io"]).await?;
    let got = read_channels(&mut ws).await?;
    assert_eq!(got.status()["reason"], "InternalError");
    assert_eq!(
        got.status()["message"],
        "Internal error occurred: error attaching to container: container has no attachable process"
    );
    let path = exec_path(&["/no/such/binary"], "stdout=true");
    let (mut ws, _) = ws_connect(a.addr, &path, &["v4.channel.k8s.io"]).await?;
    let got = read_channels(&mut ws).await?;
    let msg = got.status()["message"].as_str().unwrap_or("").to_string();
    assert!(
        msg.starts_with("Internal error occurred: error executing command in container: "),
        "{msg}"
    );
    Ok(())
}

#[tokio::test]
async fn exec_over_spdy_v4() -> Result<()> {
    let a = agent().await?;
    let path = exec_path(
        &["sh", "-c", "cat; echo err >&2; exit 3"],
        "stdin=true&stdout=true&stderr=true",
    );
    let offered = [
        "v5.channel.k8s.io",
        "v4.channel.k8s.io",
        "v3.channel.k8s.io",
        "v2.channel.k8s.io",
        "channel.k8s.io",
    ];
    let (status, headers, conn) = spdy_upgrade(a.addr, &path, &offered).await?;
    assert_eq!(status, 101);
    assert_eq!(headers["upgrade"], ["SPDY/3.1"]);
    assert_eq!(headers["x-stream-protocol-version"], ["v4.channel.k8s.io"]);
    let mut c = SpdyClient::new(Transport::Tcp(conn));
    // client-go's order, each waiting for its reply.
    let error = c.open_and_wait(&[("streamtype", "error")]).await?;
    let stdin = c.open_and_wait(&[("streamtype", "stdin")]).await?;
    let stdout = c.open_and_wait(&[("streamtype", "stdout")]).await?;
    let stderr = c.open_and_wait(&[("streamtype", "stderr")]).await?;
    c.write(stdin, b"through spdy\n", false).await?;
    c.write(stdin, b"", true).await?;
    c.until("all streams finished", |c| {
        [error, stdout, stderr].iter().all(|id| c.fin.contains(id))
    })
    .await?;
    assert_eq!(c.text(stdout), "through spdy\n");
    assert_eq!(c.text(stderr), "err\n");
    let status: serde_json::Value = serde_json::from_slice(&c.data[&error])?;
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    c.until("goaway", |c| c.goaway).await?;
    Ok(())
}

#[tokio::test]
async fn exec_over_spdy_pre_v4_and_tty_resize() -> Result<()> {
    let a = agent().await?;
    // v2: success leaves the error stream empty.
    let path = exec_path(&["echo", "v2"], "stdout=true");
    let (status, headers, conn) = spdy_upgrade(a.addr, &path, &["v2.channel.k8s.io"]).await?;
    assert_eq!(status, 101);
    assert_eq!(headers["x-stream-protocol-version"], ["v2.channel.k8s.io"]);
    let mut c = SpdyClient::new(Transport::Tcp(conn));
    let error = c.open_and_wait(&[("streamtype", "error")]).await?;
    let stdout = c.open_and_wait(&[("streamtype", "stdout")]).await?;
    c.until("finish", |c| {
        c.fin.contains(&error) && c.fin.contains(&stdout)
    })
    .await?;
    assert_eq!(c.text(stdout), "v2\n");
    assert_eq!(c.text(error), "");

    // v4 with a terminal: the resize stream is part of the session.
    let path = exec_path(
        &["sh", "-c", "read x; stty size"],
        "stdin=true&stdout=true&tty=true",
    );
    let (_, _, conn) = spdy_upgrade(a.addr, &path, &["v4.channel.k8s.io"]).await?;
    let mut c = SpdyClient::new(Transport::Tcp(conn));
    let error = c.open_and_wait(&[("streamtype", "error")]).await?;
    let stdin = c.open_and_wait(&[("streamtype", "stdin")]).await?;
    let stdout = c.open_and_wait(&[("streamtype", "stdout")]).await?;
    let resize = c.open_and_wait(&[("streamtype", "resize")]).await?;
    c.write(resize, br#"{"Width":132,"Height":50}"#, false)
        .await?;
    let want = TerminalSize {
        width: 132,
        height: 50,
    };
    within("resize applied", async {
        while !a.backend.resizes().contains(&want) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await?;
    c.write(stdin, b"go\n", false).await?;
    c.until("finish", |c| {
        c.fin.contains(&error) && c.fin.contains(&stdout)
    })
    .await?;
    assert!(c.text(stdout).contains("50 132"), "{:?}", c.text(stdout));
    assert_eq!(c.text(error), r#"{"metadata":{},"status":"Success"}"#);
    Ok(())
}

#[tokio::test]
async fn refusals_are_statuses_naming_the_problem() -> Result<()> {
    let a = agent().await?;
    // A plain GET, no upgrade.
    let (status, body) = plain_get(a.addr, &exec_path(&["ls"], "stdout=true")).await?;
    assert_eq!(status, 400);
    let body: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "BadRequest");
    assert!(
        body["message"].as_str().unwrap().contains("upgrade"),
        "{body}"
    );
    // No stream asked for.
    let (status, body) = plain_get(a.addr, &exec_path(&["ls"], "")).await?;
    assert_eq!(status, 400);
    assert!(
        body.contains("you must specify at least 1 of stdin, stdout, stderr"),
        "{body}"
    );
    // A websocket subprotocol nobody speaks.
    let err = ws_connect(
        a.addr,
        &exec_path(&["ls"], "stdout=true"),
        &["v9.channel.k8s.io"],
    )
    .await
    .expect_err("refused");
    assert!(format!("{err:#}").contains("400"), "{err:#}");
    // A SPDY version nobody speaks: 400 and the versions that would do.
    let (status, headers, _) = spdy_upgrade(
        a.addr,
        &exec_path(&["ls"], "stdout=true"),
        &["v9.channel.k8s.io"],
    )
    .await?;
    assert_eq!(status, 400);
    assert_eq!(
        headers["x-accepted-stream-protocol-versions"],
        [
            "v4.channel.k8s.io",
            "v3.channel.k8s.io",
            "v2.channel.k8s.io",
            "channel.k8s.io"
        ]
    );
    // The websocket channel protocol of port-forward needs ports.
    let err = ws_connect(a.addr, "/portforward", &["v4.channel.k8s.io"])
        .await
        .expect_err("refused");
    assert!(format!("{err:#}").contains("400"), "{err:#}");
    assert!(a.backend.calls().is_empty());
    Ok(())
}

async fn plain_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut resp = String::new();
    within("response", conn.read_to_string(&mut resp)).await??;
    let status = resp[9..12].parse()?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// One forwarded connection over SPDY: error stream, data stream, request, answer.
async fn spdy_forward_once(
    c: &mut SpdyClient,
    port: &str,
    request_id: &str,
    payload: &[u8],
    half_close: bool,
) -> Result<(String, String)> {
    let error = c
        .open_and_wait(&[
            ("streamtype", "error"),
            ("port", port),
            ("requestid", request_id),
        ])
        .await?;
    // kubectl half-closes the error stream at once.
    c.write(error, b"", true).await?;
    let data = c
        .open_and_wait(&[
            ("streamtype", "data"),
            ("port", port),
            ("requestid", request_id),
        ])
        .await?;
    c.write(data, payload, half_close).await?;
    c.until("data and error streams finished", |c| {
        c.fin.contains(&data) && c.fin.contains(&error)
    })
    .await?;
    // kubectl resets the data stream when the copy is done.
    c.send(Frame::RstStream {
        stream_id: data,
        status: rst::CANCEL,
    })
    .await?;
    Ok((c.text(data), c.text(error)))
}

#[tokio::test]
async fn port_forward_spdy_tunnelled_in_websocket() -> Result<()> {
    let (web, _web) = http_server("hello from the pod").await?;
    let (echo, _echo) = upper_to_eof_server().await?;
    let a = agent_with(
        FakeExecBackend::new(),
        FakeDialer::new().route(80, web).route(7, echo),
    )
    .await?;
    // kubectl 1.32: no ports in the URL.
    let (ws, proto) = ws_connect(a.addr, "/portforward", &["SPDY/3.1+portforward.k8s.io"]).await?;
    assert_eq!(proto, "SPDY/3.1+portforward.k8s.io");
    let mut c = SpdyClient::new(Transport::Ws(Box::new(ws)));
    let (body, err) = spdy_forward_once(
        &mut c,
        "80",
        "0",
        b"GET / HTTP/1.1\r\nHost: pod\r\n\r\n",
        false,
    )
    .await?;
    assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body:?}");
    assert!(body.ends_with("hello from the pod"), "{body:?}");
    assert_eq!(err, "");
    // A second connection on the same session; the FIN reaches the pod as EOF.
    let (body, err) = spdy_forward_once(&mut c, "7", "1", b"shout", true).await?;
    assert_eq!((body.as_str(), err.as_str()), ("SHOUT", ""));
    c.send(Frame::Ping { id: 1 }).await?;
    c.until("ping echo", |c| c.pings.contains(&1)).await?;
    assert_eq!(a.dialer.dialed(), [80, 7]);
    Ok(())
}

#[tokio::test]
async fn port_forward_raw_spdy_and_dial_errors() -> Result<()> {
    let (web, _web) = http_server("raw spdy").await?;
    let a = agent_with(FakeExecBackend::new(), FakeDialer::new().route(80, web)).await?;
    let (status, headers, conn) =
        spdy_upgrade(a.addr, "/portforward", &["portforward.k8s.io"]).await?;
    assert_eq!(status, 101);
    assert_eq!(headers["x-stream-protocol-version"], ["portforward.k8s.io"]);
    let mut c = SpdyClient::new(Transport::Tcp(conn));
    let (body, err) =
        spdy_forward_once(&mut c, "80", "0", b"GET / HTTP/1.1\r\n\r\n", false).await?;
    assert!(body.ends_with("raw spdy"), "{body:?}");
    assert_eq!(err, "");
    // Nothing listens on 81: the error stream says so.
    let (body, err) = spdy_forward_once(&mut c, "81", "1", b"x", false).await?;
    assert_eq!(body, "");
    assert!(
        err.starts_with("error forwarding port 81 to pod default/web: ")
            && err.contains("connection refused"),
        "{err:?}"
    );
    // A stream without a port is reset.
    let bad = c
        .open(&[("streamtype", "data"), ("requestid", "2")])
        .await?;
    c.until("reset", |c| c.reset.contains(&bad)).await?;
    ensure!(
        !c.replied.contains(&bad),
        "invalid stream must not be accepted"
    );
    Ok(())
}

#[tokio::test]
async fn port_forward_websocket_channels_as_kube_rs_speaks_it() -> Result<()> {
    let (web, _web) = http_server("channel bytes").await?;
    let (echo, _echo) = upper_once_server().await?;
    let a = agent_with(
        FakeExecBackend::new(),
        FakeDialer::new().route(80, web).route(8080, echo),
    )
    .await?;
    let (mut ws, proto) = ws_connect(
        a.addr,
        "/portforward?ports=80&ports=8080",
        &["v4.channel.k8s.io"],
    )
    .await?;
    assert_eq!(proto, "v4.channel.k8s.io");
    // Each channel opens with its port, two bytes little-endian.
    let mut first = Vec::new();
    while first.len() < 4 {
        match within("port prefix", ws.next()).await?.expect("open")? {
            Message::Binary(b) => first.push(b.to_vec()),
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    first.sort();
    assert_eq!(
        first,
        [
            vec![0, 80, 0],
            vec![1, 80, 0],
            vec![2, 0x90, 0x1f],
            vec![3, 0x90, 0x1f]
        ]
    );
    ws_send(&mut ws, 0, b"GET / HTTP/1.1\r\n\r\n").await?;
    ws_send(&mut ws, 2, b"quiet").await?;
    // Both pod connections close after answering, which ends the session.
    let got = read_channels(&mut ws).await?;
    assert!(got.text(0).ends_with("channel bytes"), "{:?}", got.text(0));
    assert_eq!(got.text(2), "QUIET");
    assert!(
        !got.data.contains_key(&1) && !got.data.contains_key(&3),
        "no errors: {got:?}"
    );
    assert!(got.closed);

    // A port nobody listens on: its error channel says so.
    let (mut ws, _) = ws_connect(a.addr, "/portforward?ports=9", &["v4.channel.k8s.io"]).await?;
    let mut error = String::new();
    while error.is_empty() {
        if let Message::Binary(b) = within("error", ws.next()).await?.expect("open")? {
            if b[0] == 1 && b.len() > 3 {
                error = String::from_utf8_lossy(&b[1..]).into_owned();
            }
        }
    }
    assert!(
        error.starts_with("error forwarding port 9 to pod default/web: "),
        "{error}"
    );
    Ok(())
}
