//! Turns a lowered `Program` into GPU resources once (buffers planned with reuse, constants and
//! parameters uploaded, bind groups built) and runs it: input uploads, one compute pass with every
//! dispatch, output copies, one submission, one wait.

use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use super::device::Gpu;
use super::kernels::{Kernel, WORKGROUP};
use super::lower::{Origin, Program};

/// An output: its shape and values.
pub(crate) type ShapedValues = (Vec<usize>, Vec<f32>);

struct Dispatch {
    pipeline: Arc<super::device::Pipeline>,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    /// The step's kernel and node, for `profile`.
    #[cfg_attr(not(test), allow(dead_code))]
    kernel: Kernel,
    #[cfg_attr(not(test), allow(dead_code))]
    node: String,
}

struct Output {
    buffer: usize,
    shape: Vec<usize>,
    bytes: u64,
    staging: wgpu::Buffer,
}

/// A program ready to run on the device.
pub(crate) struct Executable {
    gpu: Arc<Gpu>,
    buffers: Vec<wgpu::Buffer>,
    inputs: Vec<(usize, Vec<usize>)>,
    dispatches: Vec<Dispatch>,
    outputs: Vec<Output>,
    /// Bytes of device memory the plan holds (activations, inputs, constants, staging).
    pub device_bytes: u64,
    /// Serializes runs (the buffers are shared).
    run_lock: Mutex<()>,
}

impl std::fmt::Debug for Executable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Executable({} dispatches, {} buffers, {} bytes)",
            self.dispatches.len(),
            self.buffers.len(),
            self.device_bytes
        )
    }
}

fn bytes_of(elements: usize) -> u64 {
    // storage bindings want 4-byte multiples; keep every size a 16-byte multiple
    ((elements.max(1) * 4) as u64).div_ceil(16) * 16
}

