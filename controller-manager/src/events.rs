//! Events (core/v1), written in the background so the caller never waits on them: the node
//! agent's Pulled, Started, BackOff..., the scheduler's Scheduled and FailedScheduling, the
//! controllers' SuccessfulCreate, ScalingReplicaSet... A repeat of the same event within ten
//! minutes bumps the count of the one already written, as client-go's event correlator does.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use tokio::sync::mpsc;

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

#[derive(Debug, Clone)]
struct Pending {
    object: ObjectReference,
    kind: Kind,
    reason: String,
    message: String,
}

/// Sends events to the background writer.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Recorder {
    /// Start the writer for `component` (`kubelet`, `default-scheduler`...), running on
    /// `host` when it is a per-node component; it stops when every recorder is dropped.
    pub fn start(client: kube::Client, component: &str, host: Option<String>) -> Recorder {
        let (tx, rx) = mpsc::unbounded_channel();
        let source = EventSource {
            component: Some(component.to_string()),
            host,
        };
        tokio::spawn(write_events(client, source, rx));
        Recorder { tx }
    }

    /// A recorder whose events go nowhere but the returned receiver (tests).
    pub fn detached() -> (Recorder, mpsc::UnboundedReceiver<(String, String)>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Pending>();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                let _ = out_tx.send((p.reason, p.message));
            }
        });
        (Recorder { tx }, out_rx)
    }

    /// An event about any object.
    pub fn object(&self, object: ObjectReference, kind: Kind, reason: &str, message: String) {
        let _ = self.tx.send(Pending {
            object,
            kind,
            reason: reason.into(),
            message,
        });
    }

    /// An event about `pod`, or one of its containers when `container` is given.
    pub fn pod(
        &self,
        pod: &Pod,
        container: Option<&str>,
        kind: Kind,
        reason: &str,
        message: String,
    ) {
        let field_path = container.map(|c| {
            let init = pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|l| l.iter().any(|x| x.name == c));
            if init {
                format!("spec.initContainers{{{c}}}")
            } else {
                format!("spec.containers{{{c}}}")
            }
        });
        let object = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            field_path,
        };
        self.object(object, kind, reason, message);
    }
}

/// (namespace, object uid, field path, reason, message): what makes two events the same.
type EventKey = (String, String, String, String, String);

async fn write_events(
    client: kube::Client,
    source: EventSource,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    // (namespace, object uid, field path, reason, message) -> (event name, count, when)
    let mut seen: HashMap<EventKey, (String, i32, Instant)> = HashMap::new();
    let mut serial = 0u64;
    while let Some(p) = rx.recv().await {
        let ns = p
            .object
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(client.clone(), &ns);
        let key = (
            ns.clone(),
            p.object.uid.clone().unwrap_or_default(),
            p.object.field_path.clone().unwrap_or_default(),
            p.reason.clone(),
            p.message.clone(),
        );
        let now = Timestamp::now();
        seen.retain(|_, (_, _, at)| at.elapsed() < Duration::from_secs(600));
        if let Some((name, count, at)) = seen.get_mut(&key) {
            *count += 1;
            *at = Instant::now();
            let patch =
                serde_json::json!({"count": *count, "lastTimestamp": Time(now), "series": null});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, event = %name, "bumping an event failed; writing a new one")
                }
            }
        }
        serial += 1;
        let name = format!(
            "{}.{:x}{:04x}",
            p.object.name.clone().unwrap_or_default(),
            now.as_nanosecond() as u64,
            serial & 0xffff
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: p.object.clone(),
            reason: Some(p.reason.clone()),
            message: Some(p.message.clone()),
            type_: Some(match p.kind {
                Kind::Normal => "Normal".into(),
                Kind::Warning => "Warning".into(),
            }),
            source: Some(source.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: None::<MicroTime>,
            count: Some(1),
            reporting_component: source.component.clone(),
            reporting_instance: source.host.clone().or_else(|| source.component.clone()),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                seen.insert(key, (name, 1, Instant::now()));
            }
            Err(e) => tracing::warn!(error = %e, reason = %p.reason, "writing an event failed"),
        }
    }
}
