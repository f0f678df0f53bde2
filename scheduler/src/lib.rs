//! The scheduler: decides where every pod lands.
//!
//! It will own the priority queue with back-off, filter and score plugins as pure
//! functions over a snapshot of nodes, and binding through `pods/binding`.
//! Empty until issue "The scheduler and the controller-manager".
#![forbid(unsafe_code)]
