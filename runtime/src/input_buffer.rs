//! Input buffers an app borrows from a model and fills in place: the runtime allocates each once
//! (for one input, one shape), the engine pins it where that pays (the `cuda` engine page-locks it
//! and maps it into the device, so the upload is one DMA from the app's own writes, with no
//! staging copy), and [`crate::Model::predict_buffers`] runs on it without copying the input.
//! Validation and the bundle's normalization run on the buffer itself, so its contents are the
//! normalized values after a call: fill it again before the next one.

use std::sync::Arc;

use tract_nnef::prelude::{Datum, Tensor as TractTensor};

use crate::bundle::InputSpec;
use crate::error::{InputError, ModelError};
use crate::preprocess::Floats;
use crate::tensor::DType;

/// Page-locked memory registered with an engine's device; unregisters when dropped (the
/// engine's trait, named here too because an input buffer holds one).
pub use crate::engine::PinnedMemory;

/// Element types an input buffer holds.
pub trait Element: Datum + Copy + private::Sealed {
    /// The runtime's name for it.
    const DTYPE: DType;
}

mod private {
    pub trait Sealed {}
}

macro_rules! element {
    ($t:ty, $d:ident) => {
        impl private::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$d;
        }
    };
}
element!(f32, F32);
element!(f64, F64);
element!(i64, I64);
element!(i32, I32);
element!(u8, U8);
element!(i8, I8);

/// One model input, owned by the runtime, written by the app.
pub struct InputBuffer {
    /// Graph input it feeds.
    pub(crate) index: usize,
    dtype: DType,
    shape: Vec<usize>,
    // Declared before `tensor`: the registration ends before the memory is freed.
    pin: Option<Box<dyn PinnedMemory>>,
    pin_note: Option<String>,
    /// Unique between calls (the engine holds a second reference only while it runs).
    pub(crate) tensor: Arc<TractTensor>,
}

impl std::fmt::Debug for InputBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputBuffer")
            .field("index", &self.index)
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("pinned", &self.pin.is_some())
            .finish()
    }
}

