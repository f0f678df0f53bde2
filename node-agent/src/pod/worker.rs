//! One pod's worker: observe, plan, act, report, wait; until the pod is gone from the API
//! and nothing of it is left on the node.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_runtime::pod::{ContainerState, Runtime};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Api;
use serde_json::json;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::plan::{self, Action, Observed, Plan, SandboxObs, Waiting};
use super::status::{self, StatusCtx};
use super::translate::{self, EnvCtx, Sources};
use super::{volumes, POD_UID_LABEL};
use crate::cni::Attachment;
use crate::events::Kind;
use crate::probe;
use crate::Agent;

#[derive(Debug, Clone)]
pub struct PodKey {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Label of every sandbox: its attempt number.
const ATTEMPT_LABEL: &str = "berth.io/sandbox-attempt";
/// How often a worker looks even when nothing woke it.
const RESYNC: Duration = Duration::from_secs(30);

async fn blocking<T: Send + 'static>(
    rt: &Arc<Runtime>,
    f: impl FnOnce(&Runtime) -> T + Send + 'static,
) -> T {
    let rt = rt.clone();
    tokio::task::spawn_blocking(move || f(&rt))
        .await
        .expect("runtime call panicked")
}

struct Worker {
    agent: Arc<Agent>,
    key: PodKey,
    wake: Arc<Notify>,
    /// Why containers (by name) could not be made, and when to try again.
    failures: BTreeMap<String, (Waiting, Option<Timestamp>)>,
    /// Attempts of failures, for their back-off.
    failure_counts: HashMap<String, u32>,
    exit_watch: HashMap<String, JoinHandle<()>>,
    /// The waiting reasons last reported, to send BackOff events once per wait.
    last_waiting: BTreeMap<String, Waiting>,
    last_status: Option<serde_json::Value>,
}

pub async fn run(agent: Arc<Agent>, store: Store<Pod>, key: PodKey, wake: Arc<Notify>) {
    use tracing::Instrument;
    let span = tracing::info_span!("pod", pod = %key, uid = %key.uid);
    run_inner(agent, store, key, wake).instrument(span).await
}

