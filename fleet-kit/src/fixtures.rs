//! The digits sample model (`models/digits`, embedded so that an installed `edgectl demo` needs
//! no checkout) packed into signed bundles, and its test rows.

use anyhow::Result;
use edge_pack::pack::{pack, Calibration, PackSpec};
use edge_runtime::bundle::{HealthSpec, Task};
use edge_runtime::{SigningKey, Tensor};

/// The digits model (ONNX).
pub const DIGITS_ONNX: &[u8] = include_bytes!("../../models/digits/model.onnx");
/// Its pack spec.
pub const DIGITS_SPEC: &str = include_str!("../../models/digits/spec.toml");
const CALIB_X: &[u8] = include_bytes!("../../models/digits/calib_x.npy");
const TEST_X: &[u8] = include_bytes!("../../models/digits/test_x.npy");
const TEST_Y: &[u8] = include_bytes!("../../models/digits/test_y.npy");

fn npy(bytes: &[u8]) -> Tensor {
    edge_runtime::npy::read(bytes, 1 << 28).expect("the embedded digits data")
}

/// The calibration rows (`[n, 1, 8, 8]` f32).
pub fn calibration_rows() -> Tensor {
    npy(CALIB_X)
}

/// The test rows (`[360, 1, 8, 8]` f32).
pub fn test_rows() -> Tensor {
    npy(TEST_X)
}

/// The test labels (`[360]` i64).
pub fn test_labels() -> Tensor {
    npy(TEST_Y)
}

/// A trial window short enough for tests and the demo: `trial_seconds`, `min_requests`, a 5%
/// error budget, no latency budget, and drift left to the server (`max_psi` out of reach).
pub fn quick_trial(trial_seconds: u32, min_requests: u64) -> HealthSpec {
    HealthSpec {
        trial_seconds,
        min_requests,
        max_error_rate: 0.05,
        max_p99_ms: None,
        max_psi: 1e9,
    }
}

/// Names the classes of a classification spec anew: class `c` is labelled `label_of(c)` (a
/// model that answers as before under other names: a label mix-up, a candidate that flips
/// labels).
pub fn relabel(spec: &mut PackSpec, label_of: impl Fn(usize) -> usize) {
    if let Task::Classification { labels, .. } = &mut spec.output.task {
        *labels = (0..labels.len()).map(|c| label_of(c).to_string()).collect();
    }
}

/// A digits bundle to pack: the sample spec and calibration rows, changed as asked.
pub struct Digits {
    spec: PackSpec,
    calibration: Tensor,
    created: u64,
}

impl Default for Digits {
    fn default() -> Self {
        Digits::new()
    }
}

impl Digits {
    /// The sample model as `models/digits/spec.toml` describes it.
    pub fn new() -> Digits {
        Digits {
            spec: toml::from_str(DIGITS_SPEC).expect("the embedded digits spec"),
            calibration: calibration_rows(),
            created: 0,
        }
    }

    /// At `version`.
    pub fn version(mut self, version: &str) -> Digits {
        self.spec.version = version.into();
        self
    }

    /// With this trial health spec ([`quick_trial`] for a short one).
    pub fn health(mut self, health: HealthSpec) -> Digits {
        self.spec.health = Some(health);
        self
    }

    /// With `rows` as its reference data (the drift the server measures is against them).
    pub fn calibration(mut self, rows: Tensor) -> Digits {
        self.calibration = rows;
        self
    }

    /// Stamped as created at `unix_seconds` (0 by default).
    pub fn created(mut self, unix_seconds: u64) -> Digits {
        self.created = unix_seconds;
        self
    }

    /// With any other change to the spec.
    pub fn edit(mut self, edit: impl FnOnce(&mut PackSpec)) -> Digits {
        edit(&mut self.spec);
        self
    }

    /// Packs and signs it.
    pub fn pack(self, signer: &SigningKey) -> Result<Vec<u8>> {
        let calibration = Calibration {
            inputs: self.calibration,
            targets: None,
        };
        let signers = std::slice::from_ref(signer);
        Ok(pack(
            DIGITS_ONNX,
            self.spec,
            Some(&calibration),
            signers,
            self.created,
        )?
        .0)
    }
}

/// A sample model of the checkout (`models/NAME`: `model.onnx`, `spec.toml`, `calib_x.npy`)
/// packed and signed: the other samples are not embedded, so this reads them from the workspace.
pub fn pack_sample(name: &str, signer: &SigningKey) -> Result<Vec<u8>> {
    let dir = crate::binaries::workspace().join("models").join(name);
    let onnx = std::fs::read(dir.join("model.onnx"))?;
    let spec: PackSpec = toml::from_str(&std::fs::read_to_string(dir.join("spec.toml"))?)?;
    let calibration = Calibration {
        inputs: edge_runtime::npy::read(std::fs::File::open(dir.join("calib_x.npy"))?, 1 << 30)?,
        targets: None,
    };
    Ok(pack(
        &onnx,
        spec,
        Some(&calibration),
        std::slice::from_ref(signer),
        0,
    )?
    .0)
}
