//! The x86-64 kernels: AVX2 + FMA and AVX-512 (F, BW, VL; VNNI and VBMI for the integer ones).
//! Every function here is compiled for its features (`#[target_feature]`) and is `unsafe`: its
//! caller has checked that the CPU has them (an [`crate::Isa`] that has the feature).

pub mod bytes_avx2;
pub mod convert;
pub mod depthwise;
pub mod elementwise;
pub mod lanes;
pub mod pointwise;
pub mod qdepthwise;
pub mod qpointwise;
