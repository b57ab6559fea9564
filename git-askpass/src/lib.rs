//! The workspace side of extauth: the git credential protocol (`get`/`store`/`erase`), the
//! `GIT_ASKPASS` prompt mode, and the small blocking client of the broker's workspace API.
//!
//! Not implemented yet beyond what the binary prints; see the open issue for the workspace side.
//! **Invariant:** nothing is written to stdout except protocol lines.
