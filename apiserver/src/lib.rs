//! The API server: the only door to the store.
//!
//! It will own REST on axum over rustls and gRPC on tonic for every resource in
//! `berth_api`'s registry, discovery and OpenAPI documents, authentication and
//! authorisation, admission (validation and defaulting), the watch cache that serves
//! LIST and WATCH from memory, and the proxy to node agents for logs, exec and
//! port-forward. Empty until issue "The API server and kctl".
#![forbid(unsafe_code)]
