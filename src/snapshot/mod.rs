//! Plain, versioned state structs and KVM state conversions (placeholder).
