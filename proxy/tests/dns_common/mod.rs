//! Shared by the DNS integration tests: Service and EndpointSlice fixtures, and a bare DNS
//! client (one hickory-proto message over UDP or TCP, as a stub resolver sends it).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use berth_proxy::dns::index::SERVICE_NAME_LABEL;
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const TIMEOUT: Duration = Duration::from_secs(5);

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..ObjectMeta::default()
    }
}

/// A ClusterIP Service (`"None"` for headless) with named TCP ports.
pub fn service(ns: &str, name: &str, cluster_ip: &str, ports: &[(&str, i32)]) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.into()),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| ServicePort {
                        name: Some(n.to_string()),
                        port: *p,
                        protocol: Some("TCP".into()),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// An IPv4 EndpointSlice of `service` with ready endpoints (ip, optional hostname).
pub fn slice(ns: &str, name: &str, service: &str, eps: &[(&str, Option<&str>)]) -> EndpointSlice {
    let mut m = meta(ns, name);
    m.labels = Some(BTreeMap::from([(
        SERVICE_NAME_LABEL.into(),
        service.into(),
    )]));
    EndpointSlice {
        metadata: m,
        address_type: "IPv4".into(),
        endpoints: eps
            .iter()
            .map(|(ip, host)| Endpoint {
                addresses: vec![ip.to_string()],
                hostname: host.map(Into::into),
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    ..EndpointConditions::default()
                }),
                ..Endpoint::default()
            })
            .collect(),
        ports: None,
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Via {
    Udp,
    Tcp,
}

/// A query for `name`/`qtype`, with EDNS advertising `edns_payload` if given.
pub fn query(name: &str, qtype: RecordType, edns_payload: Option<u16>) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(p) = edns_payload {
        let mut e = Edns::new();
        e.set_max_payload(p);
        m.set_edns(e);
    }
    m
}

/// Sends `msg` to `server` and returns the response (checked to answer this query's id).
pub async fn exchange(server: SocketAddr, via: Via, msg: &Message) -> anyhow::Result<Message> {
    let bytes = msg.to_vec()?;
    let resp = tokio::time::timeout(TIMEOUT, async {
        match via {
            Via::Udp => {
                let sock = UdpSocket::bind("127.0.0.1:0").await?;
                sock.send_to(&bytes, server).await?;
                let mut buf = vec![0u8; 65535];
                let (n, _) = sock.recv_from(&mut buf).await?;
                buf.truncate(n);
                anyhow::Ok(buf)
            }
            Via::Tcp => {
                let mut s = TcpStream::connect(server).await?;
                let len = u16::try_from(bytes.len())?;
                s.write_all(&len.to_be_bytes()).await?;
                s.write_all(&bytes).await?;
                let n = s.read_u16().await?;
                let mut buf = vec![0u8; usize::from(n)];
                s.read_exact(&mut buf).await?;
                Ok(buf)
            }
        }
    })
    .await
    .context("no dns response in time")??;
    let resp = Message::from_vec(&resp)?;
    anyhow::ensure!(
        resp.metadata.id == msg.metadata.id,
        "response for another query"
    );
    Ok(resp)
}

/// The addresses (A and AAAA) in the answer section, as strings, in order.
pub fn addrs(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// The answer section as zone-file lines.
pub fn answers(m: &Message) -> Vec<String> {
    m.answers.iter().map(ToString::to_string).collect()
}
