//! Per-client token buckets for the device-facing HTTP routes (enrollment, artifacts): a
//! misbehaving or compromised device, or a crowd of them behind one address, cannot starve the
//! rest of the fleet. Keyed by peer IP address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most addresses tracked; past this, full buckets are forgotten.
const MAX_TRACKED: usize = 100_000;

/// The limiter.
#[derive(Debug)]
pub struct RateLimiter {
    per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_s` requests per second sustained, `burst` at once. A rate of 0 disables limiting.
    pub fn new(per_s: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            per_s,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `peer`; `Err(wait)` when there is none.
    pub fn check(&self, peer: IpAddr) -> Result<(), Duration> {
        if self.per_s <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED {
            let (per_s, burst) = (self.per_s, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * per_s < burst
            });
        }
        let (tokens, at) = buckets.entry(peer).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_s).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_limits_per_address() {
        let l = RateLimiter::new(1.0, 3.0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!((0..3).all(|_| l.check(a).is_ok()));
        let wait = l.check(a).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert!(l.check(b).is_ok(), "another address has its own bucket");
        assert!(RateLimiter::new(0.0, 1.0).check(a).is_ok(), "0 disables");
    }
}
