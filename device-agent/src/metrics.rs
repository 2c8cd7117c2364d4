//! `GET /metrics`: Prometheus text format. Per served model and version: requests, errors, rows
//! and the latency histogram (from the runtime's counters); per model: whether it is on trial;
//! the outbox depth, bytes and drops; the MQTT link; requests the API refused before they
//! reached a model; per sensor source: samples, windows, predictions and errors.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::core::Core;
use crate::sensor::{SensorSource, SensorStatus};
use crate::uplink::LinkState;

/// Requests refused by the API itself, before they reached a model.
#[derive(Default)]
pub struct Refused {
    /// Unknown model.
    pub not_found: AtomicU64,
    /// Malformed body or input.
    pub bad_request: AtomicU64,
    /// Body too large.
    pub too_large: AtomicU64,
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Per-sensor counters.
fn render_sensors(sources: &[Arc<SensorSource>], o: &mut String) {
    let sensors: Vec<_> = sources
        .iter()
        .map(|s| (s.config.name.clone(), s.status()))
        .collect();
    if sensors.is_empty() {
        return;
    }
    type Pick = fn(&SensorStatus) -> u64;
    let counters: [(&str, &str, Pick); 6] = [
        ("edgefleet_sensor_samples_total", "Samples read.", |s| {
            s.samples
        }),
        (
            "edgefleet_sensor_windows_total",
            "Windows completed.",
            |s| s.windows,
        ),
        (
            "edgefleet_sensor_predictions_total",
            "Windows the model answered.",
            |s| s.predictions,
        ),
        (
            "edgefleet_sensor_prediction_errors_total",
            "Windows the model could not take.",
            |s| s.prediction_errors,
        ),
        (
            "edgefleet_sensor_read_errors_total",
            "Failed reads (NACK, bus error, garbage).",
            |s| s.read_errors,
        ),
        (
            "edgefleet_sensor_init_errors_total",
            "Failed chip initializations.",
            |s| s.init_errors,
        ),
    ];
    for (name, help, pick) in counters {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} counter");
        for (sensor, status) in &sensors {
            let _ = writeln!(o, "{name}{{sensor=\"{}\"}} {}", esc(sensor), pick(status));
        }
    }
}

/// Renders all metrics.
pub fn render(
    core: &Core,
    link: &LinkState,
    refused: &Refused,
    sensors: &[Arc<SensorSource>],
) -> String {
    let mut o = String::new();
    render_sensors(sensors, &mut o);
    let trials: Vec<String> = core
        .slots
        .models()
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, s)| s.trial.is_some())
        .map(|(n, _)| n)
        .collect();
    let models: Vec<_> = core
        .host
        .list()
        .into_iter()
        .filter_map(|(n, _)| core.host.get(&n))
        .collect();
    let _ = writeln!(
        o,
        "# HELP edgefleet_model_info Served model version (1 per model)."
    );
    let _ = writeln!(o, "# TYPE edgefleet_model_info gauge");
    for m in &models {
        let r = m.model_ref();
        let _ = writeln!(
            o,
            "edgefleet_model_info{{model=\"{}\",version=\"{}\",bundle=\"{}\",engine=\"{}\",trial=\"{}\"}} 1",
            esc(&r.model),
            esc(&r.version),
            esc(&r.bundle),
            m.engine_name(),
            trials.contains(&r.model)
        );
    }
    let counters = [
        ("edgefleet_predict_requests_total", "Predict calls.", 0),
        (
            "edgefleet_predict_errors_total",
            "Predict calls that failed.",
            1,
        ),
        ("edgefleet_predict_rows_total", "Rows predicted.", 2),
    ];
    let stats: Vec<_> = models.iter().map(|m| (m.model_ref(), m.stats())).collect();
    for (name, help, which) in counters {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} counter");
        for (r, s) in &stats {
            let v = [s.requests, s.errors, s.rows][which];
            let _ = writeln!(
                o,
                "{name}{{model=\"{}\",version=\"{}\"}} {v}",
                esc(&r.model),
                esc(&r.version)
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP edgefleet_predict_latency_ms Predict latency, milliseconds."
    );
    let _ = writeln!(o, "# TYPE edgefleet_predict_latency_ms histogram");
    for (r, s) in &stats {
        let labels = format!(
            "model=\"{}\",version=\"{}\"",
            esc(&r.model),
            esc(&r.version)
        );
        let mut cumulative = 0u64;
        for (i, c) in s.latency_ms.counts.iter().enumerate() {
            cumulative += c;
            let le = s
                .latency_ms
                .edges
                .get(i)
                .map_or("+Inf".to_string(), |e| e.to_string());
            let _ = writeln!(
                o,
                "edgefleet_predict_latency_ms_bucket{{{labels},le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            o,
            "edgefleet_predict_latency_ms_count{{{labels}}} {cumulative}"
        );
    }
    if let Ok(ob) = core.outbox.stats() {
        let _ = writeln!(
            o,
            "# HELP edgefleet_outbox_queued Messages waiting for the broker."
        );
        let _ = writeln!(o, "# TYPE edgefleet_outbox_queued gauge");
        let _ = writeln!(o, "edgefleet_outbox_queued {}", ob.queued);
        let _ = writeln!(
            o,
            "# HELP edgefleet_outbox_bytes Bytes waiting for the broker."
        );
        let _ = writeln!(o, "# TYPE edgefleet_outbox_bytes gauge");
        let _ = writeln!(o, "edgefleet_outbox_bytes {}", ob.bytes);
        let _ = writeln!(
            o,
            "# HELP edgefleet_outbox_dropped_total Messages dropped because the outbox was full."
        );
        let _ = writeln!(o, "# TYPE edgefleet_outbox_dropped_total counter");
        let _ = writeln!(
            o,
            "edgefleet_outbox_dropped_total{{class=\"telemetry\"}} {}",
            ob.dropped_telemetry
        );
        let _ = writeln!(
            o,
            "edgefleet_outbox_dropped_total{{class=\"event\"}} {}",
            ob.dropped_events
        );
    }
    let _ = writeln!(
        o,
        "# HELP edgefleet_mqtt_connected 1 while connected to the broker."
    );
    let _ = writeln!(o, "# TYPE edgefleet_mqtt_connected gauge");
    let _ = writeln!(
        o,
        "edgefleet_mqtt_connected {}",
        link.connected.load(Ordering::Relaxed) as u8
    );
    let _ = writeln!(
        o,
        "# HELP edgefleet_api_refused_total Requests refused before reaching a model."
    );
    let _ = writeln!(o, "# TYPE edgefleet_api_refused_total counter");
    for (reason, c) in [
        ("not_found", &refused.not_found),
        ("bad_request", &refused.bad_request),
        ("too_large", &refused.too_large),
    ] {
        let _ = writeln!(
            o,
            "edgefleet_api_refused_total{{reason=\"{reason}\"}} {}",
            c.load(Ordering::Relaxed)
        );
    }
    o
}
