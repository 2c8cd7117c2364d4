//! Digits predictions sent to agents' local APIs from a background thread, until stopped or
//! dropped: the traffic a trial window and a phase's health need. With feedback on, each answer
//! to a test row is followed by its true label (`POST /v1/models/digits/feedback`), as an app
//! that later learns the truth would send it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// What each request sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Images {
    /// The digits test rows, each device walking them from its own offset (`7 · index`), so
    /// every device sees every class: the traffic the model's reference data describes.
    TestRows,
    /// One fixed image (row `r` all `r`): far from the reference data, so input drift (PSI) is
    /// large.
    Constant,
}

/// Answers: `(status, body)` of every request, when recorded.
pub type Answers = Vec<(u16, Value)>;

/// Traffic to set up: where, how often, what.
pub struct TrafficPlan {
    apis: Vec<String>,
    pause: Duration,
    images: Images,
    record: bool,
    feedback: bool,
}

impl TrafficPlan {
    /// Sending the true label of every answered test row as feedback.
    pub fn feedback(mut self) -> TrafficPlan {
        self.feedback = true;
        self
    }

    /// Every `pause` (after each round over the agents).
    pub fn every(mut self, pause: Duration) -> TrafficPlan {
        self.pause = pause;
        self
    }

    /// Sending `images`.
    pub fn images(mut self, images: Images) -> TrafficPlan {
        self.images = images;
        self
    }

    /// Keeping every answer ([`Traffic::stop`] returns them).
    pub fn recording(mut self) -> TrafficPlan {
        self.record = true;
        self
    }

    /// Starts sending.
    pub fn start(self) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let answers: Arc<Mutex<Answers>> = Arc::default();
        let (s, n, a) = (stop.clone(), ok.clone(), answers.clone());
        let thread = std::thread::spawn(move || self.run(&s, &n, &a));
        Traffic {
            stop,
            ok,
            answers,
            thread: Some(thread),
        }
    }

    fn run(self, stop: &AtomicBool, ok: &AtomicU64, answers: &Mutex<Answers>) {
        let client = crate::http::client(None);
        let xs = crate::fixtures::test_rows().to_f64_vec();
        let labels = crate::fixtures::test_labels().to_f64_vec();
        let rows = xs.len() / 64;
        let constant: Vec<f64> = (0..64).map(|i| (i / 8) as f64).collect();
        let mut round = 0usize;
        while !stop.load(Ordering::Relaxed) {
            for (k, api) in self.apis.iter().enumerate() {
                let r = (round + k * 7) % rows;
                let image = match self.images {
                    Images::TestRows => &xs[r * 64..(r + 1) * 64],
                    Images::Constant => &constant[..],
                };
                let rows: Vec<&[f64]> = image.chunks(8).collect();
                let body = json!({ "input": [[rows]] }).to_string().into_bytes();
                let url = format!("http://{api}/v1/models/digits/predict");
                let (code, text) =
                    crate::http::call(&client, "POST", &url, &[], Some(("application/json", body)));
                if code == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
                if self.feedback && code == 200 && self.images == Images::TestRows {
                    if let Some(id) = v["prediction_id"].as_str() {
                        let truth = json!({"prediction_id": id, "label": labels[r] as u64});
                        let url = format!("http://{api}/v1/models/digits/feedback");
                        let body = Some(("application/json", truth.to_string().into_bytes()));
                        crate::http::call(&client, "POST", &url, &[], body);
                    }
                }
                if self.record && code != 0 {
                    answers.lock().unwrap().push((code, v));
                }
            }
            round += 1;
            std::thread::sleep(self.pause);
        }
    }
}

/// Predictions being sent.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    answers: Arc<Mutex<Answers>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    /// Traffic to `apis` (`127.0.0.1:PORT` each): by default the test rows, a round every
    /// 20 ms, nothing recorded.
    pub fn to(apis: Vec<String>) -> TrafficPlan {
        TrafficPlan {
            apis,
            pause: Duration::from_millis(20),
            images: Images::TestRows,
            record: false,
            feedback: false,
        }
    }

    /// Predictions answered 200 so far.
    pub fn sent(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops (after the request in flight); the predictions answered 200, all told, and the
    /// answers when recorded.
    pub fn stop(mut self) -> (u64, Answers) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let answers = std::mem::take(&mut *self.answers.lock().unwrap());
        (self.sent(), answers)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
