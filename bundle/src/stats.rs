//! Reference statistics of a bundle: how input elements map to drift features, equal-frequency
//! histograms built from calibration data, and the population stability index (PSI) that
//! compares live counts with them. The device's counters and the server's gate both use these,
//! so drift is measured the same way everywhere.

pub use edge_protocol::Histogram;

use crate::manifest::Layout;

/// Rows with at most this many elements get one drift feature per element; larger rows (images)
/// get one per channel.
pub const MAX_ELEMENT_FEATURES: usize = 256;

/// How the flat elements of an input map to drift features (reference histograms at pack time,
/// live histograms on the device): one per element for small rows (tabular data, tiny images),
/// else one per channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureMap {
    /// Feature = position in the row.
    PerElement {
        /// Elements per row.
        row_len: usize,
    },
    /// Feature = channel.
    PerChannel {
        /// Channels.
        channels: usize,
        /// Elements after the channel axis.
        inner: usize,
    },
}

impl FeatureMap {
    /// The map for an input of this layout and shape (batch first); `None` when a large row has
    /// no channel axis to group by.
    pub fn new(layout: Layout, shape: &[usize]) -> Option<FeatureMap> {
        let row_len: usize = shape.iter().skip(1).product();
        if row_len <= MAX_ELEMENT_FEATURES {
            return Some(FeatureMap::PerElement { row_len });
        }
        let axis = layout.channel_axis(shape.len())?;
        Some(FeatureMap::PerChannel {
            channels: shape[axis],
            inner: shape[axis + 1..].iter().product(),
        })
    }

    /// Number of features.
    pub fn count(&self) -> usize {
        match *self {
            FeatureMap::PerElement { row_len } => row_len,
            FeatureMap::PerChannel { channels, .. } => channels,
        }
    }

    /// The feature of flat element `i`.
    pub fn feature_of(&self, i: usize) -> usize {
        match *self {
            FeatureMap::PerElement { row_len } => i % row_len.max(1),
            FeatureMap::PerChannel { channels, inner } => (i / inner.max(1)) % channels.max(1),
        }
    }

    /// A human name for feature `f`.
    pub fn name(&self, f: usize, names: &[String]) -> String {
        match self {
            FeatureMap::PerElement { .. } => names
                .get(f)
                .cloned()
                .unwrap_or_else(|| format!("element {f}")),
            FeatureMap::PerChannel { .. } => format!("channel {f}"),
        }
    }

    /// The values of each feature.
    pub fn split(&self, values: &[f64]) -> Vec<Vec<f64>> {
        let mut out = vec![Vec::new(); self.count()];
        for (i, &v) in values.iter().enumerate() {
            out[self.feature_of(i)].push(v);
        }
        out
    }
}

/// Equal-frequency bins from `values` (cut points at the quantiles, duplicates merged), then
/// filled with them: the usual reference for PSI.
pub fn quantile_histogram(values: &[f64], bins: usize) -> Histogram {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let mut edges: Vec<f64> = Vec::new();
    if !sorted.is_empty() {
        for i in 1..bins.max(1) {
            let e = sorted[(i * sorted.len() / bins).min(sorted.len() - 1)];
            if edges.last().is_none_or(|&last| e > last) {
                edges.push(e);
            }
        }
        // a cut at the minimum would leave the first bin empty by construction
        if edges.first() == sorted.first() {
            edges.remove(0);
        }
    }
    let mut h = Histogram::with_edges(edges);
    values.iter().for_each(|&v| h.observe(v));
    h
}

/// Population stability index of `observed` against `reference` counts over the same bins:
/// `sum((o - r) * ln(o / r))` over bin proportions, each floored at 1e-4 so empty bins stay
/// finite. Rule of thumb: < 0.1 stable, 0.1–0.25 moderate shift, > 0.25 major shift.
/// `None` if the bins differ or either side is empty.
pub fn psi(reference: &[u64], observed: &[u64]) -> Option<f64> {
    if reference.len() != observed.len() || reference.is_empty() {
        return None;
    }
    let (rt, ot) = (
        reference.iter().sum::<u64>() as f64,
        observed.iter().sum::<u64>() as f64,
    );
    if rt == 0.0 || ot == 0.0 {
        return None;
    }
    const FLOOR: f64 = 1e-4;
    Some(
        reference
            .iter()
            .zip(observed)
            .map(|(&r, &o)| {
                let (r, o) = ((r as f64 / rt).max(FLOOR), (o as f64 / ot).max(FLOOR));
                (o - r) * (o / r).ln()
            })
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_bins_are_roughly_equal_frequency() {
        let values: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let h = quantile_histogram(&values, 10);
        assert_eq!(h.counts.len(), 10);
        assert!(h.counts.iter().all(|&c| c == 100), "{:?}", h.counts);
        // constant data collapses to one bin instead of failing
        let h = quantile_histogram(&[3.0; 50], 10);
        assert_eq!(h.total(), 50);
    }

    #[test]
    fn psi_is_zero_for_same_distribution_and_large_for_a_shift() {
        let r = [100, 100, 100, 100];
        assert!(psi(&r, &[50, 50, 50, 50]).unwrap().abs() < 1e-12);
        let shifted = psi(&r, &[0, 0, 10, 190]).unwrap();
        assert!(shifted > 1.0, "{shifted}");
        let mild = psi(&r, &[90, 100, 110, 100]).unwrap();
        assert!(mild < 0.01, "{mild}");
        assert_eq!(psi(&r, &[1, 2]), None);
        assert_eq!(psi(&r, &[0, 0, 0, 0]), None);
    }

    #[test]
    fn histogram_edges_are_half_open() {
        let mut h = Histogram::with_edges(vec![1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 2.0, 9.0, f64::NAN] {
            h.observe(v);
        }
        assert_eq!(h.counts, vec![1, 2, 3]);
    }
}
