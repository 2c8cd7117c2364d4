//! Sensor sources: a thread per `[[sensor]]` that samples an I²C IMU at a fixed rate, cuts the
//! samples into windows and feeds each window to a model (streaming inference), keeping the latest
//! answer and its counters for the local API (`GET /v1/sensors`) and `/metrics`. The predictions
//! go through the model host like any app request, so they are counted in the model's telemetry
//! windows (requests, confidence, classes, input drift) and watched by the trial like app traffic.
//!
//! A sensor that does not answer, NACKs, or returns garbage never takes the agent down: the error
//! is counted and shown, the partial window is dropped (a gap would make it a different signal),
//! and after repeated errors the source reopens the bus and re-initializes the chip, backing off
//! up to 10 s between attempts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_runtime::{PredictOptions, Tensor};
use edge_sensors::mpu6050::{GyroRange, Mpu6050, Settings};
use edge_sensors::sim::SimSpec;
use embedded_hal::i2c::I2c;
use serde::Serialize;
use serde_json::Value;

use crate::config::SensorConfig;
use crate::core::{unix_now, Core};

/// The latest answer of a sensor's model.
#[derive(Clone, Debug, Serialize)]
pub struct Latest {
    /// Unix seconds when the window closed.
    pub at: u64,
    /// The window's index since the agent started.
    pub window: u64,
    /// The model's answer for the window (one prediction).
    pub answer: Value,
}

/// What a source has done, for the API and metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SensorStatus {
    /// `starting`, `running`, `retrying` (the chip is not answering), `waiting for model`.
    pub state: String,
    /// Samples read.
    pub samples: u64,
    /// Windows completed.
    pub windows: u64,
    /// Windows the model answered.
    pub predictions: u64,
    /// Windows the model refused or could not take (no such model, wrong input shape).
    pub prediction_errors: u64,
    /// Failed reads (NACK, bus error, garbage).
    pub read_errors: u64,
    /// Failed chip initializations.
    pub init_errors: u64,
    /// Times the bus was reopened and the chip re-initialized.
    pub reinits: u64,
    /// The last error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The latest answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest: Option<Latest>,
}

/// One configured source and its status.
pub struct SensorSource {
    /// Its configuration.
    pub config: SensorConfig,
    status: Mutex<SensorStatus>,
}

impl SensorSource {
    /// A source that has not started.
    pub fn new(config: SensorConfig) -> SensorSource {
        SensorSource {
            config,
            status: Mutex::new(SensorStatus {
                state: "starting".into(),
                ..SensorStatus::default()
            }),
        }
    }

