//! The workspace side of extauth: the git credential protocol (`get`/`store`/`erase`), the
//! `GIT_ASKPASS` prompt mode, and the small blocking client of the broker's workspace API that
//! the `extauth` CLI reuses.
//!
//! **Invariant:** nothing is written to stdout except protocol lines (or, in askpass mode, the
//! one answer line); everything for humans goes to stderr, and never a token.
//!
//! **Invariant:** one broker round trip per credential request; nothing is done before it that
//! the request does not need (no TLS set-up for an `http://` broker).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod agent;
pub mod helper;
pub mod identity;
pub mod prompt;
pub mod protocol;
pub mod relay;
pub mod workspace;
