//! What both test suites share: a database per test, the store driven directly, and the
//! lifecycle check. Each suite (`tests/api/`, `tests/store/`) includes this folder.

#![allow(dead_code, reason = "each suite uses a part of it")]

pub mod db;
pub mod eventually;
pub mod lifecycle;
pub mod store;
