//! Deterministic simulator, workloads and the necessary-exit oracle (placeholder).
