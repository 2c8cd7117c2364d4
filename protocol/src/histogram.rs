//! A histogram with explicit cut points: the one shape used for reference statistics in bundle
//! manifests, for the runtime's counters, and for telemetry windows, so they can be compared
//! (PSI) without conversion.

use minicbor::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// Bin `i` holds values in `[edges[i-1], edges[i])`; the first bin everything below `edges[0]`,
/// the last everything from the last edge up.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct Histogram {
    /// Cut points, ascending (one fewer than the bins).
    #[n(0)]
    pub edges: Vec<f64>,
    /// Count per bin.
    #[n(1)]
    pub counts: Vec<u64>,
}

impl Histogram {
    /// An empty histogram over the given cut points.
    pub fn with_edges(edges: Vec<f64>) -> Histogram {
        let bins = edges.len() + 1;
        Histogram {
            edges,
            counts: vec![0; bins],
        }
    }

    /// `bins` equal-width bins over `[lo, hi]`.
    pub fn uniform(lo: f64, hi: f64, bins: usize) -> Histogram {
        let bins = bins.max(1);
        let edges = (1..bins)
            .map(|i| lo + (hi - lo) * i as f64 / bins as f64)
            .collect();
        Histogram::with_edges(edges)
    }

    /// Counts one value (NaN goes to the last bin). A histogram whose counts do not fit its
    /// edges (a malformed message) ignores the value instead of panicking.
    pub fn observe(&mut self, v: f64) {
        let i = if v.is_nan() {
            self.edges.len()
        } else {
            self.edges.partition_point(|&e| e <= v)
        };
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
    }

    /// Total count.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Whether the counts fit the edges (one more bin than cut points, edges ascending).
    pub fn is_well_formed(&self) -> bool {
        self.counts.len() == self.edges.len() + 1 && self.edges.windows(2).all(|w| w[0] < w[1])
    }

    /// The `q` quantile, the edges taken as bucket upper bounds and values interpolated linearly
    /// within the bucket, as Prometheus' `histogram_quantile` does (the overflow bucket reports
    /// its lower bound). `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut below = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            if c > 0 && (below + c) as f64 >= rank {
                let lower = if i == 0 { 0.0 } else { self.edges[i - 1] };
                let Some(&upper) = self.edges.get(i) else {
                    return Some(lower);
                };
                return Some(
                    lower + (upper - lower) * ((rank - below as f64) / c as f64).clamp(0.0, 1.0),
                );
            }
            below += c;
        }
        self.edges.last().copied()
    }

    /// The mean of values known to lie in `[lo, hi]`, each bin counted at its midpoint (the
    /// first bin starting at `lo`, the last ending at `hi`). `None` when empty or malformed.
    /// Suits bounded values such as confidences (`mean_within(0.0, 1.0)`).
    pub fn mean_within(&self, lo: f64, hi: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 || self.counts.len() != self.edges.len() + 1 {
            return None;
        }
        let sum: f64 = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let lower = if i == 0 { lo } else { self.edges[i - 1] };
                let upper = self.edges.get(i).copied().unwrap_or(hi);
                (lower + upper) / 2.0 * c as f64
            })
            .sum();
        Some(sum / total as f64)
    }

    /// Adds another histogram's counts; `false` (and no change) when the edges differ.
    pub fn merge(&mut self, other: &Histogram) -> bool {
        if self.edges != other.edges || self.counts.len() != other.counts.len() {
            return false;
        }
        self.counts
            .iter_mut()
            .zip(&other.counts)
            .for_each(|(a, b)| *a += b);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_within_the_bucket() {
        let h = Histogram {
            edges: vec![1.0, 2.0, 4.0],
            counts: vec![0, 50, 50, 0],
        };
        assert_eq!(h.quantile(0.5), Some(2.0));
        assert_eq!(h.quantile(0.75), Some(3.0));
        assert_eq!(h.quantile(0.99), Some(3.96));
        let overflow = Histogram {
            edges: vec![1.0],
            counts: vec![0, 10],
        };
        assert_eq!(overflow.quantile(0.99), Some(1.0));
        assert_eq!(Histogram::with_edges(vec![1.0]).quantile(0.5), None);
        let conf = Histogram {
            edges: vec![0.5],
            counts: vec![1, 3],
        };
        assert_eq!(conf.mean_within(0.0, 1.0), Some((0.25 + 3.0 * 0.75) / 4.0));
    }
}
