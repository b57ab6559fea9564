//! The provider catalog of extauth and everything that can be decided without I/O.
//!
//! This crate turns a list of `(name, value)` pairs — normally the process environment — into
//! validated [`ProviderConfig`]s, using Coder's `CODER_EXTERNAL_AUTH_<N>_*` names (and the legacy
//! `CODER_GITAUTH_<N>_*`) so an existing Coder deployment's environment works unchanged. Where
//! Coder is lenient (typos in keys silently ignored, lexical index order, unvalidated derived
//! URLs) this crate is strict, and every mistake is reported together with the variable to fix.
//!
//! It also owns the rules both sides of the wire must agree on: which provider a repository URL
//! belongs to ([`Providers::match_url`]), and the JSON shapes the broker serves to workspaces
//! ([`wire`]).
//!
//! **Invariant:** no I/O and no async here. Anything that talks to a network, a disk or a clock
//! beyond "now" lives in `extauth-broker` or `extauth-git-askpass`.
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod access_url;
mod catalog;
mod config;
mod env;
mod error;
mod matching;
mod secret;
pub mod wire;

pub use access_url::{AccessUrl, AccessUrlError};
pub use catalog::{GitUsername, PkceMethod, ProviderType};
pub use config::{GitAuth, ProviderConfig, ProviderId, Providers};
pub use env::{LEGACY_PREFIX, PREFIX, Setting, Source};
pub use error::IndexProblem;
pub use error::{ConfigError, ConfigErrors, ConfigWarning};
pub use matching::{MatchError, UrlMatch, normalize_git_url};
pub use secret::{AccessToken, ClientSecret, RefreshToken, constant_time_eq};