    /// A copy of the status.
    pub fn status(&self) -> SensorStatus {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SensorStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn error(&self, message: String, what: fn(&mut SensorStatus)) {
        let mut s = self.lock();
        what(&mut s);
        s.last_error = Some(message);
    }

    /// The status as JSON, with the configuration.
    pub fn to_json(&self) -> Value {
        let c = &self.config;
        let mut v = serde_json::to_value(self.status()).unwrap_or_default();
        v["name"] = c.name.clone().into();
        v["driver"] = c.driver.clone().into();
        v["bus"] = c.bus.clone().into();
        v["address"] = format!("0x{:02x}", c.address).into();
        v["rate_hz"] = c.rate_hz.into();
        v["window"] = c.window.into();
        v["model"] = c.model.clone().into();
        v
    }
}

/// The sources for the `[[sensor]]` sections (checked when the config was loaded: each
/// valid, names unique).
pub fn sources(configs: &[SensorConfig]) -> Vec<Arc<SensorSource>> {
    configs
        .iter()
        .map(|c| Arc::new(SensorSource::new(c.clone())))
        .collect()
}

/// Errors in a row after which the bus is reopened and the chip re-initialized.
const REINIT_AFTER: u32 = 5;
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Starts a thread per sensor source; they stop when `stop` is set.
pub fn spawn_all(
    core: &Arc<Core>,
    sources: &[Arc<SensorSource>],
    stop: &Arc<AtomicBool>,
) -> std::io::Result<()> {
    for source in sources {
        let (core, source, stop) = (core.clone(), source.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("sensor-{}", source.config.name))
            .spawn(move || run(&core, &source, &stop))?;
    }
    Ok(())
}

/// Runs one source until `stop`: open, init, sample, predict; on errors back off and retry.
pub fn run(core: &Core, source: &SensorSource, stop: &AtomicBool) {
    let c = &source.config;
    let mut backoff = Duration::from_millis(200);
    while !stop.load(Ordering::Relaxed) {
        let result = if let Some(spec) = c.bus.strip_prefix("sim:") {
            match SimSpec::parse(spec) {
                Ok(spec) => sample_loop(core, source, stop, spec.build(c.address)),
                Err(e) => Err(e),
            }
        } else {
            open_linux(&c.bus).and_then(|bus| sample_loop(core, source, stop, bus))
        };
        match result {
            Ok(()) => return, // stopped
            Err(e) => {
                tracing::warn!(sensor = %c.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "sensor source error");
                {
                    let mut s = source.lock();
                    s.state = "retrying".into();
                    s.last_error = Some(e);
                }
                sleep_unless_stopped(backoff, stop);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                source.lock().reinits += 1;
            }
        }
    }
}

#[cfg(feature = "i2c")]
fn open_linux(path: &str) -> Result<linux_embedded_hal::I2cdev, String> {
    linux_embedded_hal::I2cdev::new(path).map_err(|e| format!("cannot open I2C bus {path}: {e}"))
}

#[cfg(not(feature = "i2c"))]
fn open_linux(path: &str) -> Result<edge_sensors::sim::SimulatedMpu6050, String> {
    Err(format!(
        "cannot open I2C bus {path}: edge-agent was built without the `i2c` feature"
    ))
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let end = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Initializes the chip on `bus` and samples until `stop` (`Ok`) or until the chip fails
/// [`REINIT_AFTER`] times in a row (`Err`: the caller reopens the bus).
fn sample_loop<B: I2c>(
    core: &Core,
    source: &SensorSource,
    stop: &AtomicBool,
    bus: B,
) -> Result<(), String>
where
    B::Error: embedded_hal::i2c::Error,
{
    let c = &source.config;
    let settings = Settings {
        accel: c.accel_range()?,
        gyro: GyroRange::Dps500,
        rate_hz: c.rate_hz,
    };
    let mut imu = Mpu6050::new(bus, c.address);
    if let Err(e) = imu.init(&settings) {
        source.error(format!("init: {e}"), |s| s.init_errors += 1);
        return Err(format!("init: {e}"));
    }
    tracing::info!(sensor = %c.name, bus = %c.bus, address = c.address, rate_hz = c.rate_hz, "sensor initialized");
    source.lock().state = "running".into();
    let period = Duration::from_secs_f64(1.0 / c.rate_hz as f64);
    let mut window: Vec<[f32; 3]> = Vec::with_capacity(c.window);
    let mut failures = 0u32;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > period * c.window as u32 {
            next = now; // fell a window behind (suspend, overload): resynchronize, do not burst
        }
        match imu.read() {
            Ok(reading) => {
                failures = 0;
                window.push(reading.accel_g);
                source.lock().samples += 1;
                if window.len() == c.window {
                    predict_window(core, source, &window);
                    window.clear();
                }
            }
            Err(e) => {
                failures += 1;
                window.clear();
                source.error(format!("read: {e}"), |s| s.read_errors += 1);
                if failures >= REINIT_AFTER {
                    return Err(format!("{failures} reads failed in a row; last: {e}"));
                }
            }
        }
    }
    Ok(())
}

/// Feeds one window (`[1, 3, n]`, channel-major) to the model; records the answer.
fn predict_window(core: &Core, source: &SensorSource, samples: &[[f32; 3]]) {
    let c = &source.config;
    let n = samples.len();
    let mut data = vec![0.0f32; 3 * n];
    for (i, s) in samples.iter().enumerate() {
        for axis in 0..3 {
            data[axis * n + i] = s[axis];
        }
    }
    let input = Tensor::f32(vec![1, 3, n], data);
    let result = core
        .host
        .predict(&c.model, vec![input], &PredictOptions::default());
    let mut s = source.lock();
    s.windows += 1;
    match result {
        Ok(response) => {
            s.predictions += 1;
            s.state = "running".into();
            let mut answer = serde_json::to_value(&response.results[0]).unwrap_or_default();
            answer["model"] = response.model.model.into();
            answer["version"] = response.model.version.into();
            answer["latency_ms"] = response.latency_ms.into();
            s.latest = Some(Latest {
                at: unix_now(),
                window: s.windows,
                answer,
            });
        }
        Err(crate::host::HostError::UnknownModel(m)) => {
            s.prediction_errors += 1;
            s.state = "waiting for model".into();
            s.last_error = Some(format!("no model named '{m}' is loaded yet"));
        }
        Err(e) => {
            s.prediction_errors += 1;
            s.last_error = Some(format!("predict: {e}"));
        }
    }
}
