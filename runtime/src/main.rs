//! `berth-runtime`: the runtime's command line on its own (`berth runtime` is the same).
fn main() {}
