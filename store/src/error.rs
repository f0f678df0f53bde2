//! Store errors. Messages that reach etcd clients use etcd's exact wording, since client
//! libraries (etcd's clientv3, and so Kubernetes) recognise errors by their text.

use tonic::Code;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage engine: {0}")]
    Engine(#[from] sled::Error),
    #[error("storage engine: {0}")]
    Fjall(#[from] fjall::Error),
    #[error("io error at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt record {what}: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("data dir {path}: {reason}")]
    DataDir { path: String, reason: String },
    #[error("cluster id mismatch: this member belongs to cluster {local:016x}, the request came from cluster {remote:016x}")]
    ClusterMismatch { local: u64, remote: u64 },
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted { requested: i64, compacted: i64 },
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision { requested: i64, current: i64 },
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound(i64),
    #[error("etcdserver: lease already exists")]
    LeaseExists(i64),
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: request is too large")]
    RequestTooLarge { size: usize, max: usize },
    #[error("etcdserver: member not found")]
    MemberNotFound(u64),
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("raft: {0}")]
    Raft(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("peer {peer}: {reason}")]
    Peer { peer: String, reason: String },
    #[error("not the leader")]
    NotLeader { leader: Option<u64> },
    #[error("{message}")]
    Remote { code: i32, message: String },
}

impl Error {
    pub fn corrupt(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Corrupt {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// The gRPC code etcd uses for this error.
    pub fn code(&self) -> Code {
        match self {
            Error::Compacted { .. } | Error::FutureRevision { .. } => Code::OutOfRange,
            Error::EmptyKey
            | Error::KeyNotFound
            | Error::DuplicateKey
            | Error::TooManyOps
            | Error::RequestTooLarge { .. }
            | Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::LeaseNotFound(_) | Error::MemberNotFound(_) => Code::NotFound,
            Error::LeaseExists(_) => Code::FailedPrecondition,
            Error::NoLeader
            | Error::Stopped
            | Error::Peer { .. }
            | Error::Raft(_)
            | Error::NotLeader { .. } => Code::Unavailable,
            Error::Remote { code, .. } => Code::from_i32(*code),
            Error::Timeout => Code::DeadlineExceeded,
            Error::ClusterMismatch { .. } => Code::PermissionDenied,
            Error::Engine(_)
            | Error::Fjall(_)
            | Error::Io { .. }
            | Error::Corrupt { .. }
            | Error::DataDir { .. } => Code::Internal,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}