impl InputBuffer {
    /// A zeroed buffer for input `index` of `spec`, checked against the spec and the size limit.
    pub(crate) fn new(
        index: usize,
        spec: &InputSpec,
        shape: &[usize],
        limits: &crate::InputLimits,
    ) -> Result<InputBuffer, ModelError> {
        let len = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| InputError::TooLarge {
                name: spec.name.clone(),
                bytes: usize::MAX,
                limit: limits.max_bytes,
            })?;
        crate::preprocess::check_input(spec, spec.dtype, shape, len, Floats::None, limits)?;
        let tensor =
            TractTensor::zero_dt(crate::engine::datum(spec.dtype), shape).map_err(|e| {
                ModelError::Output(format!("cannot allocate input '{}': {e}", spec.name))
            })?;
        Ok(InputBuffer {
            index,
            dtype: spec.dtype,
            shape: shape.to_vec(),
            pin: None,
            pin_note: None,
            tensor: Arc::new(tensor),
        })
    }

    /// Lets `engine` pin the memory; says why not when it cannot.
    pub(crate) fn pin_for(&mut self, engine: &dyn crate::engine::Engine) {
        let tensor = Arc::get_mut(&mut self.tensor).expect("a new buffer is unique");
        let bytes = tensor.as_bytes_mut();
        // SAFETY: the region is this buffer's tensor, which outlives `pin` (field order) and never
        // moves (the tensor's heap storage is fixed for its life).
        match unsafe { engine.pin(bytes.as_mut_ptr(), bytes.len()) } {
            Ok(pin) => self.pin = Some(pin),
            Err(why) => self.pin_note = Some(why),
        }
    }

    /// Graph input this buffer feeds.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Its element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Its shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.tensor.len()
    }

    /// Whether it has no elements (never: shapes with a zero are refused).
    pub fn is_empty(&self) -> bool {
        self.tensor.len() == 0
    }

    /// Whether the engine page-locked it for its device.
    pub fn is_pinned(&self) -> bool {
        self.pin.is_some()
    }

    /// Why it is not pinned (the engine reads ordinary memory, or the device refused).
    pub fn pin_note(&self) -> Option<&str> {
        self.pin_note.as_deref()
    }

    fn tensor_mut(&mut self) -> Result<&mut TractTensor, InputError> {
        Arc::get_mut(&mut self.tensor).ok_or_else(|| InputError::Buffer {
            reason: "the input buffer is in use by a running inference".into(),
        })
    }

    /// The elements, to write into. `T` must be the buffer's element type.
    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T], InputError> {
        self.expect_dtype(T::DTYPE)?;
        let t = self.tensor_mut()?;
        t.try_as_plain_ram_mut()
            .and_then(|mut v| v.as_slice_mut::<T>().map(|s| s.as_mut_ptr()))
            .map(|ptr| {
                let len = t.len();
                // SAFETY: the pointer and length come from this tensor's plain storage, borrowed
                // mutably for the returned lifetime through `self`.
                unsafe { std::slice::from_raw_parts_mut(ptr, len) }
            })
            .map_err(|e| InputError::Buffer {
                reason: e.to_string(),
            })
    }

    /// Applies the spec's normalization in place (f32 inputs with a `normalize` table).
    pub(crate) fn normalize(&mut self, spec: &InputSpec) -> Result<(), InputError> {
        if spec.normalize.is_none() || self.dtype != DType::F32 {
            return Ok(());
        }
        let shape = std::mem::take(&mut self.shape);
        let result = self
            .as_mut_slice::<f32>()
            .map(|data| crate::preprocess::normalize_f32(spec, &shape, data));
        self.shape = shape;
        result
    }

    /// The elements, to read.
    pub fn as_slice<T: Element>(&self) -> Result<&[T], InputError> {
        self.expect_dtype(T::DTYPE)?;
        self.tensor
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<T>().map(|s| (s.as_ptr(), s.len())))
            .map(|(ptr, len)| {
                // SAFETY: as above, borrowed immutably through `self`.
                unsafe { std::slice::from_raw_parts(ptr, len) }
            })
            .map_err(|e| InputError::Buffer {
                reason: e.to_string(),
            })
    }

    /// Its raw bytes (native endianness), to write into: the C ABI's view.
    pub fn as_mut_bytes(&mut self) -> Result<&mut [u8], InputError> {
        Ok(self.tensor_mut()?.as_bytes_mut())
    }

    /// Copies `values` in (a convenience; writing through [`Self::as_mut_slice`] avoids it).
    pub fn fill<T: Element>(&mut self, values: &[T]) -> Result<(), InputError> {
        let dst = self.as_mut_slice::<T>()?;
        if dst.len() != values.len() {
            return Err(InputError::Buffer {
                reason: format!(
                    "{} values for a buffer of {} elements",
                    values.len(),
                    dst.len()
                ),
            });
        }
        dst.copy_from_slice(values);
        Ok(())
    }

    fn expect_dtype(&self, want: DType) -> Result<(), InputError> {
        if want == self.dtype {
            Ok(())
        } else {
            Err(InputError::Buffer {
                reason: format!("the buffer holds {}, not {want}", self.dtype),
            })
        }
    }

    /// The float elements for the NaN check.
    pub(crate) fn floats(&self) -> Floats<'_> {
        match self.dtype {
            DType::F32 => self
                .as_slice::<f32>()
                .map(Floats::F32)
                .unwrap_or(Floats::None),
            DType::F64 => self
                .as_slice::<f64>()
                .map(Floats::F64)
                .unwrap_or(Floats::None),
            _ => Floats::None,
        }
    }

    /// Element `i` as f64 (drift statistics).
    pub(crate) fn value_f64(&self, i: usize) -> Option<f64> {
        match self.dtype {
            DType::F32 => self.as_slice::<f32>().ok()?.get(i).map(|&v| v as f64),
            DType::F64 => self.as_slice::<f64>().ok()?.get(i).copied(),
            DType::I64 => self.as_slice::<i64>().ok()?.get(i).map(|&v| v as f64),
            DType::I32 => self.as_slice::<i32>().ok()?.get(i).map(|&v| v as f64),
            DType::U8 => self.as_slice::<u8>().ok()?.get(i).map(|&v| v as f64),
            DType::I8 => self.as_slice::<i8>().ok()?.get(i).map(|&v| v as f64),
        }
    }
}
