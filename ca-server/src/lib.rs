//! jitssh-ca: the certificate authority server as a library, so the binary
//! is glue and every part can be tested in-process.
#![forbid(unsafe_code)]

pub mod audit;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod console;
pub mod db;
pub mod dev;
pub mod elevation;
pub mod hosts;
pub mod hsm;
pub mod http;
pub mod io_reason;
pub mod issue;
pub mod keys;
pub mod logging;
pub mod logins;
pub mod metrics;
pub mod migrate;
pub mod oidc;
pub mod policy;
pub mod revocation;
pub mod revoke;
pub mod rotation;
pub mod secret_file;
pub mod serve;
pub mod status;
pub mod unauthenticated;

// The unit tests share the integration tests' minting conveniences, which
// name this crate `ca_server` as every other includer does.
#[cfg(test)]
extern crate self as ca_server;
#[cfg(test)]
#[path = "../tests/common/mint.rs"]
mod mint;
