//! The audit log: one JSON line per write request (who, what, outcome), appended to a file.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde_json::json;

use crate::auth::User;

pub struct Audit {
    file: Mutex<std::fs::File>,
}

impl Audit {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            file: Mutex::new(file),
        })
    }

    pub fn record(&self, user: &User, verb: &str, path: &str, code: u16) {
        let line = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "stage": "ResponseComplete",
            "requestURI": path,
            "verb": verb.to_ascii_lowercase(),
            "user": {"username": user.name, "groups": user.groups},
            "responseStatus": {"code": code},
            "stageTimestamp": crate::objects::now(),
        });
        let mut f = self.file.lock().expect("audit lock");
        if let Err(e) = writeln!(f, "{line}") {
            tracing::warn!(error = %e, "audit log write failed");
        }
    }
}
