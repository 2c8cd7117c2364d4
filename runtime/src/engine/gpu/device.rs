//! The process's wgpu device for the `gpu` engine: found once (Vulkan on Linux, Metal on macOS;
//! `EDGE_GPU_ADAPTER` picks an adapter by a part of its name), shared by every model, with the
//! compute pipelines compiled once per kernel kind. wgpu errors never panic here: validation and
//! out-of-memory errors are caught in error scopes at load, anything later is kept and reported
//! by the next run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::kernels::Kernel;

/// A compute pipeline and its bind group layout.
pub(crate) struct Pipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// The device, its queue and the compiled kernels.
pub(crate) struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pipelines: Mutex<HashMap<Kernel, Arc<Pipeline>>>,
    /// The first error wgpu reported outside an error scope.
    pub uncaptured: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({} via {:?})", self.info.name, self.info.backend)
    }
}

static GPU: OnceLock<Result<Arc<Gpu>, String>> = OnceLock::new();

/// The shared device, or why there is none.
pub(crate) fn gpu() -> Result<Arc<Gpu>, String> {
    GPU.get_or_init(|| open().map(Arc::new)).clone()
}

fn open() -> Result<Gpu, String> {
    let mut desc = wgpu::InstanceDescriptor::from_env_or_default();
    desc.backends &= wgpu::Backends::VULKAN | wgpu::Backends::METAL;
    let instance = wgpu::Instance::new(&desc);
    let adapters = instance.enumerate_adapters(desc.backends);
    let wanted = std::env::var("EDGE_GPU_ADAPTER").ok();
    let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let adapter = adapters
        .into_iter()
        .filter(|a| {
            wanted
                .as_deref()
                .is_none_or(|w| a.get_info().name.to_lowercase().contains(&w.to_lowercase()))
        })
        .min_by_key(rank)
        .ok_or_else(|| match &wanted {
            Some(w) => format!("no Vulkan/Metal adapter named like '{w}' (EDGE_GPU_ADAPTER)"),
            None => "no Vulkan or Metal adapter (is a Vulkan driver installed? on a machine \
                     without a GPU, Mesa's lavapipe: mesa-vulkan-drivers)"
                .to_string(),
        })?;
    let info = adapter.get_info();
    let limits = adapter.limits();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("edgefleet"),
        required_features: wgpu::Features::empty(),
        required_limits: limits.clone(),
        ..Default::default()
    }))
    .map_err(|e| format!("opening {}: {e}", info.name))?;
    let uncaptured = Arc::new(Mutex::new(None::<String>));
    let sink = uncaptured.clone();
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
        let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| e.to_string());
    }));
    Ok(Gpu {
        device,
        queue,
        info,
        limits,
        pipelines: Mutex::new(HashMap::new()),
        uncaptured,
    })
}

impl Gpu {
    /// "NAME (BACKEND, TYPE)", as engine reports print it.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    /// The compiled pipeline for `kernel` (compiled on first use).
    pub(crate) fn pipeline(&self, kernel: Kernel) -> Result<Arc<Pipeline>, String> {
        let mut cache = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(&kernel) {
            return Ok(p.clone());
        }
        self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&format!("{kernel:?}")),
                source: wgpu::ShaderSource::Wgsl(kernel.source().into()),
            });
        let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let inputs = kernel.inputs() as u32;
        let mut entries: Vec<_> = (0..=inputs).map(|b| storage(b, true)).collect();
        entries.push(storage(inputs + 1, false));
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: None,
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: None,
                bind_group_layouts: &[&layout],
                push_constant_ranges: &[],
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&format!("{kernel:?}")),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(self.device.pop_error_scope()) {
            return Err(format!("compiling the {kernel:?} kernel: {e}"));
        }
        let p = Arc::new(Pipeline { pipeline, layout });
        cache.insert(kernel, p.clone());
        Ok(p)
    }
}
