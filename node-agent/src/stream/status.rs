//! The `metav1.Status` objects of the streaming protocols: what the error channel says
//! when a session ends, and the body of a refused upgrade.

use serde_json::{json, Value};

/// How an exec or attach session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Exit code 0 (or, for attach, any end).
    Success,
    /// A non-zero exit code.
    ExitCode(i32),
    /// The runtime failed; the message is the kubelet's wording.
    Internal(String),
}

impl Outcome {
    /// The Status the v4 and v5 protocols write to the error channel, byte for byte the
    /// kubelet's JSON (no kind, `metadata: {}`).
    pub fn to_json(&self) -> Vec<u8> {
        let v = match self {
            Outcome::Success => json!({"metadata": {}, "status": "Success"}),
            Outcome::ExitCode(code) => json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            Outcome::Internal(msg) => json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("Internal error occurred: {msg}"),
                "reason": "InternalError",
                "details": {"causes": [{"message": msg}]},
                "code": 500,
            }),
        };
        serde_json::to_vec(&v).expect("a json value serializes")
    }

    /// What protocols before v4 write to the error channel: nothing on success, else the
    /// Status message as text.
    pub fn to_text(&self) -> Option<Vec<u8>> {
        match self {
            Outcome::Success => None,
            Outcome::ExitCode(code) => Some(
                format!("command terminated with non-zero exit code: exit status {code}")
                    .into_bytes(),
            ),
            Outcome::Internal(msg) => Some(format!("Internal error occurred: {msg}").into_bytes()),
        }
    }
}

/// A full `v1.Status` failure, as an HTTP error body.
pub(crate) fn failure(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_statuses_match_the_kubelet() {
        assert_eq!(
            String::from_utf8(Outcome::Success.to_json()).unwrap(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        let v: Value = serde_json::from_slice(&Outcome::ExitCode(3).to_json()).unwrap();
        assert_eq!(
            v,
            json!({"metadata":{},"status":"Failure",
                "message":"command terminated with non-zero exit code: exit status 3",
                "reason":"NonZeroExitCode",
                "details":{"causes":[{"reason":"ExitCode","message":"3"}]}})
        );
        let v: Value = serde_json::from_slice(&Outcome::Internal("boom".into()).to_json()).unwrap();
        assert_eq!(v["reason"], "InternalError");
        assert_eq!(v["message"], "Internal error occurred: boom");
        assert_eq!(Outcome::Success.to_text(), None);
        assert_eq!(
            Outcome::ExitCode(1).to_text().unwrap(),
            b"command terminated with non-zero exit code: exit status 1"
        );
    }
}