impl Executable {
    /// Allocates and uploads everything `program` needs.
    pub(crate) fn build(gpu: Arc<Gpu>, mut program: Program) -> Result<Executable, String> {
        let device = &gpu.device;
        let max_binding = gpu.limits.max_storage_buffer_binding_size as u64;
        for v in &program.values {
            if bytes_of(v.elements) > max_binding {
                return Err(format!(
                    "a tensor of {} MB is above this device's {} MB storage binding limit",
                    bytes_of(v.elements) >> 20,
                    max_binding >> 20
                ));
            }
        }
        device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        device.push_error_scope(wgpu::ErrorFilter::Validation);

        // last step reading each value; graph outputs live to the end
        let steps = program.steps.len();
        let mut last_use = vec![0usize; program.values.len()];
        for (s, step) in program.steps.iter().enumerate() {
            for &i in &step.inputs {
                last_use[i] = last_use[i].max(s);
            }
            last_use[step.output] = last_use[step.output].max(s);
        }
        for (v, _) in &program.outputs {
            last_use[*v] = usize::MAX;
        }
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let mut buffers: Vec<wgpu::Buffer> = Vec::new();
        let mut sizes: Vec<u64> = Vec::new();
        let mut value_buffer: Vec<Option<usize>> = vec![None; program.values.len()];
        for (id, v) in program.values.iter().enumerate() {
            match &v.origin {
                Origin::Input(_) => {
                    buffers.push(device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("input"),
                        size: bytes_of(v.elements),
                        usage,
                        mapped_at_creation: false,
                    }));
                }
                Origin::Const(data) => {
                    let mut padded = data.as_ref().clone();
                    padded.resize(bytes_of(v.elements) as usize / 4, 0.0);
                    buffers.push(
                        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                            label: Some("const"),
                            contents: bytemuck::cast_slice(&padded),
                            usage,
                        }),
                    );
                }
                Origin::Computed => continue,
            }
            sizes.push(bytes_of(v.elements));
            value_buffer[id] = Some(buffers.len() - 1);
        }
        // computed values: greedy reuse of buffers whose values are dead
        let mut free: Vec<usize> = Vec::new();
        let mut live: Vec<(usize, usize)> = Vec::new(); // (value, buffer)
        for s in 0..steps {
            let out = program.steps[s].output;
            live.retain(|&(v, b)| {
                if last_use[v] < s {
                    free.push(b);
                    false
                } else {
                    true
                }
            });
            if value_buffer[out].is_some() {
                continue; // concatenation pieces write one value
            }
            let need = bytes_of(program.values[out].elements);
            let pick = free
                .iter()
                .enumerate()
                .filter(|(_, &b)| sizes[b] >= need)
                .min_by_key(|(_, &b)| sizes[b])
                .map(|(i, _)| i);
            let b = match pick {
                Some(i) => free.swap_remove(i),
                None => {
                    buffers.push(device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("activation"),
                        size: need,
                        usage,
                        mapped_at_creation: false,
                    }));
                    sizes.push(need);
                    buffers.len() - 1
                }
            };
            value_buffer[out] = Some(b);
            live.push((out, b));
        }
        let buffer_of = |v: usize| value_buffer[v].ok_or("a value without a buffer".to_string());

        let mut dispatches = Vec::new();
        for step in &mut program.steps {
            if step.params[0] == 0 {
                continue;
            }
            let groups = match step.groups {
                Some(g) => g,
                None => {
                    let groups = step.params[0].div_ceil(WORKGROUP);
                    let x = groups.min(gpu.limits.max_compute_workgroups_per_dimension.max(1));
                    step.params[1] = x * WORKGROUP;
                    [x, groups.div_ceil(x), 1]
                }
            };
            let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::cast_slice(&step.params),
                usage: wgpu::BufferUsages::STORAGE,
            });
            let pipeline = gpu.pipeline(step.kernel)?;
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: params.as_entire_binding(),
            }];
            for (i, &v) in step.inputs.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: buffers[buffer_of(v)?].as_entire_binding(),
                });
            }
            entries.push(wgpu::BindGroupEntry {
                binding: step.inputs.len() as u32 + 1,
                resource: buffers[buffer_of(step.output)?].as_entire_binding(),
            });
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&step.node),
                layout: &pipeline.layout,
                entries: &entries,
            });
            dispatches.push(Dispatch {
                pipeline,
                bind_group,
                groups,
                kernel: step.kernel,
                node: step.node.clone(),
            });
        }
        let mut outputs = Vec::new();
        for (v, shape) in &program.outputs {
            let bytes = bytes_of(program.values[*v].elements);
            outputs.push(Output {
                buffer: buffer_of(*v)?,
                shape: shape.clone(),
                bytes,
                staging: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
            });
        }
        let inputs = program
            .inputs
            .iter()
            .map(|(v, shape)| Ok((buffer_of(*v)?, shape.clone())))
            .collect::<Result<Vec<_>, String>>()?;
        if let Some(e) = pollster::block_on(device.pop_error_scope()) {
            return Err(format!("preparing the gpu plan: {e}"));
        }
        if let Some(e) = pollster::block_on(device.pop_error_scope()) {
            return Err(format!("out of device memory: {e}"));
        }
        let device_bytes = sizes.iter().sum::<u64>() + outputs.iter().map(|o| o.bytes).sum::<u64>();
        Ok(Executable {
            gpu,
            buffers,
            inputs,
            dispatches,
            outputs,
            device_bytes,
            run_lock: Mutex::new(()),
        })
    }

    /// Shapes of the graph inputs this plan was made for.
    pub(crate) fn input_shapes(&self) -> Vec<Vec<usize>> {
        self.inputs.iter().map(|(_, s)| s.clone()).collect()
    }

    /// Times each dispatch on its own (one submission and wait each, the median of `rounds`),
    /// after one full run with `inputs`: (kernel, node, milliseconds) in plan order.
    #[cfg(test)]
    pub(crate) fn profile(
        &self,
        inputs: &[&[f32]],
        rounds: usize,
    ) -> Result<Vec<(Kernel, String, f64)>, String> {
        self.run(inputs)?;
        let gpu = &self.gpu;
        let mut out = Vec::new();
        for d in &self.dispatches {
            let mut times = Vec::new();
            for _ in 0..rounds.max(1) {
                let t = std::time::Instant::now();
                let mut encoder = gpu
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
                {
                    let mut pass =
                        encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                    pass.set_pipeline(&d.pipeline.pipeline);
                    pass.set_bind_group(0, &d.bind_group, &[]);
                    pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
                }
                gpu.queue.submit([encoder.finish()]);
                gpu.device
                    .poll(wgpu::PollType::wait_indefinitely())
                    .map_err(|e| e.to_string())?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            out.push((d.kernel, d.node.clone(), times[times.len() / 2]));
        }
        Ok(out)
    }

    /// Runs once: `inputs` in graph order (f32, the planned shapes); outputs with their shapes.
    pub(crate) fn run(&self, inputs: &[&[f32]]) -> Result<Vec<ShapedValues>, String> {
        let _guard = self.run_lock.lock().unwrap_or_else(|p| p.into_inner());
        let gpu = &self.gpu;
        for ((buffer, shape), data) in self.inputs.iter().zip(inputs) {
            if data.len() != shape.iter().product::<usize>() {
                return Err("input size differs from the plan".into());
            }
            if !data.is_empty() {
                gpu.queue
                    .write_buffer(&self.buffers[*buffer], 0, bytemuck::cast_slice(data));
            }
        }
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            for d in &self.dispatches {
                pass.set_pipeline(&d.pipeline.pipeline);
                pass.set_bind_group(0, &d.bind_group, &[]);
                pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
            }
        }
        for o in &self.outputs {
            encoder.copy_buffer_to_buffer(&self.buffers[o.buffer], 0, &o.staging, 0, o.bytes);
        }
        gpu.queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        for (ix, o) in self.outputs.iter().enumerate() {
            let tx = tx.clone();
            o.staging
                .slice(..)
                .map_async(wgpu::MapMode::Read, move |r| {
                    let _ = tx.send((ix, r));
                });
        }
        drop(tx);
        gpu.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| format!("waiting for the gpu: {e}"))?;
        for (_, r) in rx.iter() {
            r.map_err(|e| format!("reading the gpu's outputs: {e}"))?;
        }
        if let Some(e) = gpu
            .uncaptured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            for o in &self.outputs {
                o.staging.unmap();
            }
            return Err(format!("the gpu reported: {e}"));
        }
        let mut results = Vec::with_capacity(self.outputs.len());
        for o in &self.outputs {
            let n: usize = o.shape.iter().product();
            let values = {
                let view = o.staging.slice(..).get_mapped_range();
                bytemuck::cast_slice::<u8, f32>(&view)[..n].to_vec()
            };
            o.staging.unmap();
            results.push((o.shape.clone(), values));
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use tract_nnef::prelude::*;
    #[allow(unused_imports)]
    use tract_onnx::prelude::{InferenceFact, InferenceModelExt};

    use super::super::kernels::Kernel;

    /// The decluttered graph of a test ONNX file with this input shape.
    fn typed(rel: &str, shape: &[usize]) -> TypedModel {
        let path = format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"));
        let mut model = crate::engine::onnx_parser().model_for_path(path).unwrap();
        model
            .set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape))
            .unwrap();
        model.into_typed().unwrap().into_decluttered().unwrap()
    }

    /// Constant weights above the binding limit go up in column chunks, one `Matmul` dispatch
    /// each, into the same output: the same values as one dispatch (a MatMul with a batch, a
    /// Gemm on one row with a bias).
    #[test]
    fn weights_above_the_binding_limit_are_split_by_columns() {
        let gpu = super::super::device::gpu().expect("a Vulkan adapter (CI: lavapipe)");
        for (rel, shape) in [
            (
                "tests/data/gpu_ops/tiled_matmul.onnx",
                &[2usize, 37, 45][..],
            ),
            (
                "tests/data/gpu_ops/ppocr_backbone_mix.onnx",
                &[1, 4, 8, 8][..],
            ),
        ] {
            let model = typed(rel, shape);
            let n: usize = shape.iter().product();
            let input: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut results = Vec::new();
            let mut matmuls = Vec::new();
            // 1552 bytes: two columns of the Gemm's 192 rows, eight of the MatMul's 45
            for limit in [1u64 << 27, 1552] {
                let program = super::super::lower::lower(&model, 65535, limit).unwrap();
                matmuls.push(
                    program
                        .steps
                        .iter()
                        .filter(|s| s.kernel == Kernel::Matmul)
                        .count(),
                );
                let exec = super::Executable::build(gpu.clone(), program).unwrap();
                results.push(exec.run(&[&input]).unwrap());
            }
            assert!(matmuls[1] > matmuls[0], "{rel}: {matmuls:?}");
            assert_eq!(results[0], results[1], "{rel}");
        }
    }

    /// `profile` times every dispatch of a plan, names it by its node, and leaves the plan
    /// runnable (the digits model, on whatever adapter there is: lavapipe in CI).
    #[test]
    fn profile_times_each_dispatch_by_node() {
        let Ok(gpu) = super::super::device::gpu() else {
            panic!("no Vulkan adapter (CI installs lavapipe through .ci/deps)");
        };
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/digits/model.onnx");
        let mut model = crate::engine::onnx_parser().model_for_path(path).unwrap();
        model
            .set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), [2, 1, 8, 8]))
            .unwrap();
        let typed = model.into_typed().unwrap().into_decluttered().unwrap();
        let program = super::super::lower::lower(&typed, 65535, 1 << 27).unwrap();
        let steps: Vec<String> = program.steps.iter().map(|s| s.node.clone()).collect();
        let exec = super::Executable::build(gpu, program).unwrap();
        let input: Vec<f32> = (0..128).map(|i| (i as f32 * 0.3).sin()).collect();
        let profile = exec.profile(&[&input], 2).unwrap();
        assert_eq!(
            profile.iter().map(|p| p.1.clone()).collect::<Vec<_>>(),
            steps
        );
        assert!(profile.iter().all(|p| p.2.is_finite() && p.2 >= 0.0));
        let out = exec.run(&[&input]).unwrap();
        assert_eq!(out[0].0, [2, 10]);
    }
}
