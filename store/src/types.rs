//! The Raft type configuration: what a log entry carries and what applying it returns.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A member's id: a stable hash of its peer URLs and the cluster token (see [`member_id`]).
pub type MemberId = u64;

openraft::declare_raft_types!(
    /// Berth's Raft types.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = MemberId,
        Node = MemberNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<MemberId>;
pub type Vote = openraft::Vote<MemberId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<MemberId, MemberNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<MemberId, MemberNode>;
pub type StorageError = openraft::StorageError<MemberId>;

/// What Raft knows of a member: its name and where its peers reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    pub name: String,
    pub peer_urls: Vec<String>,
}

impl fmt::Display for MemberNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.peer_urls.join(","))
    }
}

/// A write replicated through Raft. Bodies are prost-encoded etcd v3 requests, so the
/// state machine executes exactly what the client sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Put(Vec<u8>),
    DeleteRange(Vec<u8>),
    Txn(Vec<u8>),
    Compact(Vec<u8>),
    LeaseGrant(Vec<u8>),
    LeaseRevoke(Vec<u8>),
    /// A member publishes its name and client URLs (prost `Member`).
    PublishMember(Vec<u8>),
    /// Concurrent requests proposed as one entry; applied one after another, each with
    /// its own revision. The response body is the postcard `Vec<Response>`.
    Batch(Vec<Request>),
}

impl Request {
    pub fn encoded_len(&self) -> usize {
        match self {
            Request::Put(b)
            | Request::DeleteRange(b)
            | Request::Txn(b)
            | Request::Compact(b)
            | Request::LeaseGrant(b)
            | Request::LeaseRevoke(b)
            | Request::PublishMember(b) => b.len(),
            Request::Batch(rs) => rs.iter().map(Request::encoded_len).sum(),
        }
    }
}

/// The result of applying one entry: the store revision after it, and the prost-encoded
/// response (without header), or the error the request met.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub revision: i64,
    pub body: Vec<u8>,
    pub error: Option<AppliedError>,
}

/// A request that was replicated but failed when applied (a Put to a missing lease, say):
/// deterministic on every member, so every member fails it the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppliedError {
    KeyNotFound,
    LeaseNotFound(i64),
    LeaseExists(i64),
    Compacted { requested: i64, compacted: i64 },
    FutureRevision { requested: i64, current: i64 },
    Invalid(String),
}

impl From<AppliedError> for crate::Error {
    fn from(e: AppliedError) -> Self {
        use crate::Error as E;
        match e {
            AppliedError::KeyNotFound => E::KeyNotFound,
            AppliedError::LeaseNotFound(id) => E::LeaseNotFound(id),
            AppliedError::LeaseExists(id) => E::LeaseExists(id),
            AppliedError::Compacted {
                requested,
                compacted,
            } => E::Compacted {
                requested,
                compacted,
            },
            AppliedError::FutureRevision { requested, current } => {
                E::FutureRevision { requested, current }
            }
            AppliedError::Invalid(m) => E::InvalidArgument(m),
        }
    }
}

/// FNV-1a, 64 bit: a stable hash for member and cluster ids (it must never change, since
/// ids are persisted and compared across members).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A member id from its peer URLs and the cluster token, as every member computes it.
/// Never 0, which etcd treats as "no member".
pub fn member_id(peer_urls: &[String], token: &str) -> MemberId {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let joined = urls.join(",");
    fnv1a(&[joined.as_bytes(), token.as_bytes()]).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_id_ignores_url_order_and_depends_on_token() {
        let a = vec!["http://a:1".to_string(), "http://b:2".to_string()];
        let b = vec!["http://b:2".to_string(), "http://a:1".to_string()];
        assert_eq!(member_id(&a, "t"), member_id(&b, "t"));
        assert_ne!(member_id(&a, "t"), member_id(&a, "u"));
    }

    #[test]
    fn request_roundtrips_through_postcard() {
        let r = Request::Txn(vec![1, 2, 3]);
        let bytes = postcard::to_allocvec(&r).unwrap();
        assert_eq!(postcard::from_bytes::<Request>(&bytes).unwrap(), r);
    }
}
