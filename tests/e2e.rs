//! End-to-end suites, one module per area (ripgrep-style single test binary).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod console;
mod doctor;
mod elevation;
mod faults;
mod generated;
mod hosts;
mod hsm;
mod load_smoke;
mod login;
mod login_names;
mod ops;
mod provider;
mod quickstart;
mod replicas;
mod revoke;
mod rotation;
mod serve;
mod workload;
