//! Harness for extauth's end-to-end tests: starts real parts (the broker, `oidc-provider`,
//! `git http-backend`, Chromium, PostgreSQL) on loopback and stops them by pid.
//!
//! Empty until the broker serves; the end-to-end suites arrive with it.
