//! berth: network services in throw-away application containers.
//!
//! Data flows one way: activation (sockets) → supervisor → sandbox (+ scope)
//! → journal. Modules lower in that chain never call back up.

pub mod activation;
pub mod admin;
pub mod bus;
pub mod cgroup;
pub mod cli;
pub mod config;
pub mod generator;
pub mod journal;
pub mod manpage;
pub mod metrics;
pub mod pidfd;
pub mod sandbox;
pub mod scope;
pub mod security;
pub mod supervisor;
pub mod top;
