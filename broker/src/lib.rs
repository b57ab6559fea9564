//! The extauth broker: the server that links users' OAuth providers, keeps their tokens, and
//! serves them to workspaces; and its operator commands (`config check`, …).
//!
//! The binary (`src/main.rs`) only calls [`cli::main`]; everything it does lives here so tests
//! can drive it. Provider configuration itself (parsing, defaults, validation) is not here but
//! in `extauth-providers`, which this crate only presents.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod accounts;
pub mod app_installations;
pub mod auth_failures;
pub mod cli;
pub mod client_address;
pub mod clock;
pub mod config_check;
pub mod connections;
pub mod crypto;
pub mod dbcrypt;
pub mod demo_forge;
pub mod dev_login;
pub mod device;
pub mod error;
pub mod failure;
pub mod git_ssh;
pub mod identity;
pub mod link_secrets;
pub mod linking;
pub mod links;
pub mod login_flow;
pub mod oauth2;
pub mod oidc;
pub mod pages;
pub mod random;
pub mod redirects;
pub mod refresh;
pub mod revocations;
pub mod routes;
pub mod server;
pub mod settings;
pub mod sign_in;
pub mod single_flight;
pub mod state;
pub mod store;
pub mod tls;
pub mod upstream;
pub mod workload;
pub mod workspace_setup;
