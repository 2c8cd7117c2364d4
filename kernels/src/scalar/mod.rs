//! The plain Rust kernels: they run on every target (armv7 included), and every vector kernel
//! is tested against them.

pub mod depthwise;
pub mod elementwise;
pub mod pointwise;
pub mod qpointwise;
