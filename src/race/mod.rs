//! The race operation language and invariant checker (placeholder).
