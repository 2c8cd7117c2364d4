//! The aarch64 kernels: NEON (Advanced SIMD, present on every Armv8-A core: Cortex-A72/A76/A78,
//! Neoverse), and the int8 dot products of Armv8.2 (dotprod) and Armv8.6 (i8mm). Every
//! function here is compiled for its features (`#[target_feature]`) and is `unsafe`: its caller
//! has checked that the CPU has them (an [`crate::Isa`] that has the feature).

pub mod depthwise;
pub mod elementwise;
pub mod qdepthwise;
pub mod qpointwise;
