//! The `cuda` engine. In CI (no GPU, no driver) the feature still builds and a model asked to run
//! on CUDA loads on the CPU with the driver's reason; on a machine with an NVIDIA driver, CUDA
//! libraries and cuDNN (`bench/gpu.sh` on a lent GPU machine, a Jetson) the same test checks that
//! the model runs on CUDA with the CPU engine's outputs within 1e-3, from pinned input buffers.
#![cfg(feature = "cuda")]

mod common;

use common::*;
use edge_runtime::engine::EngineKind;
use edge_runtime::{Tensor, TensorData};

fn floats(t: &Tensor) -> &[f32] {
    match &t.data {
        TensorData::F32(v) => v,
        other => panic!("{other:?}"),
    }
}

#[test]
fn cuda_runs_the_model_or_says_why_not() {
    for (model, input) in [
        ("digits", "digits/test_x.npy"),
        ("mobilenetv2", "mobilenetv2/ref_input.npy"),
    ] {
        let cpu = load_on(model, EngineKind::Cpu);
        let cuda = load_on(model, EngineKind::Cuda);
        let choice = cuda.engine_choice().clone();
        eprintln!("{model}: {}", choice.summary());
        let x = read_npy(input);
        let x = Tensor {
            shape: [1]
                .into_iter()
                .chain(x.shape[1..].iter().copied())
                .collect(),
            data: TensorData::F32(floats(&x)[..x.shape[1..].iter().product()].to_vec()),
        };
        let want = cpu.run(vec![x.clone()]).unwrap();
        if choice.used == "cuda" {
            let mut buffer = cuda.input_buffer(0, &x.shape).unwrap();
            assert!(buffer.is_pinned(), "{:?}", buffer.pin_note());
            buffer.fill(floats(&x)).unwrap();
            let got = cuda.run_buffers(std::slice::from_mut(&mut buffer)).unwrap();
            let worst = floats(&got[0])
                .iter()
                .zip(floats(&want[0]))
                .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
                .fold(0f32, f32::max);
            eprintln!("{model}: max relative difference vs cpu {worst:e}");
            assert!(worst <= 1e-3, "{model}: {worst}");
        } else {
            // no driver here: the CPU runs it, and the reason names CUDA's missing piece
            assert_eq!(choice.used, "cpu");
            let reason = choice.reason.unwrap_or_default();
            assert!(reason.starts_with("cuda: "), "{reason}");
            assert!(
                reason.contains("CUDA") || reason.contains("cuda"),
                "{reason}"
            );
            let got = cuda.run(vec![x]).unwrap();
            assert_eq!(floats(&got[0]), floats(&want[0]));
        }
    }
}

#[test]
fn auto_tries_cuda_first_and_reports_it() {
    let m = load_on("digits", EngineKind::Auto);
    let choice = m.engine_choice();
    if choice.used != "cuda" {
        let reason = choice.reason.as_deref().unwrap_or_default();
        assert!(reason.starts_with("cuda: "), "{reason}");
    }
}
