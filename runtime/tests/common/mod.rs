//! Helpers shared by the integration tests.

#![allow(dead_code, clippy::expect_used, clippy::panic)]

pub mod parity;
pub mod qwen2_5_vl;
