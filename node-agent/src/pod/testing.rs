//! Fixture builders for the pod logic's tests: `pod("web").container("app", "busybox")`.

use std::collections::BTreeMap;

use berth_runtime::pod::{ContainerState, ContainerStatus};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

pub struct PodBuilder(Pod);

pub fn pod(name: &str) -> PodBuilder {
    PodBuilder(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Always".into()),
            node_name: Some("n1".into()),
            ..Default::default()
        }),
        status: None,
    })
}

fn container(name: &str, image: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        ..Default::default()
    }
}

impl PodBuilder {
    fn spec(&mut self) -> &mut PodSpec {
        self.0.spec.as_mut().expect("spec")
    }
    pub fn container(mut self, name: &str, image: &str) -> Self {
        self.spec().containers.push(container(name, image));
        self
    }
    pub fn init_container(mut self, name: &str, image: &str) -> Self {
        self.spec()
            .init_containers
            .get_or_insert_with(Vec::new)
            .push(container(name, image));
        self
    }
    pub fn sidecar(mut self, name: &str, image: &str) -> Self {
        let mut c = container(name, image);
        c.restart_policy = Some("Always".into());
        self.spec()
            .init_containers
            .get_or_insert_with(Vec::new)
            .push(c);
        self
    }
    pub fn restart_policy(mut self, policy: &str) -> Self {
        self.spec().restart_policy = Some(policy.into());
        self
    }
    pub fn deleting(mut self) -> Self {
        self.0.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        self
    }
    pub fn build(self) -> Pod {
        self.0
    }
}

pub struct CtrBuilder(ContainerStatus);

pub fn ctr(name: &str, attempt: u32) -> CtrBuilder {
    CtrBuilder(ContainerStatus {
        id: format!("sb-{name}-{attempt}"),
        sandbox_id: "sb".into(),
        name: name.into(),
        attempt,
        image: "busybox".into(),
        image_id: "sha256:1".into(),
        state: ContainerState::Created,
        pid: 0,
        created_at: "2023-11-14T22:13:00Z".into(),
        started_at: None,
        finished_at: None,
        exit_code: None,
        reason: None,
        log_path: None,
        labels: BTreeMap::new(),
    })
}

fn at(s: i64) -> String {
    jiff::Timestamp::from_second(1_700_000_000 + s)
        .expect("in range")
        .to_string()
}

impl CtrBuilder {
    pub fn running(mut self) -> ContainerStatus {
        self.0.state = ContainerState::Running;
        self.0.pid = 42;
        self.0.started_at.get_or_insert_with(|| at(0));
        self.0
    }
    pub fn started(mut self, s: i64) -> Self {
        self.0.started_at = Some(at(s));
        self
    }
    pub fn finished(mut self, s: i64) -> Self {
        self.0.finished_at = Some(at(s));
        self
    }
    pub fn exited(mut self, code: i32) -> ContainerStatus {
        self.0.state = ContainerState::Exited;
        self.0.exit_code = Some(code);
        self.0.reason = Some(if code == 0 { "Completed" } else { "Error" }.into());
        self.0.started_at.get_or_insert_with(|| at(0));
        self.0.finished_at.get_or_insert_with(|| at(1));
        self.0
    }
}
