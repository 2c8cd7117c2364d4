//! The `cuda` engine (feature `cuda`): tract's CUDA backend (tract-cuda: kernels compiled by NVRTC
//! on first use and cached, matmuls on cuBLAS, convolutions on cuDNN) over the same typed graph as
//! the cpu engine; an op it has no kernel for stays on the CPU inside the same plan. The driver and
//! the CUDA libraries are opened at run time, so the build needs no toolkit and a machine without
//! them gets a reason instead of a crash. Input buffers the app borrows are page-locked and mapped
//! into the device (`cuMemHostRegister`, DEVICEMAP): the upload is one DMA from the app's writes.

use std::panic::{catch_unwind, AssertUnwindSafe};

use tract_nnef::prelude::*;
use tract_nnef::tract_core::runtime::runtime_for_name;

use super::cpu::{output_labels, run_plan, tract_inputs};
use super::manifest_facts::load_err;
use super::PinnedMemory;
use super::{Engine, Unsupported};
use crate::bundle::VerifiedBundle;
use crate::error::ModelError;
use crate::tensor::Tensor as EfTensor;

// tract-cuda registers its runtime with tract's inventory; the crate must be linked for that.
use tract_cuda as _;

/// A tract plan on the CUDA runtime.
pub struct CudaEngine {
    plan: Box<dyn Runnable>,
    outputs: Vec<String>,
    device: String,
}

impl std::fmt::Debug for CudaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaEngine({})", self.device)
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic in the CUDA backend".into())
}

/// The name of device 0 and its memory.
fn device_name() -> String {
    tract_cuda::with_cuda_stream(|stream| {
        let ctx = stream.context();
        let name = ctx.name().unwrap_or_else(|_| "CUDA device".into());
        let total = ctx.total_mem().unwrap_or(0) >> 20;
        Ok(format!("{name} ({total} MiB)"))
    })
    .unwrap_or_else(|_| "CUDA device".into())
}

impl CudaEngine {
    /// Plans the bundle's graph on CUDA. `Err(Ok(reason))`: run it elsewhere (no driver, no
    /// library, or tract-cuda refused the graph); `Err(Err(e))`: the model itself is bad (its
    /// graph does not parse or does not fit its manifest).
    pub fn prepare(bundle: &VerifiedBundle) -> Result<CudaEngine, Result<Unsupported, ModelError>> {
        let unsupported = |why: String| Err(Ok(Unsupported(why)));
        let runtime = match catch_unwind(|| runtime_for_name("cuda")) {
            Ok(Ok(Some(rt))) => rt,
            Ok(Ok(None)) => return unsupported("tract's CUDA runtime is not registered".into()),
            // tract wraps the driver's own words in two layers of context: keep those words
            Ok(Err(e)) => return unsupported(e.root_cause().to_string()),
            Err(p) => return unsupported(panic_text(p)),
        };
        let typed = super::graph::typed(bundle)
            .map_err(Err)?
            .into_decluttered()
            .map_err(|e| Err(load_err(e)))?;
        let outputs = output_labels(&typed).map_err(|e| Err(load_err(e)))?;
        let plan = match catch_unwind(AssertUnwindSafe(|| runtime.prepare(typed))) {
            Ok(Ok(plan)) => plan,
            Ok(Err(e)) => return unsupported(format!("tract-cuda cannot plan the graph: {e:#}")),
            Err(p) => return unsupported(panic_text(p)),
        };
        Ok(CudaEngine {
            plan,
            outputs,
            device: device_name(),
        })
    }

    /// The device the plan runs on.
    pub fn device(&self) -> String {
        self.device.clone()
    }
}

fn run_guarded(plan: &dyn Runnable, inputs: TVec<TValue>) -> Result<Vec<EfTensor>, ModelError> {
    catch_unwind(AssertUnwindSafe(|| run_plan(plan, inputs, "cuda"))).unwrap_or_else(|p| {
        Err(ModelError::EngineRun {
            engine: "cuda",
            reason: panic_text(p),
        })
    })
}

/// Host memory registered with the CUDA driver (page-locked, mapped into the device).
struct Registered(*mut u8);

// SAFETY: the pointer is only handed back to the driver (unregister); never dereferenced.
unsafe impl Send for Registered {}
// SAFETY: as for Send: no method reads or writes through the pointer.
unsafe impl Sync for Registered {}
impl PinnedMemory for Registered {}

impl Drop for Registered {
    fn drop(&mut self) {
        let _ = tract_cuda::with_cuda_stream(|stream| {
            let _ = stream.context().bind_to_thread();
            // SAFETY: `self.0` was registered by `pin` and is still allocated (InputBuffer drops
            // its registration before its memory).
            unsafe { cudarc::driver::sys::cuMemHostUnregister(self.0.cast()) };
            Ok(())
        });
    }
}

impl Engine for CudaEngine {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn output_names(&self) -> &[String] {
        &self.outputs
    }

    fn run(&self, inputs: Vec<EfTensor>) -> Result<Vec<EfTensor>, ModelError> {
        run_guarded(&*self.plan, tract_inputs(inputs, "cuda")?)
    }

    fn run_in_place(&self, inputs: TVec<TValue>) -> Result<Vec<EfTensor>, ModelError> {
        run_guarded(&*self.plan, inputs)
    }

    unsafe fn pin(&self, ptr: *mut u8, len: usize) -> Result<Box<dyn PinnedMemory>, String> {
        use cudarc::driver::sys::{
            cuMemHostRegister_v2, cudaError_enum, CU_MEMHOSTREGISTER_DEVICEMAP,
            CU_MEMHOSTREGISTER_PORTABLE,
        };
        tract_cuda::with_cuda_stream(|stream| {
            stream
                .context()
                .bind_to_thread()
                .map_err(|e| TractError::msg(format!("{e:?}")))?;
            // SAFETY: the caller keeps `len` bytes at `ptr` alive and in place while the guard lives.
            let status = unsafe {
                cuMemHostRegister_v2(
                    ptr.cast(),
                    len,
                    CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP,
                )
            };
            if status == cudaError_enum::CUDA_SUCCESS {
                Ok(Box::new(Registered(ptr)) as Box<dyn PinnedMemory>)
            } else {
                Err(TractError::msg(format!(
                    "cuMemHostRegister refused: {status:?}"
                )))
            }
        })
        .map_err(|e| format!("{e:#}"))
    }
}