async fn run_inner(agent: Arc<Agent>, store: Store<Pod>, key: PodKey, wake: Arc<Notify>) {
    let mut failed_passes = 0u32;
    let mut w = Worker {
        agent,
        key,
        wake,
        failures: BTreeMap::new(),
        failure_counts: HashMap::new(),
        exit_watch: HashMap::new(),
        last_waiting: BTreeMap::new(),
        last_status: None,
    };
    loop {
        let pod = store
            .get(&ObjectRef::new(&w.key.name).within(&w.key.namespace))
            .filter(|p| p.metadata.uid.as_deref() == Some(w.key.uid.as_str()));
        let Some(pod) = pod else {
            // Gone from the API (deleted while we were away, or force-deleted): nothing of
            // it may stay on the node. Removing a pod cannot be undone, so ask the API
            // server itself before believing the cache.
            let api: Api<Pod> = Api::namespaced(w.agent.client.clone(), &w.key.namespace);
            match api.get_opt(&w.key.name).await {
                Ok(Some(p)) if p.metadata.uid.as_deref() == Some(w.key.uid.as_str()) => {
                    tokio::select! {
                        _ = w.wake.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(pod = %w.key, error = %e, "cannot confirm the pod is gone; waiting");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            }
            w.teardown(None).await;
            tracing::info!(pod = %w.key, "pod is gone; removed from the node");
            return;
        };
        let wake_at = match w.sync(&pod).await {
            Ok(Next::Again) => {
                failed_passes = 0;
                continue;
            }
            Ok(Next::Failed) => {
                // Something could not be done (a sandbox, the network): try again later,
                // waiting longer each time, rather than spin.
                failed_passes += 1;
                let secs = 1u64 << failed_passes.min(6);
                Some(Timestamp::now() + Duration::from_secs(secs))
            }
            Ok(Next::Wait(at)) => at,
            Ok(Next::Done) => {
                // Deleted in the API; wait for the watch to drop it.
                None
            }
            Err(e) => {
                tracing::warn!(pod = %w.key, error = %e, "sync failed; retrying");
                Some(Timestamp::now() + Duration::from_secs(2))
            }
        };
        let sleep = wake_at
            .map(|at| {
                let d = at.duration_since(Timestamp::now());
                Duration::from_millis(d.as_millis().clamp(0, RESYNC.as_millis() as i128) as u64)
            })
            .unwrap_or(RESYNC);
        tokio::select! {
            _ = w.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

enum Next {
    /// Something was done: look again at once.
    Again,
    /// An action failed: look again after a pause.
    Failed,
    /// Nothing to do until woken or this time.
    Wait(Option<Timestamp>),
    /// The pod was finalised in the API.
    Done,
}

impl Worker {
    fn sandbox_dir(&self) -> PathBuf {
        self.agent.cfg.dir.join("pods").join(&self.key.uid)
    }

    fn net_file(&self, sandbox: &str) -> PathBuf {
        self.sandbox_dir().join(format!("net-{sandbox}.json"))
    }

    fn log_path(&self, name: &str, attempt: u32) -> PathBuf {
        self.agent
            .cfg
            .dir
            .join("logs")
            .join(format!(
                "{}_{}_{}",
                self.key.namespace, self.key.name, self.key.uid
            ))
            .join(name)
            .join(format!("{attempt}.log"))
    }

    async fn observe(
        &self,
        host_network: bool,
    ) -> berth_runtime::pod::Result<(Observed, Vec<String>)> {
        let uid = self.key.uid.clone();
        let (mut sandboxes, containers) = blocking(&self.agent.rt, move |rt| {
            let mut mine: Vec<_> = rt
                .list_sandboxes_with_prefix(&sandbox_prefix(&uid))?
                .into_iter()
                .filter(|s| s.config.labels.get(POD_UID_LABEL) == Some(&uid))
                .collect();
            mine.sort_by_key(attempt_of);
            let containers = match mine.last() {
                Some(s) => rt.list_containers(Some(&s.id))?,
                None => vec![],
            };
            Ok::<_, berth_runtime::pod::Error>((mine, containers))
        })
        .await?;
        let newest = sandboxes.pop();
        let mut ips = Vec::new();
        let sandbox = newest.map(|s| {
            let net = if host_network {
                ips = vec![self.agent.facts.ip.clone()];
                true
            } else {
                match std::fs::read(self.net_file(&s.id))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<NetRecord>(&b).ok())
                {
                    Some(r) => {
                        ips = r.ips;
                        true
                    }
                    None => false,
                }
            };
            SandboxObs {
                attempt: attempt_of(&s),
                ready: s.ready && net,
                id: s.id,
            }
        });
        Ok((
            Observed {
                sandbox,
                stale_sandboxes: sandboxes.into_iter().map(|s| s.id).collect(),
                containers,
            },
            ips,
        ))
    }

    async fn sync(&mut self, pod: &Pod) -> anyhow::Result<Next> {
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let (obs, ips) = self.observe(host_network).await?;
        let now = Timestamp::now();
        self.start_probes(pod, &obs, &ips);
        let probes = self.agent.probes.snapshot();
        let plan = {
            let backoff = self.agent.backoff.lock().expect("backoff");
            plan::plan(
                pod,
                &obs,
                plan::Ctx {
                    now,
                    backoff: &backoff,
                    probes: &probes,
                    failures: &self.failures,
                },
            )
        };
        self.watch_exits(&obs).await;
        for (name, w) in &plan.waiting {
            if self.last_waiting.get(name) != Some(w) && w.reason == "CrashLoopBackOff" {
                self.agent.events.pod(
                    pod,
                    Some(name),
                    Kind::Warning,
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {name} in pod {}_{}({})",
                        self.key.name, self.key.namespace, self.key.uid
                    ),
                );
            }
        }
        self.last_waiting = plan.waiting.clone();
        self.report(pod, &obs, &plan, &ips, &probes).await;

        if pod.metadata.deletion_timestamp.is_some()
            && !obs.anything_running()
            && plan.actions.is_empty()
        {
            self.teardown(Some(pod)).await;
            self.finalize(pod).await?;
            return Ok(Next::Done);
        }
        if plan.actions.is_empty() {
            return Ok(Next::Wait(plan.wake_at));
        }
        let mut ok = true;
        for action in &plan.actions {
            ok &= self.act(pod, &obs, action).await;
        }
        Ok(if ok { Next::Again } else { Next::Failed })
    }

    async fn report(
        &mut self,
        pod: &Pod,
        obs: &Observed,
        plan: &Plan,
        ips: &[String],
        probes: &BTreeMap<String, plan::ProbeState>,
    ) {
        let status = status::pod_status(
            pod,
            obs,
            plan,
            StatusCtx {
                now: Timestamp::now(),
                host_ip: &self.agent.facts.ip,
                pod_ips: ips,
                probes,
            },
        );
        let value = serde_json::to_value(&status).expect("serialises");
        let current = pod
            .status
            .as_ref()
            .map(|s| serde_json::to_value(s).expect("serialises"));
        if current.as_ref() == Some(&value)
            || self.last_status.as_ref() == Some(&value) && current.is_none()
        {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.agent.client.clone(), &self.key.namespace);
        let patch = json!([
            {"op": "test", "path": "/metadata/uid", "value": self.key.uid},
            {"op": "add", "path": "/status", "value": value},
        ]);
        match api
            .patch_status(
                &self.key.name,
                &PatchParams::default(),
                &Patch::<()>::Json(serde_json::from_value(patch).expect("a JSON patch")),
            )
            .await
        {
            Ok(_) => self.last_status = Some(value),
            Err(e) => tracing::warn!(pod = %self.key, error = %e, "reporting pod status failed"),
        }
    }

    /// Tell the API server the pod is gone from the node.
    async fn finalize(&self, pod: &Pod) -> anyhow::Result<()> {
        let api: Api<Pod> = Api::namespaced(self.agent.client.clone(), &self.key.namespace);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&self.key.name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn watch_exits(&mut self, obs: &Observed) {
        self.exit_watch.retain(|_, h| !h.is_finished());
        let mut ids: Vec<String> = obs
            .containers
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .map(|c| c.id.clone())
            .collect();
        if let Some(sb) = obs.sandbox.as_ref().filter(|s| s.ready) {
            ids.push(format!("{}-pause", sb.id));
        }
        for id in ids {
            if self.exit_watch.contains_key(&id) {
                continue;
            }
            let rt = self.agent.rt.clone();
            let wake = self.wake.clone();
            let cid = id.clone();
            let h = tokio::spawn(async move {
                let fd = match tokio::task::spawn_blocking(move || rt.exit_fd(&cid)).await {
                    Ok(Ok(Some(fd))) => fd,
                    // Already over (or unknown): the worker will see that itself.
                    _ => {
                        wake.notify_one();
                        return;
                    }
                };
                // `with_interest` is deprecated in favour of the unsafe `register_*`: the
                // concern is a descriptor closed while registered, which cannot happen here
                // as the AsyncFd owns it.
                #[allow(deprecated)]
                let fd = AsyncFd::with_interest(fd, tokio::io::Interest::READABLE);
                if let Ok(fd) = fd {
                    let _ = fd.readable().await;
                }
                wake.notify_one();
            });
            self.exit_watch.insert(id, h);
        }
    }

    fn start_probes(&self, pod: &Pod, obs: &Observed, ips: &[String]) {
        let Some(spec) = pod.spec.as_ref() else {
            return;
        };
        let statuses: Vec<_> = pod
            .status
            .iter()
            .flat_map(|s| {
                s.container_statuses
                    .iter()
                    .flatten()
                    .chain(s.init_container_statuses.iter().flatten())
            })
            .collect();
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let Some(latest) = obs.latest(&c.name) else {
                continue;
            };
            if latest.state != ContainerState::Running || self.agent.probes.is_probing(&latest.id) {
                continue;
            }
            let cid = status::container_id(&latest.id);
            let was = statuses
                .iter()
                .find(|s| s.container_id.as_deref() == Some(cid.as_str()))
                .map(|s| (s.ready, s.started.unwrap_or(false)))
                .unwrap_or((false, false));
            let events = self.agent.events.clone();
            let pod2 = pod.clone();
            let name = c.name.clone();
            let target = probe::Target {
                ip: ips
                    .first()
                    .cloned()
                    .unwrap_or_else(|| self.agent.facts.ip.clone()),
                exec: self.agent.clone(),
                on_failure: Arc::new(move |kind, msg| {
                    let what = match kind {
                        probe::Kind::Liveness => "Liveness",
                        probe::Kind::Readiness => "Readiness",
                        probe::Kind::Startup => "Startup",
                    };
                    events.pod(
                        &pod2,
                        Some(&name),
                        Kind::Warning,
                        "Unhealthy",
                        format!("{what} probe failed: {msg}"),
                    );
                }),
            };
            self.agent
                .probes
                .start(&latest.id, c, target, self.wake.clone(), was);
        }
    }

    fn grace(&self, pod: &Pod) -> Duration {
        let secs = pod
            .metadata
            .deletion_grace_period_seconds
            .or(pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30);
        Duration::from_secs(secs.max(0) as u64)
    }

    async fn act(&mut self, pod: &Pod, obs: &Observed, action: &Action) -> bool {
        let starts = matches!(
            action,
            Action::CreateSandbox { .. } | Action::StartContainer { .. }
        );
        if starts && self.agent.fence.is_fenced() {
            // Fenced: nothing starts until the Lease is renewed.
            return false;
        }
        let result = match action {
            Action::CreateSandbox { attempt } => self.create_sandbox(pod, *attempt).await,
            Action::StopPod => {
                self.stop_pod(pod, obs).await;
                Ok(())
            }
            Action::RemoveSandbox { id } => self.remove_sandbox(id, Duration::from_secs(2)).await,
            Action::StartContainer {
                name,
                init,
                attempt,
                restart,
            } => {
                self.start_container(pod, obs, name, *init, *attempt, *restart)
                    .await;
                Ok(())
            }
            Action::KillContainer { id, name, message } => {
                self.agent
                    .events
                    .pod(pod, Some(name), Kind::Normal, "Killing", message.clone());
                self.agent.probes.stop(id);
                let grace = self.grace(pod);
                let id = id.clone();
                blocking(&self.agent.rt, move |rt| rt.stop_container(&id, grace))
                    .await
                    .map_err(anyhow::Error::from)
            }
            Action::RemoveContainer { id } => {
                self.agent.probes.stop(id);
                let id = id.clone();
                blocking(&self.agent.rt, move |rt| rt.remove_container(&id))
                    .await
                    .map_err(anyhow::Error::from)
            }
        };
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(pod = %self.key, ?action, error = %format!("{e:#}"), "action failed");
                false
            }
        }
    }

    async fn create_sandbox(&mut self, pod: &Pod, attempt: u32) -> anyhow::Result<()> {
        let id = format!("{}{attempt}", sandbox_prefix(&self.key.uid));
        let dns = self.agent.dns_settings();
        let mut cfg = translate::sandbox_config(pod, &id, &dns);
        cfg.labels.insert(ATTEMPT_LABEL.into(), attempt.to_string());
        std::fs::create_dir_all(self.sandbox_dir())?;
        let t0 = std::time::Instant::now();
        let sandbox = match blocking(&self.agent.rt, move |rt| rt.run_sandbox(&cfg)).await {
            Ok(s) => s,
            Err(e) => {
                self.agent.events.pod(
                    pod,
                    None,
                    Kind::Warning,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {e}"),
                );
                return Err(e.into());
            }
        };
        if sandbox.config.host_network {
            return Ok(());
        }
        let Some(netns) = sandbox.netns.clone() else {
            anyhow::bail!("sandbox {id} has no network namespace");
        };
        let Some(cni) = self.agent.cni.clone() else {
            self.agent.events.pod(
                pod,
                None,
                Kind::Warning,
                "NetworkNotReady",
                "network is not ready: no CNI configuration".into(),
            );
            let sid = id.clone();
            let _ = blocking(&self.agent.rt, move |rt| rt.remove_sandbox(&sid)).await;
            anyhow::bail!("no CNI configuration");
        };
        let t1 = std::time::Instant::now();
        match cni.add(&id, &netns).await {
            Ok(att) => {
                tracing::debug!(
                    pod = %self.key,
                    sandbox_ms = (t1 - t0).as_millis() as u64,
                    network_ms = t1.elapsed().as_millis() as u64,
                    "sandbox ready"
                );
                let rec = NetRecord {
                    ips: att.ips.clone(),
                    result: att.result.clone(),
                };
                write_file(&self.net_file(&id), &serde_json::to_vec(&rec)?)?;
                let ips = att.ips.clone();
                let sid = id.clone();
                blocking(&self.agent.rt, move |rt| rt.write_hosts(&sid, &ips)).await?;
                Ok(())
            }
            Err(e) => {
                self.agent.events.pod(
                    pod,
                    None,
                    Kind::Warning,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: network: {e}"),
                );
                let sid = id.clone();
                let _ = blocking(&self.agent.rt, move |rt| {
                    let _ = rt.stop_sandbox(&sid, Duration::ZERO);
                    rt.remove_sandbox(&sid)
                })
                .await;
                Err(e.into())
            }
        }
    }

    /// Detach the sandbox from the network (once; the record goes with it).
    async fn release_network(&self, sandbox: &str) {
        let path = self.net_file(sandbox);
        let Ok(bytes) = std::fs::read(&path) else {
            return;
        };
        let rec: Option<NetRecord> = serde_json::from_slice(&bytes).ok();
        if let Some(cni) = &self.agent.cni {
            let netns = PathBuf::from("/proc/self/ns/none");
            let prev = rec.as_ref().map(|r| &r.result);
            if let Err(e) = cni.del(sandbox, &netns, prev).await {
                tracing::warn!(pod = %self.key, %sandbox, error = %e, "CNI DEL failed");
            }
        }
        let _ = std::fs::remove_file(&path);
    }

    async fn stop_pod(&mut self, pod: &Pod, obs: &Observed) {
        let grace = self.grace(pod);
        let running: Vec<_> = obs
            .containers
            .iter()
            .filter(|c| matches!(c.state, ContainerState::Running | ContainerState::Created))
            .cloned()
            .collect();
        // Members in parallel, each with its grace period, as kubelet does.
        let mut stops = Vec::new();
        for c in running {
            self.agent.events.pod(
                pod,
                Some(&c.name),
                Kind::Normal,
                "Killing",
                format!("Stopping container {}", c.name),
            );
            self.agent.probes.stop(&c.id);
            let id = c.id.clone();
            stops.push(blocking(&self.agent.rt, move |rt| {
                rt.stop_container(&id, grace)
            }));
        }
        for r in futures::future::join_all(stops).await {
            if let Err(e) = r {
                tracing::warn!(pod = %self.key, error = %e, "stopping a container failed");
            }
        }
        if let Some(sb) = &obs.sandbox {
            let id = sb.id.clone();
            if let Err(e) = blocking(&self.agent.rt, move |rt| {
                rt.stop_sandbox(&id, Duration::from_secs(2))
            })
            .await
            {
                tracing::warn!(pod = %self.key, error = %e, "stopping the sandbox failed");
            }
            self.release_network(&sb.id).await;
        }
    }

    async fn remove_sandbox(&self, id: &str, grace: Duration) -> anyhow::Result<()> {
        let sid = id.to_string();
        let _ = blocking(&self.agent.rt, move |rt| rt.stop_sandbox(&sid, grace)).await;
        self.release_network(id).await;
        let sid = id.to_string();
        blocking(&self.agent.rt, move |rt| rt.remove_sandbox(&sid)).await?;
        Ok(())
    }

    /// Remove everything of the pod from the node: containers, sandboxes, network, volumes
    /// and logs.
    async fn teardown(&mut self, pod: Option<&Pod>) {
        for (_, h) in self.exit_watch.drain() {
            h.abort();
        }
        let grace = pod.map_or(Duration::from_secs(2), |p| self.grace(p));
        let uid = self.key.uid.clone();
        let sandboxes = blocking(&self.agent.rt, move |rt| {
            rt.list_sandboxes_with_prefix(&sandbox_prefix(&uid))
                .map(|l| {
                    l.into_iter()
                        .filter(|s| s.config.labels.get(POD_UID_LABEL) == Some(&uid))
                        .map(|s| s.id)
                        .collect::<Vec<_>>()
                })
        })
        .await
        .unwrap_or_default();
        for id in sandboxes {
            let rt = self.agent.rt.clone();
            let sid = id.clone();
            if let Ok(cs) =
                tokio::task::spawn_blocking(move || rt.list_containers(Some(&sid))).await
            {
                for c in cs.into_iter().flatten() {
                    self.agent.probes.stop(&c.id);
                }
            }
            if let Err(e) = self.remove_sandbox(&id, grace).await {
                tracing::warn!(pod = %self.key, sandbox = %id, error = %e, "removing the sandbox failed");
            }
        }
        let _ = std::fs::remove_dir_all(self.sandbox_dir());
        let logs = self.agent.cfg.dir.join("logs").join(format!(
            "{}_{}_{}",
            self.key.namespace, self.key.name, self.key.uid
        ));
        let _ = std::fs::remove_dir_all(logs);
        self.agent
            .backoff
            .lock()
            .expect("backoff")
            .forget_prefix(&format!("{}/", self.key.uid));
    }

    fn fail(&mut self, pod: &Pod, name: &str, reason: &str, message: String) {
        let n = self.failure_counts.entry(name.to_string()).or_insert(0);
        *n += 1;
        let policy = self.agent.backoff.lock().expect("backoff").policy();
        let delay = (policy.initial * 2u32.saturating_pow((*n - 1).min(16))).min(policy.max);
        self.agent.events.pod(
            pod,
            Some(name),
            Kind::Warning,
            "Failed",
            format!("Error: {message}"),
        );
        self.failures.insert(
            name.to_string(),
            (
                Waiting {
                    reason: reason.into(),
                    message,
                },
                Some(Timestamp::now() + delay),
            ),
        );
    }

    async fn start_container(
        &mut self,
        pod: &Pod,
        obs: &Observed,
        name: &str,
        init: bool,
        attempt: u32,
        restart: Option<Duration>,
    ) {
        let Some(spec) = pod.spec.as_ref() else {
            return;
        };
        let c: Container = match spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
        {
            Some(c) => c.clone(),
            None => return,
        };
        let _ = init;
        let Some(sandbox) = obs.sandbox.as_ref() else {
            return;
        };
        // The image, as the pull policy says.
        if let Err((reason, message)) = self.agent.ensure_image(pod, &c).await {
            self.fail(pod, name, reason, message);
            return;
        }
        // ConfigMaps and Secrets it refers to.
        let sources = match self.sources(pod).await {
            Ok(s) => s,
            Err(e) => {
                self.fail(pod, name, "CreateContainerConfigError", e);
                return;
            }
        };
        let ips = match std::fs::read(self.net_file(&sandbox.id))
            .ok()
            .and_then(|b| serde_json::from_slice::<NetRecord>(&b).ok())
        {
            Some(r) => r.ips,
            None => vec![self.agent.facts.ip.clone()],
        };
        let env = EnvCtx {
            host_ip: &self.agent.facts.ip,
            pod_ips: &ips,
            node_cpu_millis: self.agent.facts.cpu_millis(),
            node_memory_bytes: self.agent.facts.memory_bytes,
            sources: &sources,
        };
        let cfg = translate::volume_plans(pod, &env)
            .map_err(|e| e.to_string())
            .and_then(|plans| {
                let dir = self.sandbox_dir().join("volumes");
                let mut made = BTreeMap::new();
                for (vname, plan) in &plans {
                    made.insert(vname.clone(), volumes::materialize(&dir, vname, plan)?);
                }
                Ok(made)
            })
            .and_then(|made| {
                translate::container_config(
                    pod,
                    &c,
                    attempt,
                    &env,
                    &made,
                    &self.log_path(name, attempt),
                )
                .map_err(|e| e.to_string())
            });
        let cfg = match cfg {
            Ok(c) => c,
            Err(e) => {
                self.fail(pod, name, "CreateContainerConfigError", e);
                return;
            }
        };
        if let Some(parent) = self.log_path(name, attempt).parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let sid = sandbox.id.clone();
        let t0 = std::time::Instant::now();
        let created = blocking(&self.agent.rt, move |rt| {
            let id = rt.create_container(&sid, &cfg)?;
            Ok::<_, berth_runtime::pod::Error>(id)
        })
        .await;
        let id = match created {
            Ok(id) => id,
            Err(e) => {
                self.fail(pod, name, "CreateContainerError", e.to_string());
                return;
            }
        };
        self.agent.events.pod(
            pod,
            Some(name),
            Kind::Normal,
            "Created",
            format!("Created container {name}"),
        );
        let cid = id.clone();
        let t1 = std::time::Instant::now();
        if let Err(e) = blocking(&self.agent.rt, move |rt| rt.start_container(&cid)).await {
            self.fail(pod, name, "RunContainerError", e.to_string());
            return;
        }
        self.failures.remove(name);
        self.failure_counts.remove(name);
        if let Some(ran) = restart {
            self.agent
                .backoff
                .lock()
                .expect("backoff")
                .restarted(&plan::backoff_key(pod, name), ran);
        }
        self.agent.events.pod(
            pod,
            Some(name),
            Kind::Normal,
            "Started",
            format!("Started container {name}"),
        );
        tracing::info!(
            pod = %self.key,
            container = %name,
            %id,
            attempt,
            create_ms = (t1 - t0).as_millis() as u64,
            start_ms = t1.elapsed().as_millis() as u64,
            "container started"
        );
    }

    async fn sources(&self, pod: &Pod) -> Result<Sources, String> {
        let (cms, secrets) = translate::references(pod);
        let mut out = Sources::default();
        let cm_api: Api<ConfigMap> =
            Api::namespaced(self.agent.client.clone(), &self.key.namespace);
        for n in cms {
            match cm_api.get_opt(&n).await {
                Ok(Some(cm)) => {
                    out.config_maps.insert(n, cm);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("getting configmap {n:?}: {e}")),
            }
        }
        let s_api: Api<Secret> = Api::namespaced(self.agent.client.clone(), &self.key.namespace);
        for n in secrets {
            match s_api.get_opt(&n).await {
                Ok(Some(s)) => {
                    out.secrets.insert(n, s);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("getting secret {n:?}: {e}")),
            }
        }
        Ok(out)
    }
}

/// Sandboxes of pod `uid` are named `<uid>-s<attempt>`.
pub fn sandbox_prefix(uid: &str) -> String {
    format!("{uid}-s")
}

/// The attempt number of a sandbox of ours.
pub fn attempt_of(s: &berth_runtime::pod::Sandbox) -> u32 {
    s.config
        .labels
        .get(ATTEMPT_LABEL)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

/// What the CNI gave a sandbox, kept for the status and for DEL.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct NetRecord {
    ips: Vec<String>,
    result: serde_json::Value,
}

impl From<Attachment> for NetRecord {
    fn from(a: Attachment) -> Self {
        NetRecord {
            ips: a.ips,
            result: a.result,
        }
    }
}

fn write_file(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}
