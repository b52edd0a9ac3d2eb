//! Fuzz-target harnesses shared by cargo-fuzz and `cargo test` (placeholder).
