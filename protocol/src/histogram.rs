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
