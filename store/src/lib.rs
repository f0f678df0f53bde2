//! Berth's store: an etcd-like revisioned key-value store replicated with Raft.
//!
//! Start reading at [`node`], which wires everything for one member: the engine
//! ([`backend`], sled behind the [`backend::KvBackend`] trait), the Raft log
//! ([`log_store`], group-committed), the MVCC state machine ([`mvcc`],
//! [`state_machine`]), Raft RPC between members over tonic ([`network`], [`peer`]) and the
//! etcd v3 gRPC API clients use ([`etcd`]). `berth store` runs one member with etcd's flag
//! names ([`config`]).
#![forbid(unsafe_code)]

pub mod backend;
pub mod config;
pub mod error;
pub mod etcd;
pub mod log_store;
pub mod mvcc;
pub mod network;
pub mod node;
pub mod peer;
pub mod state_machine;
pub mod types;

pub use error::{Error, Result};

/// Generated protobuf code: the etcd v3 API (`etcdserverpb`, `mvccpb`) and Berth's peer
/// protocol (`berth::raft::v1`).
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod pb {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod raft {
        tonic::include_proto!("berth.raft.v1");
    }
}
