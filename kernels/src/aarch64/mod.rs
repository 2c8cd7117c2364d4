//! The aarch64 kernels: NEON (Advanced SIMD, present on every Armv8-A core: Cortex-A72/A76/A78,
//! Neoverse). Every function here is compiled for its features (`#[target_feature]`) and is
//! `unsafe`: its caller has checked that the CPU has them (an [`crate::Isa`] that has the
//! feature).

pub mod depthwise;
