//! The controller-manager: Berth's reconcile loops, and the pieces every control loop in
//! Berth shares.
//!
//! - [`leader`]: leader election on a Lease (the scheduler uses it too);
//! - [`events`]: the core/v1 event recorder (the scheduler and the node agent use it too).
#![forbid(unsafe_code)]

pub mod events;
pub mod leader;
